"""Interpolative decompositions (column and row ID) and CUR, out of core, from sketches.

Column ID, ``A ~ A[:, idx] X`` (one read of ``A``): the read forms ``S A`` (``l x n``, ``l = k + p``
rows, or ``2 min(m, n)`` rows when ``k`` is to be chosen; ``A`` itself when that is not fewer
than ``m``) and a Gaussian test sketch ``Theta A`` (10 rows). QR with column pivoting of
``S A``, ``S A P = Q [R11 R12]``, gives the columns ``idx = P[:k]`` and ``X P = [I, R11^{-1} R12]``
(Halko, Martinsson, Tropp 2011, section 5.2; Martinsson, Rokhlin, Tygert 2011): the randomized ID
of ``scipy.linalg.interpolative``, without holding ``A``.

Row ID, ``A ~ X A[idx, :]`` (one read): ``Y = A Omega`` (``m x l``, distributed) and ``Z = A Theta``
(``m x 10``) in one read. The rows are chosen by blocked greedy pivoting on ``Y`` (QRCP of ``Y.T``
16 pivots a round, from the rows of largest residual norm; see :func:`_select_rows`): only an
``m``-vector of residual norms per round and the candidate rows are gathered, never ``Y``, and the
choice does not depend on the row blocking. ``X = Y Y[idx]^+`` stays distributed (``X[idx] = I``).

CUR, ``A ~ A[:, cols] U A[rows, :]`` (two reads): read 1 forms ``S A``, ``Theta A`` and ``Y = A Omega``;
the column ID of ``S A`` gives ``cols`` (and ``k``), blocked greedy pivoting on ``Y`` gives ``rows``.
Read 2 forms ``C = A[:, cols]`` (kept, distributed), ``R = A[rows, :]``, and, with
``B = C R11^{-1}`` (``R11`` from the sketch's QRCP: ``S`` embeds ``range(C)``, so ``B`` is well
conditioned), ``B.T B`` and ``B.T A``. Then ``C^+ A = R11^{-1} (B.T B)^{-1} B.T A`` and
``U = C^+ A R^+``: the ``U`` minimising ``||A - C U R||_F`` for the chosen ``C`` and ``R``.

Error estimates (all three): ``||Theta (A - A_hat)||_F`` (or ``||(A - A_hat) Theta||_F`` for rows)
with a Gaussian ``Theta`` of 10 rows drawn independently of the sketches that chose ``A_hat``:
an unbiased estimate of ``||A - A_hat||_F^2`` squared, within a factor ``[0.5, 1.6]`` with
probability > 0.99 for 10 rows (Tropp, Yurtsever, Udell, Cevher, SISC 2019, section 6).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

from .. import passes
from ..errors import ParameterError
from ..operators import KINDS, make_operator
from ..random.streams import resolve_seed
from ._qrcp import (check_dist_range, check_rank_tol, check_sketch_range, choose_rank, rescaled_note, rowdata,
                    sketch_qrcp)
from ._scale import rescaled

__all__ = ["interpolative", "cur", "IDResult", "CURResult"]

#: rows (or columns) of the Gaussian test sketch behind every error estimate
N_TEST = 10


@dataclass(frozen=True)
class IDResult:
    """Interpolative decomposition: ``A ~ A[:, idx] @ X`` (``axis="columns"``) or ``A ~ X @ A[idx, :]`` (rows).

    Attributes
    ----------
    idx : numpy.ndarray
        The ``k`` selected column (or row) indices, in pivot order.
    X : numpy.ndarray or dask.array.Array
        ``k x n`` for columns (``X[:, idx] = I``); ``m x k`` for rows, distributed like ``A``
        (a dask array for lazy input; this rank's rows on MPI), ``X[idx] = I``.
    rank : int
    axis : str
    error_estimate : float
        Estimate of ``||A - A_hat||_F`` from an independent Gaussian test sketch (module notes).
    norm_estimate : float
        The same test sketch's estimate of ``||A||_F``.
    passes : int
    seed : int
    reason : str
    """

    idx: Any
    X: Any
    rank: int
    axis: str
    error_estimate: float
    norm_estimate: float
    passes: int
    seed: int
    reason: str


@dataclass(frozen=True)
class CURResult:
    """``A ~ A[:, cols] @ U @ A[rows, :]`` with ``C = A[:, cols]`` and ``R = A[rows, :]`` returned too.

    Attributes
    ----------
    cols, rows : numpy.ndarray
    U : numpy.ndarray
        ``k x k``, ``U = C^+ A R^+``.
    C : numpy.ndarray or dask.array.Array
        ``m x k``, distributed like ``A``.
    R : numpy.ndarray
        ``k x n``.
    rank : int
    error_estimate, norm_estimate : float
        Estimates of ``||A - C U R||_F`` and ``||A||_F`` from an independent test sketch.
    passes : int
    seed : int
    reason : str
    """

    cols: Any
    rows: Any
    U: Any
    C: Any
    R: Any
    rank: int
    error_estimate: float
    norm_estimate: float
    passes: int
    seed: int
    reason: str


# -- helpers ---------------------------------------------------------------------------------------------
def _check_common(data, rank, tol, kind, n_oversamples):
    m, n = data.shape
    check_rank_tol(rank, tol, min(m, n))
    if kind not in KINDS or kind == "uniform":
        raise ParameterError(f"kind must be one of 'sparse_sign', 'gaussian', 'srct'; got {kind!r}")
    if isinstance(n_oversamples, bool) or int(n_oversamples) != n_oversamples or n_oversamples < 0:
        raise ParameterError(f"n_oversamples must be a non-negative integer; got {n_oversamples!r}")


def _sketch_rows(m, n, rank, n_oversamples, side):
    """Sketch size: ``k + p`` for a given rank, else enough to embed the whole range (``2 min(m, n)``).

    ``None`` when the sketch would not be smaller than the contracted side of ``A`` (a square
    sketch embeds badly): the data itself is used then.
    """
    big = m if side == "left" else n
    l = int(rank) + int(n_oversamples) if rank is not None else 2 * min(m, n)
    return None if l >= big else l


def _dense_flops(shape, rank, n_oversamples):
    """A bound on the largest dense step between passes: the pivoted QR of a sketch of ``w``
    rows or columns (``k + p``, else ``2 min(m, n)``) against the longer side of ``A``."""
    m, n = shape
    w = int(rank) + int(n_oversamples) if rank is not None else 2 * min(m, n)
    return 4.0 * max(m, n) * w * w


def _column_id_from_sketch(SA, rank, tol):
    """``(idx, X, k, how, R11)`` of the column ID read off the pivoted QR of the sketch ``S A``."""
    l, n = SA.shape
    R, perm = sketch_qrcp(SA)
    k, _, how = choose_rank(R, l, n, rank, tol)
    R11 = np.asfortranarray(R[:k, :k])
    X = np.zeros((k, n))
    X[:, perm[:k]] = np.eye(k)
    if k:
        X[:, perm[k:]] = scipy.linalg.solve_triangular(R11, R[:k, k:], lower=False, check_finite=False)
    return perm[:k].copy(), X, k, how, R11


def _lsq_from_gram(G, BtA, R11):
    """``C^+ A = R11^{-1} (B.T B)^{-1} B.T A`` from ``B.T B`` and ``B.T A``, ``B = C R11^{-1}``."""
    L = scipy.linalg.cholesky(G, lower=False, check_finite=False)  # B.T B = L.T L
    W = scipy.linalg.solve_triangular(L, scipy.linalg.solve_triangular(L, BtA, trans="T"), lower=False)
    return scipy.linalg.solve_triangular(R11, W, lower=False)


#: pivots chosen per round of :func:`_select_rows`, and candidates per pivot
ROUND_PIVOTS = 16
CANDIDATES_PER_PIVOT = 4


def _select_rows(data, Y, k, tol=None):
    """Up to ``k`` rows of the distributed ``Y`` (``m x l``), chosen as QR with column pivoting of ``Y.T`` would.

    Blocked greedy pivoting, the same for any row blocking: each round computes every row's
    residual norm against the rows chosen so far (one sweep over ``Y``, the ``m``-vector of norms
    gathered), takes the ``4 b`` rows of largest residual as candidates (ties to the lower index),
    and a QRCP of their residuals picks ``b = 16`` pivots. With ``b = 1`` this is exactly the pivot
    order of ``geqp3`` on ``Y.T``; rounds of 16 keep the number of sweeps at ``k / 16``.

    Stops early at the numerical rank (a pivot's residual norm ``<= max(m, l) eps`` times the
    largest row norm, the rule of :func:`~._qrcp.numerical_rank`) and, with ``tol``, once the
    residual ``||Y - Y_proj||_F`` falls to ``tol ||Y||_F`` (within a round, the pivots' own squared
    residual norms are subtracted from the round's total: a lower bound of the decrease, so ``k``
    may exceed the smallest sufficient one by less than a round).

    Returns ``(idx, Y[idx])`` with ``idx`` the chosen global rows in pivot order.
    """
    m, l = Y.shape
    chosen, rows = [], np.zeros((0, l))
    Qs = np.zeros((l, 0))
    total = top = None
    thresh = max(m, l) * np.finfo(np.float64).eps
    while len(chosen) < k:
        b = min(ROUND_PIVOTS, k - len(chosen))
        r = np.maximum(data.gather(passes.dist_row_residuals(data, Y, Qs))[:, 0], 0.0)
        r[np.asarray(chosen, dtype=np.intp)] = 0.0
        left = float(r.sum())
        if total is None:
            total, top = left, (float(np.sqrt(r.max())) if r.size else 0.0)
        if top == 0 or (tol is not None and left <= tol**2 * total):
            break
        c = min(m - len(chosen), CANDIDATES_PER_PIVOT * b)
        cand = np.sort(np.argsort(-r, kind="stable")[:c])
        (Yc,) = passes.dist_take(data, cand, Y)
        Rc = Yc - (Yc @ Qs) @ Qs.T
        Rp, piv = scipy.linalg.qr(Rc.T, mode="r", pivoting=True, check_finite=False)
        dg = np.abs(np.diag(Rp))[:b]
        take = int(np.sum(dg > thresh * top))  # pivots above the numerical-rank threshold
        if tol is not None:  # the residual after j more pivots is at most left - sum(dg[:j]^2)
            after = left - np.cumsum(dg[:take] ** 2)
            hit = np.flatnonzero(after <= tol**2 * total)
            take = min(take, int(hit[0]) + 1) if hit.size else take
        if take == 0:
            break
        chosen.extend(int(i) for i in cand[piv[:take]])
        rows = np.vstack([rows, Yc[piv[:take]]])
        Qs = scipy.linalg.qr(rows.T, mode="economic", check_finite=False)[0]
        if take < b:
            break
    return np.asarray(chosen, dtype=np.intp), rows


# -- public functions -------------------------------------------------------------------------------------
def interpolative(A, rank=None, *, tol=None, axis="columns", seed=None, n_oversamples=10,
                  kind="sparse_sign", refine=False) -> IDResult:
    """Interpolative decomposition from one read: ``A ~ A[:, idx] X`` or, with ``axis="rows"``, ``X A[idx, :]``.

    Parameters
    ----------
    A : numpy.ndarray, dask.array.Array, zarr array, Zarr path, or RowData (MPI backend)
        ``m x n``, any shape.
    rank : int, optional
        Number of columns (rows) to select, ``1 <= rank <= min(m, n)``.
    tol : float, optional
        Relative Frobenius tolerance in ``(0, 1)``: the smallest ``k`` whose sketched residual
        (``||R_sk[k:, k:]||_F`` of the column sketch; for rows, the residual of ``A Omega`` after
        projecting on the chosen rows, checked as they are chosen) is at most ``tol`` times the
        sketch's norm. Neither: the numerical rank. The sketch then has ``2 min(m, n)`` rows
        (columns), or is ``A`` itself when that is not smaller: the column QRCP then costs
        ``O(min(m, n) n^2)`` and holds a ``2 min(m, n) x n`` array; give ``rank`` for large matrices.
    axis : {"columns", "rows"}
    seed : None, int, SeedSequence or Generator
    n_oversamples : int
        ``p``: the sketch has ``rank + p`` rows (columns).
    kind : {"sparse_sign", "gaussian", "srct"}
        The sketching operator that chooses the skeleton (the test sketch is always Gaussian).
    refine : bool
        Columns only: one more read replaces the sketch's ``X = R11^{-1} R12`` by the least-squares
        ``X = A[:, idx]^+ A`` (the best ``X`` for the chosen columns), computed as
        ``R11^{-1} (B.T B)^{-1} B.T A`` with ``B = A[:, idx] R11^{-1}`` well conditioned.

    Returns
    -------
    IDResult

    Raises
    ------
    ParameterError
        ``rank`` and ``tol`` both given or out of range; unknown ``axis`` or ``kind``; bad ``n_oversamples``.
    ShapeError
        ``A`` is empty.

    Notes
    -----
    One read of ``A`` either way. Columns: the sketch costs ``nnz m n`` (sparse sign), its QRCP
    ``4 l n^2``, ``X`` a triangular solve ``k^2 (n - k)``. Rows: ``Y = A Omega`` (``m x l``) and
    ``Z = A Theta`` are kept distributed; row pivoting costs ``ceil(k / 16)`` sweeps over ``Y`` (``2 m l j``
    flops each, ``j`` rows chosen so far) and gathers an ``m``-vector per sweep.
    ``X = Y Y[idx]^+`` is distributed.
    For ``rank = k`` the error is close to ``sigma_{k+1}`` times a modest factor (the ID's
    ``sqrt(1 + k (n - k))`` worst case is rarely approached); ``error_estimate`` says what it is.
    Measured (``scripts/bench/qrcp.py``, 20,000 x 2,000, rank 100, decaying spectrum): the one-read
    ``X`` has 2.4x the error of ``scipy.linalg.interpolative.interp_decomp``'s (4.2x the SVD's);
    ``refine=True`` brings it to 1.07x scipy's (1.9x the SVD's) for one more read.

    References
    ----------
    1. N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with randomness", SIREV 2011
       (arXiv 0909.4061), section 5.2.
    2. P.-G. Martinsson, V. Rokhlin, M. Tygert, "A randomized algorithm for the decomposition of
       matrices", ACHA 2011.
    3. P.-G. Martinsson, G. Quintana-Orti, N. Heavner, "randUTV" / HQRRP: blocked pivot selection,
       b pivots per round (Duersch, Gu, SISC 2017, arXiv 1509.06820).

    Examples
    --------
    >>> import numpy as np, distsketch
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((500, 20)) @ rng.standard_normal((20, 300))
    >>> res = distsketch.interpolative(A, rank=20, seed=1)
    >>> bool(np.allclose(A, A[:, res.idx] @ res.X))
    True
    """
    data = rowdata(A)
    if axis not in ("columns", "rows"):
        raise ParameterError(f"axis must be 'columns' or 'rows'; got {axis!r}")
    _check_common(data, rank, tol, kind, n_oversamples)
    seed = resolve_seed(seed)
    res, scale = rescaled(lambda dd: _interp_run(dd, rank, tol, axis, seed, n_oversamples, kind, refine), data,
                          _dense_flops(data.shape, rank, n_oversamples))
    if scale != 1.0:  # read as scale * A: the indices and X are the same, the norms scale
        res = dataclasses.replace(res, error_estimate=res.error_estimate / scale,
                                  norm_estimate=res.norm_estimate / scale, reason=res.reason + rescaled_note(scale))
    return res


def _interp_run(data, rank, tol, axis, seed, n_oversamples, kind, refine):
    m, n = data.shape
    dtype = np.dtype(data.dtype)
    if axis == "columns":
        l = _sketch_rows(m, n, rank, n_oversamples, "left")
        Th = make_operator("gaussian", N_TEST, m, seed=seed, stream=1)
        if l is None:  # a sketch would not be smaller than A: pivot on A itself (m x n, small here)
            _, Acopy, TA, _ = passes.cur_sketch(data, None, Th)
            SA, l, kind = data.gather(Acopy), m, "identity"
        else:
            SA, TA = passes.left_sketch(data, (make_operator(kind, l, m, seed=seed, stream=0), Th), dtype=np.float64)
        check_sketch_range(data, SA, TA)
        idx, X, k, how, R11 = _column_id_from_sketch(SA, rank, tol)
        if refine and k:
            _, G, BtA = passes.cqrrpt_gram(data, idx, np.arange(n), R11, keep=False)
            X = _lsq_from_gram(G, BtA, R11)
            X[:, idx] = np.eye(k)
            how += "; X by least squares on the chosen columns (one more read)"
        est = float(np.linalg.norm(TA - TA[:, idx] @ X))
        return IDResult(idx=idx, X=X.astype(dtype, copy=False), rank=k, axis=axis, error_estimate=est,
                        norm_estimate=float(np.linalg.norm(TA)), passes=data.passes, seed=seed,
                        reason=f"k={k}: {how}; sketch {kind} {l} x {m} and a {N_TEST}-row test sketch")
    l = _sketch_rows(m, n, rank, n_oversamples, "right")
    om = make_operator(kind, l, n, seed=seed, stream=2) if l is not None else None
    what = f"range sketch {kind} {n} x {l}" if l is not None else "A itself (a sketch would not be smaller)"
    l = n if l is None else l
    th = make_operator("gaussian", N_TEST, n, seed=seed, stream=3)
    Y, Z = passes.right_sketch_pair(data, om, th)
    Y, Z = data.persist(Y), data.persist(Z)
    check_dist_range(data, Y, Z)
    kmax = int(rank) if rank is not None else min(m, n)
    idx, YI = _select_rows(data, Y, kmax, tol)
    k = len(idx)
    how = (f"rank {rank} requested" if rank is not None else
           f"smallest k with the sketched residual <= tol ||A Omega||_F (tol={tol:g})" if tol is not None else
           "numerical rank of the pivoted A Omega")
    if rank is not None and k < rank:
        how += f", capped at the numerical rank {k}"
    if k == 0:
        X = passes.dist_row_interp(data, Y, np.zeros((l, 0)), np.zeros((0, 0)), dtype=dtype)
        z = data.norm(Z)
        return IDResult(idx=idx, X=data.output(X, dtype=dtype), rank=0, axis=axis, error_estimate=z,
                        norm_estimate=z, passes=data.passes, seed=seed, reason=f"k=0: {how}")
    Qi, Ri = scipy.linalg.qr(YI.T, mode="economic", check_finite=False)  # Y[idx].T = Qi Ri
    X = data.persist(passes.dist_row_interp(data, Y, Qi, Ri, dtype=dtype))
    (ZI,) = passes.dist_take(data, idx, Z)
    e2, z2 = passes.dist_row_resid(data, X, Z, ZI)
    return IDResult(idx=idx, X=data.output(X, dtype=dtype), rank=k, axis=axis, error_estimate=float(np.sqrt(e2)),
                    norm_estimate=float(np.sqrt(z2)), passes=data.passes, seed=seed,
                    reason=(f"k={k}: {how}; one read: {what} and a {N_TEST}-column test "
                            "sketch; rows by blocked greedy pivoting (16 a round)"))


def cur(A, rank=None, *, tol=None, seed=None, n_oversamples=10, kind="sparse_sign") -> CURResult:
    """CUR decomposition in two reads: ``A ~ A[:, cols] @ U @ A[rows, :]`` with ``U = C^+ A R^+``.

    Parameters
    ----------
    A : numpy.ndarray, dask.array.Array, zarr array, Zarr path, or RowData (MPI backend)
    rank, tol : as for :func:`interpolative` (``k`` is chosen on the column sketch)
    seed, n_oversamples, kind : as for :func:`interpolative`

    Returns
    -------
    CURResult

    Raises
    ------
    ParameterError, ShapeError
        As for :func:`interpolative`.

    Notes
    -----
    Read 1: ``S A``, ``Theta A`` (test) and ``Y = A Omega``. The columns are the column ID of ``S A``;
    the rows come from blocked greedy pivoting on ``Y``. Read 2: ``C = A[:, cols]`` (kept distributed),
    ``R = A[rows, :]`` and, with ``B = C R11^{-1}`` preconditioned by the sketch, ``B.T B`` and
    ``B.T A``; then ``C^+ A = R11^{-1} (B.T B)^{-1} B.T A`` and ``U = (C^+ A) R^+`` (a least-squares
    solve with ``R.T``): the best ``U`` for the chosen ``C`` and ``R`` in the Frobenius norm.
    Cost of read 2: ``2 m n k`` flops (``B.T A``). ``error_estimate = ||Theta (A - C U R)||_F``.

    References
    ----------
    1. S. Voronin, P.-G. Martinsson, "Efficient algorithms for CUR and interpolative matrix
       decompositions", Adv. Comput. Math. 2017 (arXiv 1412.8447).
    2. M. W. Mahoney, P. Drineas, "CUR matrix decompositions for improved data analysis", PNAS 2009.

    Examples
    --------
    >>> import numpy as np, distsketch
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((400, 15)) @ rng.standard_normal((15, 300))
    >>> res = distsketch.cur(A, rank=15, seed=1)
    >>> bool(np.allclose(A, A[:, res.cols] @ res.U @ A[res.rows, :]))
    True
    """
    data = rowdata(A)
    _check_common(data, rank, tol, kind, n_oversamples)
    seed = resolve_seed(seed)
    res, scale = rescaled(lambda dd: _cur_run(dd, rank, tol, seed, n_oversamples, kind), data,
                          _dense_flops(data.shape, rank, n_oversamples))
    if scale != 1.0:  # read as scale * A: C and R scale with it, U = C^+ A R^+ inversely, the norms with it
        res = dataclasses.replace(res, C=res.C / scale, R=(res.R / scale).astype(res.R.dtype, copy=False),
                                  U=(res.U * scale).astype(res.U.dtype, copy=False),
                                  error_estimate=res.error_estimate / scale, norm_estimate=res.norm_estimate / scale,
                                  reason=res.reason + rescaled_note(scale))
    return res


def _cur_run(data, rank, tol, seed, n_oversamples, kind):
    m, n = data.shape
    dtype = np.dtype(data.dtype)
    l = _sketch_rows(m, n, rank, n_oversamples, "left")
    l2 = _sketch_rows(m, n, rank, n_oversamples, "right")
    S = make_operator(kind, l, m, seed=seed, stream=0) if l is not None else None
    th = make_operator("gaussian", N_TEST, m, seed=seed, stream=1)
    om = make_operator(kind, l2, n, seed=seed, stream=2) if l2 is not None else None
    l2 = n if l2 is None else l2
    (Y,), Acopy, TA, SA = passes.cur_sketch(data, S, th, (om,))
    if S is None:  # no smaller sketch: pivot on A (m <= 2 min(m, n))
        SA = data.gather(Acopy)
    check_sketch_range(data, SA, TA)
    check_dist_range(data, Y)
    cols, _, k, how, R11 = _column_id_from_sketch(SA, rank, tol)
    rows = _select_rows(data, Y, k)[0] if k else np.zeros(0, dtype=np.intp)
    rows_sorted = np.asarray(rows)
    C, G, BtA, R = passes.cur_second(data, cols, R11, rows_sorted, dtype=dtype)
    if k:
        CpA = _lsq_from_gram(G, BtA, R11)  # C^+ A (k x n)
        U = scipy.linalg.lstsq(R.T, CpA.T, check_finite=False)[0].T  # U R ~ C^+ A
    else:
        U = np.zeros((0, 0))
    est = float(np.linalg.norm(TA - TA[:, cols] @ U @ R))
    return CURResult(cols=cols, rows=rows, U=U.astype(dtype, copy=False), C=data.output(C, dtype=dtype), R=R.astype(dtype, copy=False),
                     rank=int(k), error_estimate=est, norm_estimate=float(np.linalg.norm(TA)), passes=data.passes,
                     seed=seed, reason=(f"k={k}: {how}; read 1: sketches {kind} {l or m} x {m} (columns), {n} x {l2} "
                                        f"(rows), {N_TEST}-row test; read 2: C, R, C^+ A"))
