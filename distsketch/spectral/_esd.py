"""Eigenvalues of W^T W for weight matrices: symmetric rank-k update plus a symmetric
eigensolver in float64, batched over the slices of a layer; an SVD only where it is needed.

WeightWatcher takes the singular values of each matrix by a full SVD (``scipy.linalg.svd``,
LAPACK gesdd) and squares them. The eigenvalues of the Gram matrix of the smaller side are the
same numbers, and cost about a third as much (dsyrk is BLAS-3, the tridiagonal reduction works on
an M x M matrix). Their absolute error is about eps * lambda_max, so eigenvalues many orders below
lambda_max lose relative accuracy; when the smallest is below ``1e-9 * lambda_max`` (a nearly
rank-deficient matrix, where WeightWatcher's rank and entropy depend on those small values) the
layer is recomputed by gesdd, exactly as WeightWatcher does.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
from scipy.linalg.blas import dsyrk

__all__ = ["singular_values_squared"]

_REL_FLOOR = 1e-9


def _gram_evals(W):
    """Eigenvalues (ascending) of the Gram matrix of the smaller side of one 2-D float64 matrix."""
    A = W if W.shape[0] >= W.shape[1] else W.T
    G = dsyrk(1.0, np.asfortranarray(A), trans=1)  # A^T A, upper triangle
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
        for k, e in enumerate(ev):
            top = e[-1] if len(e) else 0.0
            if len(e) and (not top > 0 or e[0] < _REL_FLOOR * top):
                return [np.sort(sla.svd(W, compute_uv=False)) ** 2 for W in mats], "svd"
    return [np.clip(e, 0.0, None) for e in ev], "gram"
