"""Eigenvalues of W^T W for weight matrices: symmetric rank-k update plus a symmetric
eigensolver in float64, batched over the slices of a layer; an SVD only where it is needed.

WeightWatcher takes the singular values of each matrix by a full SVD (``scipy.linalg.svd``,
LAPACK gesdd) and squares them. The eigenvalues of the Gram matrix of the smaller side are the
same numbers, and cost about a third as much (dsyrk is BLAS-3, the tridiagonal reduction works on
an M x M matrix). Their absolute error is about eps * lambda_max (gesdd's singular values have
absolute error eps * sigma_max), so small eigenvalues agree with WeightWatcher's to a relative
1e-16 * lambda_max / lambda. The metrics WeightWatcher derives are sums dominated by large
eigenvalues, fits above xmin, and counts against thresholds; the counts are the only ones small
errors can change. So a layer is recomputed by gesdd, exactly as WeightWatcher does, when
  - its smallest eigenvalue is below ``1e-12 * lambda_max`` (possibly rank deficient: the matrix
    rank counts sigma > sigma_max * N * eps, far below what the Gram matrix resolves), or
  - an eigenvalue lies within the error band of an absolute threshold WeightWatcher counts
    against (1e-5, the power-law cut; 1e-6, the weak-rank tolerance).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
from scipy.linalg.blas import dsyrk

__all__ = ["singular_values_squared"]

_REL_FLOOR = 1e-12
_ABS_THRESHOLDS = (1e-5, 1e-6)
_BAND = 1e3 * np.finfo(np.float64).eps


def _needs_svd(e):
    if not len(e):
        return False
    top = e[-1]
    if not top > 0 or e[0] < _REL_FLOOR * top:
        return True
    band = _BAND * top
    return any(np.any(np.abs(e - t) <= band) for t in _ABS_THRESHOLDS)


def _gram_evals(W):
    """Eigenvalues (ascending) of the Gram matrix of the smaller side of one 2-D float64 matrix.

    dsyrk reads a C-ordered matrix through its Fortran-ordered transpose, so no copy is made."""
    A = np.ascontiguousarray(W)
    if A.shape[0] >= A.shape[1]:
        G = dsyrk(1.0, A.T, trans=0)   # (A^T)(A^T)^T = A^T A, M x M
    else:
        G = dsyrk(1.0, A.T, trans=1)   # (A^T)^T (A^T) = A A^T, M x M
    return sla.eigh(G, eigvals_only=True, lower=False, overwrite_a=True, check_finite=False, driver="evr")


def singular_values_squared(Wmats, method="auto"):
    """Squared singular values of each matrix in ``Wmats`` (list of 2-D arrays), each sorted
    ascending, and the method used (``"gram"`` or ``"svd"``).

    ``method``: ``"auto"`` (Gram eigenvalues, gesdd fallback for nearly singular matrices),
    ``"gram"`` or ``"svd"`` (WeightWatcher's own path).
    """
    mats = [np.asarray(W, dtype=np.float64) for W in Wmats]
    if method == "svd":
        return [np.sort(sla.svd(W, compute_uv=False)) ** 2 for W in mats], "svd"
    shapes = {W.shape for W in mats}
    if len(mats) > 1 and len(shapes) == 1:  # conv2d slices: one batched call
        stack = np.stack(mats)
        if stack.shape[1] < stack.shape[2]:
            stack = np.swapaxes(stack, 1, 2)
        G = np.matmul(np.swapaxes(stack, 1, 2), stack)
        ev = list(np.linalg.eigvalsh(G))
    else:
        ev = [_gram_evals(W) for W in mats]
    if method == "auto":
        if any(_needs_svd(e) for e in ev):
            return [np.sort(sla.svd(W, compute_uv=False)) ** 2 for W in mats], "svd"
    return [np.clip(e, 0.0, None) for e in ev], "gram"
