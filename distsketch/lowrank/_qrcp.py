"""Randomized QR with column pivoting of a tall matrix: CQRRPT, out of core.

CQRRPT (Melnichenko, Balabanov, Murray, Demmel, Mahoney, Luszczek, arXiv 2311.08316) reads
``A`` (``m x n``, ``m >= n``) twice:

1. **sketch** ``S A`` (``d x n``, ``d ~ 2n`` rows of a sparse sign operator). Its QR with column
   pivoting (``geqrf`` on ``S A``, then ``geqp3`` on the ``n x n`` factor: the same pivots, at
   BLAS-3 speed for the tall part) gives the permutation ``perm`` and ``R_sk``. The rank ``k``
   comes from ``R_sk``: given, or the smallest ``k`` with ``||R_sk[k:, k:]||_F <= tol ||R_sk||_F``,
   or (neither given) the numerical rank, ``#{i : |R_sk[i, i]| > max(d, n) eps |R_sk[0, 0]|}``.
2. **preconditioned Gram**: with ``A_k = A[:, perm[:k]]`` and ``R11 = R_sk[:k, :k]``, one read forms
   ``B = A_k R11^{-1}`` block by block (a triangular solve per block; ``S`` embeds ``range(A_k)``,
   so ``cond(B) ~ (1 + e)/(1 - e)`` whatever ``cond(A)`` is), its Gram matrix ``B.T B`` (SYRK) and
   ``C = B.T A[:, perm[k:]]``. The Cholesky factor ``B.T B = Rc.T Rc`` gives ``Q = B Rc^{-1}``
   and

       R = [Rc R11,  Rc^{-T} C]          (k x n, upper trapezoidal; R[:, k:] = Q.T A[:, perm[k:]])

   so the trailing columns are the exact projection, not the sketch's estimate.

When the condition estimate of ``Rc`` says one Cholesky QR step cannot give ``Q`` orthonormal to
``~10 k eps`` (one step leaves ``||Q.T Q - I|| ~ eps cond(B)^2``: a second step runs when
``cond(Rc)^2 > max(10 k, 100)``, or the Cholesky factorisation fails), ``B`` (stored by the
second read) is re-orthonormalised by CholeskyQR2 / shifted CholeskyQR3 on the backend
(:func:`~distsketch.lowrank._orth.orthonormalize`): sweeps over ``B``, not reads of ``A``.
With ``compute_q=False`` ``B`` is not stored and that case costs one more read of ``A``.

Flops: the sketch (``nnz m n`` for sparse sign), ``m k^2`` for the triangular solve, ``m k^2``
for SYRK, ``2 m k (n - k)`` for ``C``, ``m k^2`` for ``Q``; about ``3 m n^2`` at ``k = n``
against ``4 m n^2`` (half of it BLAS-2) for LAPACK's ``geqp3`` and another ``4 m n^2`` for its
explicit ``Q``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

from .. import passes
from .._linalg import cond2_estimate
from ..backends import as_rowdata
from ..errors import ParameterError, ShapeError
from ..operators import KINDS, make_operator
from ..random.streams import resolve_seed
from ._orth import orthonormalize
from ._scale import Rescale, rescaled

__all__ = ["qrcp", "QRCPResult"]


@dataclass(frozen=True)
class QRCPResult:
    """``A[:, perm] ~ Q @ R`` with ``Q`` (``m x k``) orthonormal and ``R`` (``k x n``) upper trapezoidal.

    Attributes
    ----------
    Q : numpy.ndarray or dask.array.Array or None
        ``m x k`` orthonormal columns, in the input's family (a dask array for lazy input, never
        gathered; this rank's rows for an MPI backend); ``None`` with ``compute_q=False``.
    R : numpy.ndarray
        ``k x n``; ``R[:, :k]`` upper triangular.
    perm : numpy.ndarray
        The ``n`` column indices: ``A[:, perm] ~ Q @ R``; ``perm[:k]`` are the pivot columns.
    rank : int
        ``k``, the number of columns of ``Q``.
    numerical_rank : int
        ``#{i : |R_sk[i, i]| > max(d, n) eps |R_sk[0, 0]|}`` from the sketch's pivoted QR.
    passes : int
        Reads of ``A`` (2, or 3 with ``compute_q=False`` when a second Cholesky step was needed).
    seed : int
    reason : str
        How ``k`` was chosen, the sketch size, and how many Cholesky QR steps ran.
    error_estimate : float
        ``||R_sk[k:, k:]||_F``: the sketch's estimate of ``||A[:, perm] - Q R||_F`` (``S`` embeds
        ``range(A)`` with distortion ``e``, so the true error lies within ``[1/(1+e), 1/(1-e)]`` of
        it up to rounding; ``0`` at ``k = n``).
    """

    Q: Any
    R: Any
    perm: Any
    rank: int
    numerical_rank: int
    passes: int
    seed: int
    reason: str
    error_estimate: float = float("nan")


# -- pieces shared with the interpolative decompositions -------------------------------------------
def sketch_qrcp(SA):
    """QR with column pivoting of a small sketch: ``(R, perm)`` with ``R`` of ``min(d, n)`` rows.

    A sketch much taller than wide (``d > 3 n``) is first reduced by an unpivoted QR (``geqrf``,
    BLAS-3): the pivots of ``SA = Q0 R0`` and of ``R0`` are the same. ``geqp3`` runs under the
    process's BLAS-thread policy (:mod:`distsketch._threads`).
    """
    d, n = SA.shape
    if d > 3 * n:
        SA = scipy.linalg.qr(SA, mode="r", check_finite=False)[0][:n]
    R, perm = scipy.linalg.qr(SA, mode="r", pivoting=True, check_finite=False)
    return R[: min(SA.shape)], perm


def tail_norms(R):
    """``t[k] = ||R[k:, k:]||_F`` for ``k = 0 .. r`` (upper trapezoidal ``R``, ``r`` rows), summed on
    ``R`` times a power of two (exact) so that the squares neither overflow nor underflow."""
    R = np.asarray(R, dtype=np.float64)
    top = float(np.max(np.abs(R))) if R.size else 0.0
    e = int(np.frexp(top)[1]) if top > 0 and np.isfinite(top) else 0
    rows = np.sum(np.ldexp(R, -e) ** 2, axis=1)
    t2 = np.concatenate([np.cumsum(rows[::-1])[::-1], [0.0]])
    return np.ldexp(np.sqrt(t2), e)


#: a first-read sketch with its largest entry outside this range is redone on ``2^-e A``: the
#: squared norms of the selection and the estimates (sums of up to ~1e8 squares) stay in range
SAFE_SKETCH = (1e-100, 1e100)


def check_sketch_range(data, *sketches):
    """Raise :class:`~distsketch.lowrank._scale.Rescale` (rerun on ``2^-e A``) when the largest entry
    of the sketches is nonzero and outside :data:`SAFE_SKETCH` (non-finite values are left to the
    finiteness checks of the read)."""
    if data.scale != 1.0:
        return  # already the rescaled view
    top = max((float(np.max(np.abs(x))) if np.size(x) else 0.0) for x in sketches)
    if np.isfinite(top) and top > 0 and not SAFE_SKETCH[0] <= top <= SAFE_SKETCH[1]:
        raise Rescale()


def check_dist_range(data, *xs):
    """:func:`check_sketch_range` for distributed sketches (their largest entry: a sweep over them,
    no read of ``A``)."""
    if data.scale != 1.0:
        return
    for x in xs:
        e = data.max_exponent(x)
        if e is not None and not SAFE_SKETCH[0] <= np.ldexp(1.0, e) <= 2 * SAFE_SKETCH[1]:
            raise Rescale()


def rescaled_note(scale):
    return f"; A read as 2^{round(float(np.log2(scale)))} A (exact): its first sketch was out of range"


def numerical_rank(R, d, n):
    diag = np.abs(np.diag(R))
    if diag.size == 0 or diag[0] == 0:
        return 0
    return int(np.sum(diag > max(d, n) * np.finfo(np.float64).eps * diag[0]))


def choose_rank(R, d, n, rank, tol):
    """``(k, numerical rank, how)`` from the pivoted sketch factor ``R``."""
    nr = numerical_rank(R, d, n)
    if rank is not None:
        k = min(int(rank), nr)
        how = f"rank {rank} requested" + (f", capped at the numerical rank {nr}" if k < rank else "")
    elif tol is not None:
        t = tail_norms(R)
        k = int(np.argmax(t <= tol * t[0])) if t[0] > 0 else 0
        how = f"smallest k with ||R_sk[k:, k:]||_F <= tol ||R_sk||_F (tol={tol:g})"
        if k > nr:
            how += f", capped at the numerical rank {nr}"
            k = nr
    else:
        k = nr
        how = "numerical rank of the sketch (|R_kk| > max(d, n) eps |R_11|)"
    return k, nr, how


def check_rank_tol(rank, tol, limit, what="min(m, n)"):
    if rank is not None and tol is not None:
        raise ParameterError("give at most one of rank and tol; got both (rank fixes k, tol chooses it)")
    if rank is not None and (isinstance(rank, bool) or int(rank) != rank or not 1 <= rank <= limit):
        raise ParameterError(f"rank must be an integer in [1, {what}={limit}]; got {rank!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < 1):
        raise ParameterError(f"tol is a relative Frobenius error in (0, 1), e.g. 1e-6; got {tol!r}")


def rowdata(A):
    """The :class:`~distsketch.backends.RowData` of any accepted input (a RowData, e.g. MPI, as it is),
    refused when empty."""
    data = as_rowdata(A)
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ShapeError(f"A is empty (shape {data.shape}); give a matrix with at least one row and column")
    return data


# -- the driver -------------------------------------------------------------------------------------
def qrcp(A, rank=None, *, tol=None, seed=None, kind="sparse_sign", d=None, compute_q=True) -> QRCPResult:
    """Randomized QR with column pivoting (CQRRPT) of a tall matrix: ``A[:, perm] ~ Q R`` in 2 reads.

    Parameters
    ----------
    A : numpy.ndarray, dask.array.Array, zarr array, Zarr path, or RowData (MPI backend)
        ``m x n`` with ``m >= n``. A wide matrix is refused (factor ``A.T``, or use
        :func:`distsketch.interpolative` with ``axis="rows"``).
    rank : int, optional
        Number of columns of ``Q``; capped at the numerical rank (``reason`` says so).
    tol : float, optional
        Relative Frobenius tolerance in ``(0, 1)``: ``k`` is the smallest with
        ``||R_sk[k:, k:]||_F <= tol ||R_sk||_F`` (the sketch's estimate of
        ``||A P - Q R||_F / ||A||_F``). With neither ``rank`` nor ``tol``: the full
        factorisation, ``k = n`` for a numerically full-rank ``A``, else ``k`` = its numerical rank.
    seed : None, int, SeedSequence or Generator
    kind : {"sparse_sign", "gaussian", "srct"}
        Sketching operator (sparse sign with 8 nonzeros per column by default).
    d : int, optional
        Sketch rows, ``n <= d <= m``; default ``min(m, 2 n)``.
    compute_q : bool
        Form ``Q`` (default). Without it the second read keeps only ``B.T B`` and ``C``.

    Returns
    -------
    QRCPResult

    Raises
    ------
    ShapeError
        ``A`` is wide (``m < n``) or empty.
    ParameterError
        ``rank`` and ``tol`` both given, out of range; unknown ``kind``; ``d`` out of range.

    Notes
    -----
    Reads of ``A``: 2 (sketch; preconditioned Gram with ``B = A_k R11^{-1}`` kept). When
    ``cond(Rc)^2 > max(10 k, 100)`` (a sketch too small to embed ``range(A_k)`` well) the stored
    ``B`` is re-orthonormalised (CholeskyQR2 or shifted CholeskyQR3 sweeps over ``B``, no read of
    ``A``); with ``compute_q=False`` that costs a third read. Flops ~ ``3 m n^2`` at ``k = n``
    (TRSM, SYRK, TRSM), all BLAS-3. ``Q`` is orthonormal to ``O(eps)`` and
    ``||A P - Q R|| = O(eps ||A||)`` for ``cond(A)`` well below ``1/eps`` (the paper's stability
    theorem; tested to ``100 n eps`` up to ``cond(A) = 1e12``); ``|R_kk|`` tracks ``sigma_k`` as
    closely as ``geqp3`` (the pivots are those of a subspace embedding of ``A``).
    On Dask, ``B`` (``m x k``) is held in worker memory between the read and ``Q``.

    References
    ----------
    1. M. Melnichenko, O. Balabanov, R. Murray, J. Demmel, M. W. Mahoney, P. Luszczek,
       "CholeskyQR with randomization and pivoting for tall matrices (CQRRPT)", arXiv 2311.08316.
    2. T. Fukaya, R. Kannan, Y. Nakatsukasa, Y. Yamamoto, Y. Yanagisawa, "Shifted CholeskyQR for
       computing the QR factorization of ill-conditioned matrices", SISC 2020.

    Examples
    --------
    >>> import numpy as np, distsketch
    >>> A = np.random.default_rng(0).standard_normal((2000, 50))
    >>> res = distsketch.qrcp(A, seed=1)
    >>> res.rank, res.passes
    (50, 2)
    >>> bool(np.allclose(A[:, res.perm], res.Q @ res.R))
    True
    """
    data = rowdata(A)
    m, n = data.shape
    if m < n:
        raise ShapeError(f"qrcp needs a tall matrix (m >= n); got shape {data.shape}. Factor A.T, or select rows "
                         "with distsketch.interpolative(A, axis='rows')")
    check_rank_tol(rank, tol, n, "n")
    if kind not in KINDS or kind == "uniform":
        raise ParameterError(f"kind must be one of 'sparse_sign', 'gaussian', 'srct'; got {kind!r}")
    k_min = int(rank) if rank is not None else 1
    if d is None:
        d = min(m, 2 * n)
    if isinstance(d, bool) or int(d) != d or not max(k_min, n) <= d <= m:
        # fewer sketch rows than columns: the sketch's R has d rows, its tail past k = d is empty, and
        # the error estimate said 0 for a true 0.83 (2,000 x 100 Gaussian, d = 30)
        raise ParameterError(f"d (sketch rows) must be an integer in [n={n}, m={m}] (the sketch must embed the "
                             f"column space of A for R and the error estimate to hold); got {d!r}")
    d = int(d)
    seed = resolve_seed(seed)
    res, scale = rescaled(lambda dd: _qrcp_run(dd, d, kind, rank, tol, seed, compute_q), data,
                          4.0 * d * n * n)  # the pivoted QR of the d x n sketch
    if scale != 1.0:  # A was read as scale * A: R and the estimate scale with it, Q does not
        res = dataclasses.replace(res, R=(res.R / scale).astype(res.R.dtype, copy=False),
                                  error_estimate=res.error_estimate / scale, reason=res.reason + rescaled_note(scale))
    return res


def _qrcp_run(data, d, kind, rank, tol, seed, compute_q):
    m, n = data.shape
    out_dtype = np.dtype(data.dtype)

    # read 1: the sketch and its pivoted QR
    (SA,) = passes.left_sketch(data, make_operator(kind, d, m, seed=seed, stream=0), dtype=np.float64)
    check_sketch_range(data, SA)
    Rsk, perm = sketch_qrcp(SA)
    k, nr, how = choose_rank(Rsk, d, n, rank, tol)
    est = float(tail_norms(Rsk)[k])
    J, T = perm[:k].copy(), perm[k:].copy()
    R11 = np.asfortranarray(Rsk[:k, :k])

    # read 2: B = A_k R11^{-1}, B.T B, B.T A_trail
    keep = bool(compute_q)
    B, G, C = passes.cqrrpt_gram(data, J, T, R11, keep=keep)
    eps = np.finfo(np.float64).eps
    steps = 1
    try:
        Rt = scipy.linalg.cholesky(G, lower=False, check_finite=False) if k else np.zeros((0, 0))
        kappa = cond2_estimate(Rt) if k else 1.0
        # one Cholesky QR step leaves ||Q.T Q - I|| ~ eps cond(B)^2: accepted up to ~10 k eps
        ok = bool(np.isfinite(kappa) and kappa**2 <= max(10 * k, 100))
    except np.linalg.LinAlgError:
        ok, kappa = False, float("inf")
    Q = None
    if keep:
        if ok:
            Q = passes.dist_trsm(data, B, Rt, dtype=out_dtype)
        else:
            Q, Rt = orthonormalize(data, B)  # CholeskyQR2 / shifted CholeskyQR3 over B (no read of A)
            steps = 2
        Q = data.output(Q, dtype=out_dtype)  # in the caller's family (numpy, dask, this rank's rows)
    elif not ok:
        # one more read: the Gram of B Rc^{-1} (Rc from a shifted Cholesky if the plain one failed)
        if not np.isfinite(kappa):
            shift = 11 * (m * k + k * (k + 1)) * eps * max(np.linalg.norm(G, 2), np.finfo(float).tiny)
            Rt = scipy.linalg.cholesky(G + shift * np.eye(k), lower=False)
        M = scipy.linalg.solve_triangular(Rt, np.eye(k))
        G2 = passes.cqrrpt_gram2(data, J, R11, M)
        Rt = scipy.linalg.cholesky(G2, lower=False) @ Rt
        steps = 2
    if k:
        Rlead = np.triu(Rt @ R11)
        Rtrail = scipy.linalg.solve_triangular(Rt, C, trans="T", lower=False)
    else:
        Rlead, Rtrail = np.zeros((0, 0)), np.zeros((0, n))
    R = np.hstack([Rlead, Rtrail]).astype(out_dtype, copy=False)
    reason = (f"k={k}: {how}; sketch {kind} d={d}; "
              + ("one Cholesky QR step" if steps == 1 else
                 f"two Cholesky QR steps (cond(Rc) ~ {kappa:.2g} too large for one)"))
    return QRCPResult(Q=Q, R=R, perm=np.asarray(perm), rank=int(k), numerical_rank=int(nr), passes=data.passes,
                      seed=seed, reason=reason, error_estimate=est)
