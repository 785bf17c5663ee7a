"""Randomized SVD, block Krylov, single-pass, blocked QB to a tolerance, and Nystrom.

Every method reads ``A`` only through :mod:`distsketch.passes` and orthonormalises its
tall ``m x l`` factors on the backend (:mod:`._orth`), so ``U`` is never gathered and ``A``
never held. A wide ``A`` (``m < n``) is handled as ``A.T`` with the factors swapped.

Passes (reads of ``A``), with ``q`` power or Krylov iterations:

* ``rsvd``: ``q + 1``. The power step ``Y = A Z`` and ``W = A.T Y`` share one read
  (:func:`~distsketch.passes.matmul_rmatmul`); ``Z_next = orth(W)``. The basis Gram is
  ``Y.T Y = Z.T W`` (no sweep over ``Y``) and, with ``Y = Q R``, ``B.T = A.T Q = W R^{-1}``
  (no last read) when ``R`` is well conditioned; otherwise a last read forms ``B = Q.T A``
  exactly (``q + 2``). (Halko-Martinsson-Tropp's scheme takes ``2q + 2``.)
* ``block_krylov``: ``q + 1`` (``q + 2`` likewise), keeping every block ``Y_0 .. Y_q``
  (Musco & Musco 2015): a subspace of ``(q + 1) l`` columns for the same reads.
* ``single_pass``: 1. ``Y = A Omega``, ``W = Psi A`` and a test sketch ``Theta A`` in
  one read (Tropp, Yurtsever, Udell, Cevher, SIMAX 2017); ``A ~ Q X`` with
  ``X = (Psi Q)^+ W``; the error is estimated from ``Theta`` (their 2019 SISC paper,
  section 6): ``||Theta (A - A_hat)||_F`` is an unbiased estimate of ``||A - A_hat||_F``.
* ``qb`` to a tolerance: one read per block plus one (finishing block ``i`` and
  sketching block ``i + 1`` share a read); the error ``||A - Q B||_F^2 =
  ||A||_F^2 - ||B||_F^2`` is updated per block (Yu, Gu, Li, SIMAX 2018).

Error estimates of ``rsvd``, ``block_krylov`` and ``qb`` use ``||A||_F^2 - sum s_i^2``
(exact for an orthonormal ``Q`` and ``B = Q.T A``; its rounding floor is about
``sqrt(eps) ||A||_F``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.linalg

from .. import passes
from ..backends import as_rowdata
from ..errors import NonFiniteError, ParameterError, ShapeError
from ..operators import make_operator
from ..random.streams import resolve_seed
from ._orth import apply_right, orthonormalize
from ._result import NystromResult, QBResult, SVDResult
from ._scale import Rescale as _Rescale
from ._scale import rescaled as _rescaled

__all__ = ["svd", "qb", "nystrom"]

METHODS = ("auto", "rsvd", "block_krylov", "single_pass")
NORMALIZERS = ("auto", "QR", "LU", "none")


def _prepare(A):
    """Row-blocked view of A (or of A.T when wide: :meth:`RowData.transposed`) and whether it was transposed."""
    data = as_rowdata(A)
    m, n = data.shape
    if m == 0 or n == 0:
        raise ShapeError(f"A is empty (shape {data.shape})")
    wide = m < n
    return (data.transposed() if wide else data), wide


def _dense_flops(m, n, rank, n_oversamples, q):
    """A bound on the largest dense step between passes (``n x w`` QRs and ``w x n`` SVDs of the
    basis width ``w``): ``n w^2``, with ``w`` the Krylov basis of ``q + 1`` blocks of ``l`` columns
    (``q = "auto"``: at most 4 blocks), or ``min(m, n)`` in tol mode."""
    if rank is None:
        w = min(m, n)
    else:
        l = min(int(rank) + int(n_oversamples), m, n)
        w = min(l * (4 if q == "auto" else int(q) + 1), m, n)
    return float(min(m, n)) * w * w


def _check_rank_tol(rank, tol, m, n):
    if (rank is None) == (tol is None):
        raise ParameterError("give exactly one of rank and tol; got "
                             + ("both" if rank is not None else "neither"))
    if rank is not None and (isinstance(rank, bool) or int(rank) != rank or not 1 <= rank <= min(m, n)):
        raise ParameterError(f"rank must be an integer in [1, min(m, n)={min(m, n)}]; got {rank!r}")
    if tol is not None and not (isinstance(tol, (int, float, np.floating)) and not isinstance(tol, bool)
                                and 0 < tol < 1):
        raise ParameterError(f"tol is a relative Frobenius error ||A - A_hat||_F / ||A||_F in (0, 1); got {tol!r}")


def _gaussian_block(n, l, seed, stream):
    """Dense n x l Gaussian test matrix (entries N(0, 1/l)); n x l is small."""
    return make_operator("gaussian", l, n, seed=seed, stream=stream).toarray().T


def _normalize(Z, how):
    if how == "none":
        return Z / max(np.linalg.norm(Z, 2), np.finfo(float).tiny)
    if how == "LU":
        P, L, U = scipy.linalg.lu(Z)
        return P @ L
    return np.linalg.qr(Z)[0]


def _svd_of_qb(data, Q, BT, k):
    """Truncated SVD of Q B from B.T (n x l): U = Q U_B (distributed), s, Vt."""
    Ub, s, Vt = scipy.linalg.svd(BT.T, full_matrices=False)
    U = apply_right(data, Q, Ub[:, :k])
    return U, s[:k], Vt[:k], s


class _Zero(Exception):
    """``A X = 0`` and ``||A||_F = 0`` for a Gaussian ``X``: ``A`` is the zero matrix."""

    def __init__(self, Y):
        self.Y = Y


# ||A||_F^2 outside this range is too close to overflow or underflow for the Gram-type products
_SAFE_FRO2 = (1e-280, 1e280)


def _check_first(data, fro2, Y, *small):
    """After the first pass: raise :class:`_Zero` for ``A = 0``, :class:`_Rescale` when out of range."""
    finite = math.isfinite(fro2) and all(np.all(np.isfinite(x)) for x in small)
    if finite and _SAFE_FRO2[0] <= fro2 <= _SAFE_FRO2[1]:
        return
    if fro2 == 0 and data.max_exponent(Y) is None:  # no read of A: Y = A X is distributed
        raise _Zero(Y)
    if data.scale == 1.0:  # not yet a scaled view
        raise _Rescale()


def _eye_columns(data, Y, k):
    """The first ``k`` columns of the ``m x m`` identity, distributed like ``Y``."""
    (E,), _ = data.dist_pass(passes.K_DIST_EYE, dist=(Y,), small=(int(k),), dist_out=((int(k), np.float64),))
    return E


def _estimate(fro2, s_kept):
    return float(math.sqrt(max(fro2 - float(np.sum(s_kept**2)), 0.0)))


def _auto_power_iter(Wsv, k, l, N, krylov):
    """Iterations from the decay the first sketch shows.

    ``Wsv`` are the singular values of ``A.T A X`` (``~ sigma_j^2``, up to a factor). With the
    tail beyond ``l`` taken flat at ``sigma_l`` (pessimistic), the excess of the Frobenius
    error after ``q`` power steps is modelled after Halko, Martinsson, Tropp (2011, Thm 10.5,
    power-scheme weights) as

        excess(q) = sum_{j>k} sigma_j^2 (sigma_j/sigma_k)^(4q) / sum_{j>k} sigma_j^2

    (the theorem's factor k/(p-1) dropped: measured errors sit well below the bound);
    ``q`` is the smallest with ``sqrt(1 + excess) <= 1.05``, at most 6. Block Krylov
    reaches the same polynomial degree with half the iterations.
    """
    p = l - k
    if len(Wsv) < l or Wsv[k - 1] <= 0 or p < 2:
        return 2, "too few columns to read the decay"
    sig = np.sqrt(np.maximum(Wsv[:l], 0.0))
    tail = sig[k:l]
    rest = max(N - l, 0)
    rho = tail / sig[k - 1]
    base = float(np.sum(tail**2) + rest * sig[l - 1] ** 2)
    if base <= 0:
        return 0, "A has rank <= k"
    for q in range(0, 7):
        excess = (np.sum(tail**2 * rho ** (4 * q)) + rest * sig[l - 1] ** 2 * rho[-1] ** (4 * q)) / base
        if math.sqrt(1 + excess) <= 1.05:
            break
    note = f"sigma_(k+1)/sigma_k ~ {rho[0]:.2g}, sigma_l/sigma_k ~ {rho[-1]:.2g}"
    return (max(1, math.ceil(q / 2)) if krylov and q else q), note


#: ``B = Q.T A`` is taken as ``W R^{-1}`` (no read) when ``kappa(R)`` is at most this; its rounding
#: error is then ``~ kappa eps ||A||``. Above it (fast decay, rank-deficient ``A``) a last read forms
#: ``B`` exactly.
_KAPPA_NO_READ = 1e4

#: The Rayleigh-Ritz step is taken in the basis ``Y`` itself, with no orthonormal ``Q`` formed, when
#: ``kappa(Y)`` is at most this: its rounding error ``~ kappa^2 eps ||A||`` is then within the budget
#: of ``B = W R^{-1}`` above (see :func:`_ritz_in_basis`).
_KAPPA_RITZ = math.sqrt(_KAPPA_NO_READ)


def _next_block(W, Zs, how, krylov):
    """The next test block ``Z`` from ``W = A.T A Z_prev``.

    Block Krylov with QR normalisation orthogonalises ``W`` against every earlier ``Z`` (block
    classical Gram-Schmidt, twice: all ``n x l`` work) before its QR, so ``[Z_0 .. Z_j]`` has
    orthonormal columns and spans the same Krylov space ``[Z_0, A.T A Z_0, ..]``. The basis
    ``Y = A [Z_0 .. Z_j]`` is then as well conditioned as ``A`` is on that space (at most
    ``kappa(A)``), where the blocks of a plain power sequence all lean towards the top singular
    directions and the basis they form is ill-conditioned (``kappa`` 5e3 at q = 2 for
    ``s_i = i^-0.5``, against 30 here): fewer last reads for ``B`` and a cheaper Rayleigh-Ritz.
    """
    if krylov and how == "QR":
        P = np.hstack(Zs)
        for _ in range(2):
            W = W - P @ (P.T @ W)
        return np.linalg.qr(W)[0]
    return _normalize(W, how)


def _ritz_in_basis(data, blocks, G, Wall, k):
    """Truncated SVD of ``P_Y A`` from the basis ``Y = [Y_0 .. Y_q]`` itself: one pass over ``Y``.

    ``G = Y.T Y`` (from small factors) and ``Wall = A.T Y``. With ``G = R.T R`` and
    ``Q = Y R^{-1}`` (never formed), ``Q.T A = R^{-T} W.T = U_B S V.T`` and the rank-``k``
    factors are ``U_0 = Y (R^{-1} U_B[:, :k])``, ``S``, ``V.T``. One pass over ``Y`` stores
    ``U_0`` (``m x k``) and forms its Gram ``H``: ``U_0`` is orthonormal to ``~kappa(Y)^2 eps``
    (``R`` comes from a Gram), so one CholeskyQR step on ``U_0`` (``H = R_c.T R_c``) and the
    SVD of the small ``R_c S V.T = U_2 S_2 V_2.T`` give ``U = U_0 R_c^{-1} U_2`` orthonormal to
    ``O(eps)`` with ``U S_2 V_2.T = U_0 S V.T``: the second CholeskyQR sweep is made on the ``k``
    columns that are kept, not on all ``(q + 1) l``, and ``U`` is one product of the stored
    ``U_0`` with a ``k x k`` matrix (the chain of sweeps over the whole basis took 56 GFLOP at
    q = 2 for 200,000 x 1,000; this takes 5).

    Returns ``None`` (the caller orthonormalises ``Y`` instead) unless ``kappa(R) <=
    _KAPPA_RITZ`` and ``H`` is within 0.1 of the identity, as its rounding bound says it must be.
    """
    try:
        R = scipy.linalg.cholesky(G, lower=False)
    except np.linalg.LinAlgError:
        return None
    d = np.abs(np.diag(R))
    if not (d.min() > 0 and np.linalg.cond(R) <= _KAPPA_RITZ):
        return None
    C = scipy.linalg.solve_triangular(R, Wall.T, trans="T", lower=False)  # Q.T A = R^-T W.T
    Ub, s, Vt = scipy.linalg.svd(C, full_matrices=False)
    M = scipy.linalg.solve_triangular(R, Ub[:, :k], lower=False)
    (U0,), (H,) = data.dist_pass(passes.K_DIST_CHAIN_AND_GRAM, dist=tuple(blocks), small=((M,),),
                                 dist_out=((k, np.float64),))
    H = (H + H.T) / 2
    if not np.linalg.norm(H - np.eye(k), 2) <= 0.1:
        return None
    try:
        Rc = scipy.linalg.cholesky(H, lower=False)
    except np.linalg.LinAlgError:
        return None
    U2, s2, Vt2 = scipy.linalg.svd((Rc * s[:k]) @ Vt[:k], full_matrices=False)
    U = apply_right(data, U0, scipy.linalg.solve_triangular(Rc, U2, lower=False))
    return U, s2, Vt2


def _rsvd_core(data, k, l, q, normalizer, seed, krylov):
    """Range finder with fused power (or block Krylov) steps and the truncated SVD on its basis:
    ``q + 1`` reads of ``A`` (``q + 2`` when the basis is ill-conditioned).

    Each read computes ``Y = A Z`` and ``W = A.T Y`` together; the next ``Z`` is the small
    ``n x l`` factor ``W`` normalised locally (QR, LU or scaling; Krylov blocks orthogonalised
    against the earlier ones, :func:`_next_block`), so the tall ``Y`` needs no
    orthonormalisation between iterations: ``span(Z_next) = span(A.T A Z)``. Every ``Y_j``
    has orthonormal ``Z_j`` behind it, so the Krylov blocks share one scale.

    The basis ``Y`` (``Y_q``, or ``[Y_0 .. Y_q]`` for Krylov) has ``Y.T Y = Z.T W`` from the small
    factors. When ``Y`` is well conditioned the SVD is taken in that basis directly, one pass over
    ``Y`` (:func:`_ritz_in_basis`). Otherwise ``Y`` is orthonormalised (CholeskyQR2/3, the first
    sweep free) and ``Y = Q R`` gives ``B.T = A.T Q = W R^{-1}`` without another read; when ``R``
    is too ill-conditioned for that (``kappa(R) > _KAPPA_NO_READ``, e.g. fast decay, where the
    trailing directions of ``Y`` are tiny), a last read forms ``B = Q.T A`` exactly.

    Returns ``(U, s, Vt, s_all, fro2, q, note)``: the rank-``k`` factors (``U`` distributed),
    every singular value of the projected matrix (``None`` when only the first ``k`` were formed)
    and the iterations made.
    """
    m, n = data.shape
    X = _gaussian_block(n, l, seed, 0)
    if krylov and normalizer == "QR":
        X = np.linalg.qr(X)[0]  # [Z_0 .. Z_q] orthonormal (_next_block)
    # pass 1: Y = A X, W = A.T Y, ||A||_F^2
    Y, W, fro2 = passes.matmul_rmatmul(data, X, frobenius=True)
    _check_first(data, fro2, Y, W)
    note = ""
    if q == "auto":
        q, note = _auto_power_iter(np.linalg.svd(W, compute_uv=False), k, l, n, krylov)
    blocks, Zs, Ws = [Y], [X], [W]
    # a Krylov basis of A lies in range(A): more than min(m, n) columns add nothing but memory,
    # so it is capped there (the last block trimmed); at the cap it spans range(A) and the SVD is exact
    cap, width = min(m, n), Y.shape[1]
    for i in range(q):
        if krylov and width >= cap:
            note = (note + "; " if note else "") + (f"Krylov basis capped at min(m, n) = {cap} columns after {i} "
                                                     f"of {q} iteration(s)")
            q = i
            break
        Z = _next_block(W, Zs, normalizer, krylov)
        if krylov and width + Z.shape[1] > cap:
            Z = Z[:, : cap - width]
        width += Z.shape[1]
        Y, W = passes.matmul_rmatmul(data, Z)  # the last W gives B without a read (below)
        if krylov:
            blocks, Zs, Ws = blocks + [Y], Zs + [Z], Ws + [W]
        else:
            blocks, Zs, Ws = [Y], [Z], [W]
    Zall, Wall = np.hstack(Zs), np.hstack(Ws)
    # Y.T Y = Z.T A.T A Z = Z.T W: the first CholeskyQR sweep needs no pass over Y
    G = Zall.T @ Wall
    G = (G + G.T) / 2
    fast = _ritz_in_basis(data, blocks, G, Wall, k)
    if fast is not None:
        return (*fast, None, fro2, q, note)
    Q, R = orthonormalize(data, blocks, gram=G, store=False)
    d = np.abs(np.diag(R))
    kappa = np.linalg.cond(R) if d.min() > 0 else np.inf
    if kappa <= _KAPPA_NO_READ:
        BT = scipy.linalg.solve_triangular(R, Wall.T, trans="T", lower=False).T  # A.T Q = W R^-1
    else:
        if data.cached:
            Q = data.persist(Q)
        BT = passes.rmatmul(data, Q)  # final read: B = Q.T A, exactly
        note = (note + "; " if note else "") + f"basis condition ~{kappa:.1e}: B = Q.T A formed by a last read"
    U, s, Vt, sall = _svd_of_qb(data, Q, BT, k)
    return U, s, Vt, sall, fro2, q, note


def svd(A, rank=None, *, tol=None, method="auto", n_oversamples=10, n_power_iter="auto",
        power_iteration_normalizer="auto", seed=None) -> SVDResult:
    """Randomized truncated SVD, out of core: ``A ~ U diag(s) Vt``.

    Parameters
    ----------
    A : numpy array, dask array (row-, column- or 2-D chunked; tall or wide), zarr array or path
    rank : int, optional
        Target rank ``k`` (positional or keyword, as in :func:`qb` and :func:`nystrom`).
        Exactly one of ``rank`` and ``tol``.
    tol : float, optional
        Relative Frobenius tolerance: the smallest rank with estimated
        ``||A - U diag(s) Vt||_F <= tol ||A||_F`` (blocked QB, see :func:`qb`).
    method : {"auto", "rsvd", "block_krylov", "single_pass"}
        ``auto``: ``qb`` for ``tol``; otherwise ``block_krylov`` when the first sketch shows
        slow decay, ``rsvd`` when fast (the reason is recorded).
    n_oversamples : int
        ``l = rank + n_oversamples`` columns per block.
    n_power_iter : int or "auto"
        Power (``rsvd``) or Krylov (``block_krylov``) iterations; ``auto`` reads the decay
        of the first sketch (0 for fast decay, up to 6). The Krylov basis is capped at
        ``min(m, n)`` columns (it then spans the range of ``A``): iterations beyond that
        are not run, and ``n_power_iter`` in the result says how many were.
    power_iteration_normalizer : {"auto", "QR", "LU", "none"}
        How the small ``n x l`` factor is normalised between iterations (``auto`` = QR).
        The tall factor is always orthonormalised on the backend (shifted CholeskyQR3).
    seed : None, int, SeedSequence or Generator

    Returns
    -------
    SVDResult
        ``U`` stays a dask array for lazy input (``Vt`` for a wide one), and is this rank's
        rows on the MPI backend; ``U``, ``s``, ``Vt`` in ``A``'s floating dtype. For ``A = 0``:
        ``s = 0`` and ``U``, ``Vt`` the first columns/rows of the identity (any orthonormal
        pair is an SVD of the zero matrix; ``tol`` mode returns rank 1).

    Notes
    -----
    Reads of ``A`` (``passes``), with ``q`` power or Krylov iterations and ``l = rank +
    n_oversamples``:

    * ``rsvd``: ``q + 1``. Read 1 forms ``Y = A X`` and ``W = A.T Y`` (and ``||A||_F^2``) for a
      Gaussian ``X`` (``n x l``); each power step ``Z = orth(W)``, ``Y = A Z``, ``W = A.T Y`` is
      one read (:func:`~distsketch.passes.matmul_rmatmul`). ``Y = Q R`` is orthonormalised on
      the backend by CholeskyQR2 whose first Gram ``Y.T Y = Z.T W`` comes from the small
      factors (one sweep over ``Y``, none over ``A``; shifted CholeskyQR3 when ill-conditioned),
      and ``B.T = A.T Q = W R^{-1}`` needs no read when ``kappa(R) <= 1e4`` (rounding
      ``~ kappa eps ||A||``); above that (fast decay, rank-deficient ``A``) a last read forms
      ``B = Q.T A`` exactly: ``q + 2`` reads, said in ``reason`` [1]_.
    * ``block_krylov``: ``q + 1`` (or ``q + 2``, as for ``rsvd``), keeping every block
      ``[Y_0 .. Y_q]`` (a basis of ``(q + 1) l`` columns, capped at ``min(m, n)``) [2]_.
    * ``single_pass``: 1. ``Y = A Omega``, ``W = Psi A`` and ``Theta A`` (10 rows) in one read;
      ``A ~ Q X`` with ``X = (Psi Q)^+ W`` [3]_.
    * ``tol``: the blocked QB of :func:`qb` (one read per block of 32 columns, plus one).

    Error estimates (``error_estimate``, of ``||A - U diag(s) Vt||_F``): for ``rsvd``,
    ``block_krylov`` and ``tol``, ``sqrt(max(||A||_F^2 - sum_i s_i^2, 0))``, exact for an
    orthonormal ``Q`` and ``B = Q.T A`` (its rounding floor is about ``sqrt(eps) ||A||_F``);
    for ``single_pass``, ``||Theta A - (Theta Q) X_k||_F``, an unbiased estimate of the squared
    error's root since ``E ||Theta M||_F^2 = ||M||_F^2`` for ``Theta`` with ``N(0, 1/10)``
    entries ([4]_, section 6). ``auto`` models the Frobenius excess after ``q`` steps from the
    first sketch's decay (Halko, Martinsson, Tropp [1]_, Thm 10.5) and takes the smallest ``q``
    with ``sqrt(1 + excess) <= 1.05``; ``reason`` quotes the decay it read.

    Reads against columns: out of core, a read of ``A`` (decoding the store) costs more than the
    flops of many more columns, so for a given accuracy a wider block with fewer iterations is
    often faster. For 200,000 x 1,000 with ``s_i = i^-0.5`` and rank 50
    (``scripts/bench/lowrank.py``), ``block_krylov`` with ``n_power_iter=1`` reaches
    error/optimal 1.014 with ``n_oversamples=10``, 1.004 with 40 and 1.002 with 60, all in
    2 reads; ``n_power_iter=2`` with 10 reaches 1.0009 in 3 reads. ``auto`` keeps
    ``n_oversamples`` as given: it only chooses the iterations.

    Data near overflow or underflow (``||A||_F^2`` outside ``[1e-280, 1e280]``, entries
    of ``1e200`` or ``1e-300``) is detected after the first pass and the computation rerun
    on ``2^-e A`` (an exact scaling; ``e`` from one pass), so such data costs two passes
    more; ``s``, ``error_estimate`` and ``norm_fro`` are scaled back. float32 data gives
    float32 ``U``, ``s``, ``Vt`` (the small factors are computed in float64).

    References
    ----------
    .. [1] N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with randomness:
       probabilistic algorithms for constructing approximate matrix decompositions", SIAM
       Review 53(2), 2011. arXiv:0909.4061.
    .. [2] C. Musco, C. Musco, "Randomized block Krylov methods for stronger and faster
       approximate singular value decomposition", NeurIPS 2015. arXiv:1504.05477.
    .. [3] J. A. Tropp, A. Yurtsever, M. Udell, V. Cevher, "Practical sketching algorithms for
       low-rank matrix approximation", SIAM J. Matrix Anal. Appl. 38(4), 2017. arXiv:1609.00048.
    .. [4] J. A. Tropp, A. Yurtsever, M. Udell, V. Cevher, "Streaming low-rank matrix
       approximation with an application to scientific simulation", SIAM J. Sci. Comput. 41(4),
       2019. arXiv:1902.08651.

    Raises
    ------
    ParameterError
        Both or neither of ``rank``/``tol``; ``rank`` outside ``[1, min(m, n)]``;
        ``tol`` outside ``(0, 1)``; unknown method or normaliser.
    NonFiniteError
        NaN/Inf in ``A``, found in the first pass.

    Examples
    --------
    >>> import numpy as np, distsketch
    >>> A = np.random.default_rng(0).standard_normal((2000, 300)) * np.logspace(0, -4, 300)
    >>> r = distsketch.svd(A, 10, seed=0)               # rank positional or keyword (rank=10)
    >>> sv = np.linalg.svd(A, compute_uv=False)
    >>> err = np.linalg.norm(A - (r.U * r.s) @ r.Vt)    # within 5% of the optimal rank-10 error
    >>> bool(err <= 1.05 * np.sqrt(np.sum(sv[10:] ** 2))), bool(np.allclose(r.s, sv[:10], rtol=0.05))
    (True, True)
    >>> bool(abs(r.error_estimate - err) <= 1e-6 * np.linalg.norm(A)), r.passes == r.n_power_iter + 1
    (True, True)
    >>> distsketch.svd(A.astype(np.float32), 10, seed=0).U.dtype
    dtype('float32')
    """
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; expected one of {METHODS}")
    if power_iteration_normalizer not in NORMALIZERS:
        raise ParameterError(f"power_iteration_normalizer must be one of {NORMALIZERS}; "
                             f"got {power_iteration_normalizer!r}")
    _check_power_iter(n_power_iter, allow_auto=True)
    _check_oversamples(n_oversamples)
    data, wide = _prepare(A)
    m, n = data.shape
    _check_rank_tol(rank, tol, m, n)
    seed = resolve_seed(seed)
    normalizer = "QR" if power_iteration_normalizer == "auto" else power_iteration_normalizer

    if tol is not None and method not in ("auto", "rsvd"):
        raise ParameterError(f"tol mode runs the blocked QB (method 'auto' or 'rsvd'); got {method!r}")
    try:
        res, scale = _rescaled(lambda d: _svd_run(d, wide, rank, tol, method, n_oversamples, n_power_iter,
                                                  normalizer, seed), data,
                               _dense_flops(m, n, rank, n_oversamples, n_power_iter))
    except _Zero as z:
        k = int(rank) if rank is not None else 1
        U = _eye_columns(data, z.Y, k)
        Vt = np.eye(n)[:k]
        return _finish(data, wide, U, np.zeros(k), Vt, 0.0, method if method != "auto" else "rsvd",
                       "A is zero: s = 0 and U, Vt are the first columns of the identity (any orthonormal pair "
                       "is an SVD of 0)", 0, seed, 0.0)
    if scale == 1.0:
        return res
    e = -round(math.log2(scale))
    with np.errstate(over="ignore"):
        big = not np.all(np.isfinite(res.s / scale))
    if big:
        raise NonFiniteError(f"the singular values of A (up to {res.s[0]:.6g} x 2^{e}) exceed the float64 range "
                             "although its entries do not; scale A down (A / 2**k) and the singular values up")
    return dataclasses.replace(res, s=res.s / scale, error_estimate=res.error_estimate / scale,
                               norm_fro=res.norm_fro / scale, passes=data.passes,
                               reason=res.reason + f"; A scaled by 2^{-e} internally (entries up to ~2^{e} "
                                                   "over- or underflow its Gram products): 2 extra passes")


def _svd_run(data, wide, rank, tol, method, n_oversamples, n_power_iter, normalizer, seed):
    m, n = data.shape
    if tol is not None:
        res = _qb_run(data, None, tol, 32, min(m, n), seed)  # scaled units: svd() un-scales
        U, s, Vt, sall = _svd_of_qb(data, res.Q, res.B.T, res.B.shape[0])
        # smallest k whose estimated error meets tol. The estimate ||A||_F^2 - sum s_j^2 cancels:
        # below 100 eps ||A||_F^2 it is rounding (its sign and size depend on the summation order),
        # so a tol under relative sqrt(100 eps) is never reported as met, and the rank stops there
        fro2 = res.norm_fro**2
        floor2 = 100 * np.finfo(np.float64).eps * fro2
        tail = fro2 - np.cumsum(sall**2)
        ok = np.flatnonzero(tail <= max((tol * res.norm_fro) ** 2, floor2))
        k = int(ok[0]) + 1 if len(ok) else len(sall)
        U, s, Vt = apply_right(data, U, np.eye(U.shape[1])[:, :k]), s[:k], Vt[:k]
        est = _estimate(fro2, s)
        why = f"tol={tol}: blocked QB to {res.B.shape[0]} columns, rank {k} kept"
        if not (est <= tol * res.norm_fro and (tol * res.norm_fro) ** 2 >= floor2):
            # the QB stopped first (at its rounding floor or at min(m, n)), or tol is below what the
            # estimate resolves
            why += (f"; tol NOT reached: the estimated relative error is {est / res.norm_fro:.3g} (the estimate "
                    f"resolves relative errors down to ~{math.sqrt(100 * np.finfo(np.float64).eps):.1e}, where the "
                    "QB also stops: rounding hides the rest)")
        return _finish(data, wide, U, s, Vt, est, "qb", why, 0, seed, res.norm_fro)

    k = int(rank)
    l = min(k + int(n_oversamples), n, m)
    if method == "single_pass":
        return _single_pass(data, wide, k, l, seed)
    # auto decides after the first read: block Krylov when iterations are needed, rsvd otherwise
    U, s, Vt, _, fro2, q_used, note = _rsvd_core(data, k, l, n_power_iter, normalizer, seed,
                                                 krylov=method in ("block_krylov", "auto"))
    meth = method
    if method == "auto":
        meth = "block_krylov" if q_used > 0 else "rsvd"
        reason = (f"auto: {note}; block Krylov with {q_used} iteration(s) (fewer reads than power iteration "
                  "for the same accuracy)" if q_used else f"auto: {note}; the range sketch alone suffices")
    else:
        reason = f"requested; {q_used} iteration(s)" + (f" ({note})" if note else "")
    return _finish(data, wide, U, s, Vt, _estimate(fro2, s), meth, reason, q_used, seed, math.sqrt(fro2))


def _finish(data, wide, U, s, Vt, est, method, reason, q, seed, fro):
    # U in the caller's family (numpy, lazy dask, or this MPI rank's rows), in the data's dtype
    U = data.output(U, dtype=data.dtype)
    s, Vt = np.asarray(s).astype(data.dtype), np.asarray(Vt).astype(data.dtype)
    if wide:  # we factored A.T = U s Vt, so A = Vt.T s U.T
        U, Vt = Vt.T, U.T
    return SVDResult(U=U, s=s, Vt=Vt, passes=data.passes, error_estimate=est, method=method, reason=reason,
                     n_power_iter=q, seed=seed, norm_fro=fro)


def _single_pass(data, wide, k, l, seed):
    m, n = data.shape
    l2 = min(2 * l + 1, m)
    s_test = 10
    omega = make_operator("gaussian", l, n, seed=seed, stream=0)
    psi = make_operator("gaussian", l2, m, seed=seed, stream=1)
    theta = make_operator("gaussian", s_test, m, seed=seed, stream=2)
    Y, (W, TA), fro2 = passes.sketch_both_sides(data, omega, (psi, theta))
    _check_first(data, fro2, Y, W, TA)
    Q, _ = orthonormalize(data, Y)
    _, (PQ, TQ) = data.dist_pass(passes.K_DIST_LEFT_APPLY, dist=(Q,), small=((psi, theta),))
    X = np.linalg.lstsq(PQ, W, rcond=None)[0]  # X = (Psi Q)^+ Psi A
    Ux, sx, Vt = scipy.linalg.svd(X, full_matrices=False)
    U = apply_right(data, Q, Ux[:, :k])
    Xk = (Ux[:, :k] * sx[:k]) @ Vt[:k]
    est = float(np.linalg.norm(TA - TQ @ Xk))  # Theta has N(0, 1/s) entries: E||Theta M||^2 = ||M||^2
    return _finish(data, wide, U, sx[:k], Vt[:k], est, "single_pass",
                   f"one read: range sketch l={l}, co-range sketch {l2}, test sketch {s_test}", 0, seed,
                   math.sqrt(fro2))


def _hstack(data, Qs):
    """``[Q_1 .. Q_k]`` side by side, stored (every later block reads it twice)."""
    (Q,), _ = data.dist_pass(passes.K_DIST_CHAIN, dist=tuple(Qs), small=((),),
                             dist_out=((sum(q.shape[1] for q in Qs), np.float64),))
    return data.persist(Q)


def _check_oversamples(n_oversamples):
    if (isinstance(n_oversamples, bool) or not isinstance(n_oversamples, (int, np.integer))
            or n_oversamples < 0):
        raise ParameterError(f"n_oversamples must be a non-negative integer; got {n_oversamples!r}")


def _check_power_iter(n_power_iter, allow_auto=False):
    ok = (allow_auto and n_power_iter == "auto") or (
        isinstance(n_power_iter, (int, np.integer)) and not isinstance(n_power_iter, bool) and n_power_iter >= 0)
    if not ok:
        also = " or 'auto'" if allow_auto else ""
        raise ParameterError(f"n_power_iter must be a non-negative integer{also}; got {n_power_iter!r}")


def qb(A, rank=None, *, tol=None, block_size=None, n_power_iter=0, seed=None, max_rank=None) -> QBResult:
    """Blocked randomized QB: ``A ~ Q B`` to a rank or a relative Frobenius tolerance.

    Parameters
    ----------
    A : numpy array, dask array, zarr array or path, or a :class:`~distsketch.backends.RowData`
        Read in row blocks as given: ``Q`` has ``m`` rows (a wide ``A`` is not transposed here).
    rank : int, optional
        Number of columns of ``Q`` (positional or keyword, as in :func:`svd` and :func:`nystrom`).
        Exactly one of ``rank`` and ``tol``.
    tol : float, optional
        Relative Frobenius tolerance: stop at the first block with estimated
        ``||A - Q B||_F <= tol ||A||_F``.
    block_size : int, optional
        Columns per block (default ``max(10, rank // 4)``, or 32 for ``tol``).
    n_power_iter : int
        Power iterations per block on the residual ``A - Q B`` (default 0). Each block then
        costs ``n_power_iter + 1`` more reads of ``A``; worth it when the spectrum decays slowly.
    seed : None, int, SeedSequence or Generator
    max_rank : int, optional
        Cap on the columns of ``Q`` in ``tol`` mode (default ``min(m, n)``).

    Returns
    -------
    QBResult
        ``Q`` (``m x k``, orthonormal columns: numpy, a lazy dask array or this MPI rank's rows,
        following ``A``) and ``B = Q.T A`` (``k x n``, numpy), both in ``A``'s floating dtype
        (float32 stays float32); ``passes``; ``error_estimate`` (of ``||A - Q B||_F``);
        ``norm_fro`` (``||A||_F``); ``history`` (columns and error estimate after each block).

    Raises
    ------
    ParameterError
        Both or neither of ``rank``/``tol``; ``rank`` outside ``[1, min(m, n)]``; ``tol``
        outside ``(0, 1)``; a bad ``block_size`` or ``n_power_iter``.
    NonFiniteError
        NaN/Inf in ``A``, found in the first pass.

    Notes
    -----
    Block ``i`` (Yu, Gu, Li [1]_, Alg. 2): ``Y_i = A Omega_i`` for a Gaussian ``Omega_i``
    (``n x b``); with ``q = n_power_iter``, ``q`` power steps on the residual,
    ``Z <- orth((A - Q B).T Y)``, ``Y <- A Z`` ([2]_, Alg. 4.4), where one read gives ``A Z`` and
    ``A.T A Z`` together and ``(A - Q B).T (A - Q B) Z = A.T A Z - B.T (Q.T A Z)`` (as
    ``Q.T A = B``); then ``Y_i`` is made orthogonal to the ``Q`` found so far (twice, for
    stability), orthonormalised on the backend (shifted CholeskyQR3, never gathered), and
    ``B_i = Q_i.T A``.

    Reads of ``A``: one for the first sketch (with ``||A||_F^2``), then per block one read that
    finishes it (``B_i``) and sketches the next block (:func:`~distsketch.passes.rmatmul_matmul`),
    plus ``q + 1`` with power iterations: ``1 + blocks (1 + (q + 1 if q else 0))`` in all.
    Data near overflow or underflow costs two more, as in :func:`svd`.

    Error estimate: ``E_i = ||A||_F^2 - sum_{j <= i} ||B_j||_F^2``, which equals
    ``||A - Q B||_F^2`` for an orthonormal ``Q`` and ``B = Q.T A``; ``error_estimate =
    sqrt(max(E, 0))``. Its rounding floor is about ``sqrt(eps) ||A||_F`` (``E`` is a difference
    of sums of squares). Blocks stop when ``E <= tol^2 ||A||_F^2``, when ``rank`` (or
    ``max_rank``) columns are reached, when ``E <= 100 eps ||A||_F^2``, or when a block lowers
    ``E`` by less than 1% (the estimate stopped falling).

    References
    ----------
    .. [1] W. Yu, Y. Gu, Y. Li, "Efficient randomized algorithms for the fixed-precision low-rank
       matrix approximation", SIAM J. Matrix Anal. Appl. 39(3), 2018. arXiv:1606.09402.
    .. [2] N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with randomness:
       probabilistic algorithms for constructing approximate matrix decompositions", SIAM
       Review 53(2), 2011. arXiv:0909.4061.

    Examples
    --------
    >>> import numpy as np, distsketch
    >>> A = np.random.default_rng(0).standard_normal((1000, 200)) * np.logspace(0, -6, 200)
    >>> r = distsketch.qb(A, tol=1e-3, seed=0)
    >>> err = np.linalg.norm(A - r.Q @ r.B) / np.linalg.norm(A)
    >>> bool(err <= 1e-3), bool(abs(r.error_estimate / np.linalg.norm(A) - err) < 1e-6)
    (True, True)
    >>> distsketch.qb(A.astype(np.float32), 20, seed=0).Q.dtype
    dtype('float32')
    """
    data = as_rowdata(A)
    m, n = data.shape
    _check_rank_tol(rank, tol, m, n)
    _check_power_iter(n_power_iter)
    seed = resolve_seed(seed)
    for name, v in (("block_size", block_size), ("max_rank", max_rank)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ParameterError(f"{name} must be a positive integer (or None for the default); got {v!r}")
    target = int(rank) if rank is not None else int(max_rank or min(m, n))
    b = int(block_size or (max(10, target // 4) if rank is not None else 32))
    try:
        res, scale = _rescaled(lambda d: _qb_run(d, rank, tol, b, target, seed, int(n_power_iter)), data,
                               n * (target + b) ** 2)
    except _Zero as z:  # A = 0: Q B = 0 exactly, with Q the first columns of the identity
        k = min(b, target)
        return QBResult(Q=data.output(_eye_columns(data, z.Y, k), dtype=data.dtype), B=np.zeros((k, n), data.dtype),
                        passes=data.passes, error_estimate=0.0, norm_fro=0.0,
                        history=({"block": 0, "columns": k, "error_estimate": 0.0},), seed=seed)
    if scale != 1.0:
        res = dataclasses.replace(res, B=res.B / res.B.dtype.type(scale), error_estimate=res.error_estimate / scale,
                                  norm_fro=res.norm_fro / scale, passes=data.passes)
    return dataclasses.replace(res, Q=data.output(res.Q, dtype=data.dtype), B=res.B.astype(data.dtype))


def _project_out(data, Qall, Y):
    """``Y - Q (Q.T Y)`` (no read of ``A``); returns it and ``C = Q.T Y``."""
    _, (C,) = data.dist_pass(passes.K_DIST_CROSS, dist=(Qall, Y))
    (Y,), _ = data.dist_pass(passes.K_DIST_PROJECT, dist=(Y, Qall), small=(C,), dist_out=((Y.shape[1], np.float64),))
    return Y, C


def _residual_power(data, Y, Qall, B, q):
    """``q`` power steps on the residual ``A - Q B`` from ``Y = A Omega``: ``q + 1`` reads.

    Invariant: ``Z`` spans ``((A - QB).T (A - QB))^j Omega`` (normalised by QR), and
    ``(A - QB).T (A - QB) Z = W - B.T (Q.T Y)`` with ``Y = A Z`` and ``W = A.T Y`` from one read.
    """
    if Qall is not None:
        Y, _ = _project_out(data, Qall, Y)  # Y = (A - Q B) Omega, so A.T Y = (A - Q B).T Y
    W = passes.rmatmul(data, Y)
    for j in range(q):
        Z = np.linalg.qr(W)[0]
        if j == q - 1:
            return passes.matmul(data, Z)  # the last step needs no A.T image
        Y, W = passes.matmul_rmatmul(data, Z)
        if Qall is not None:
            _, C = _project_out(data, Qall, Y)
            W = W - B.T @ C
    return Y


def _qb_run(data, rank, tol, b, target, seed, q=0):
    m, n = data.shape
    Qs, Bs, history = [], [], []
    Y, fro2 = passes.right_sketch(data, make_operator("gaussian", min(b, target), n, seed=seed, stream=0),
                                  frobenius=True)
    _check_first(data, fro2, Y)
    E = fro2
    floor = 100 * np.finfo(np.float64).eps * fro2
    i = 0
    while True:
        Qall = None if not Qs else Qs[0] if len(Qs) == 1 else _hstack(data, Qs)
        if q:
            Y = _residual_power(data, Y, Qall, np.vstack(Bs) if Bs else None, q)
        if Qall is not None:
            for _ in range(2):  # Y -= Q (Q.T Y), twice
                Y, _ = _project_out(data, Qall, Y)
            Y = data.persist(Y)
        Qi, _ = orthonormalize(data, Y)
        Qi = data.persist(Qi)  # used by every later block: stored once, not recomputed
        done = sum(q_.shape[1] for q_ in Qs) + Qi.shape[1]
        nb = min(b, target - done)
        if nb > 0:
            Om = _gaussian_block(n, nb, seed, i + 1)
            BiT, Y = passes.rmatmul_matmul(data, Qi, Om)  # one read: B_i and the next sketch
        else:
            BiT = passes.rmatmul(data, Qi)
        Qs.append(Qi)
        Bs.append(BiT.T)
        E_new = E - float(np.sum(BiT**2))
        history.append({"block": i, "columns": done, "error_estimate": math.sqrt(max(E_new, 0.0))})
        stalled = E_new > 0.99 * E and i > 0
        E = E_new
        i += 1
        if nb <= 0 or (tol is not None and E <= (tol**2) * fro2) or E <= floor or stalled:
            break
    Q = Qs[0] if len(Qs) == 1 else _hstack(data, Qs)
    B = np.vstack(Bs)
    return QBResult(Q=Q, B=B, passes=data.passes, error_estimate=math.sqrt(max(E, 0.0)), norm_fro=math.sqrt(fro2),
                    history=tuple(history), seed=seed)


def _check_symmetric(data):
    """Compare three ``128 x 128`` block pairs ``A[I, J]`` and ``A[J, I].T`` (read with
    :meth:`RowData.peek`, before any pass)."""
    n = data.shape[0]
    if data.shape[0] != data.shape[1]:
        raise ShapeError(f"nystrom needs a square symmetric matrix; got shape {data.shape}")
    b = min(n, 128)
    rng = np.random.default_rng(0)
    picks = [(0, 0)] + [(int(rng.integers(0, max(1, n - b + 1))), int(rng.integers(0, max(1, n - b + 1))))
                        for _ in range(2)]
    for i, j in picks:
        X = data.peek(slice(i, i + b), slice(j, j + b))
        Yt = data.peek(slice(j, j + b), slice(i, i + b))
        scale = max(np.abs(X).max(), np.abs(Yt).max(), np.finfo(float).tiny)
        diff = np.abs(X - Yt.T)
        # float32 data is symmetric to its own rounding at best
        if diff.max() > max(1e-10, 10 * np.finfo(X.dtype).eps) * scale:
            r, c = np.unravel_index(np.argmax(diff), diff.shape)
            raise ParameterError(
                f"nystrom needs a symmetric positive semidefinite matrix, but A[{i + r}, {j + c}] = "
                f"{X[r, c]:.6g} differs from A[{j + c}, {i + r}] = {Yt[c, r]:.6g}; use svd() for general matrices")


def nystrom(A, rank, *, n_oversamples=10, n_power_iter="auto", seed=None) -> NystromResult:
    """Stabilised randomized Nystrom approximation of a symmetric PSD matrix, with power iterations.

    Parameters
    ----------
    A : numpy array, dask array, zarr array or path, or a :class:`~distsketch.backends.RowData`
        Square, symmetric positive semidefinite. Symmetry is checked on three ``128 x 128``
        block pairs before any pass, and on ``Omega.T A Omega`` after; definiteness only as far as
        ``Omega.T (A + nu I) Omega`` shows it (its Cholesky must exist). An indefinite ``A`` whose
        negative part that product does not show is not detected, and its ``lam`` are then not
        lower bounds of ``A``'s eigenvalues.
    rank : int
        Number ``k`` of eigenpairs (positional or keyword, as in :func:`svd` and :func:`qb`).
    n_oversamples : int
        ``l = k + n_oversamples`` columns in the test matrix.
    n_power_iter : int or "auto"
        Power iterations ``q``: the test matrix is ``orth(A^(2q) Omega)`` (one iteration is one
        product with ``A.T A = A^2``, as in :func:`svd`). ``"auto"`` (default) reads the decay of the
        first sketch, as :func:`svd` does: 0 for fast decay (one read in all), up to 6.
    seed : None, int, SeedSequence or Generator

    Returns
    -------
    NystromResult
        ``U`` (``n x k``, orthonormal columns: numpy, a lazy dask array or this MPI rank's rows,
        following ``A``), ``lam`` (the ``k`` eigenvalue estimates, descending), both in ``A``'s
        floating dtype (float32 stays float32); ``passes``; ``shift`` (``nu``);
        ``n_power_iter`` (the ``q`` used).

    Raises
    ------
    ShapeError
        ``A`` is not square.
    ParameterError
        ``A`` is not symmetric or (as far as the sketch shows) not positive semidefinite; ``rank``
        outside ``[1, n]``; a bad ``n_power_iter`` or ``n_oversamples``.
    NonFiniteError
        NaN/Inf in ``A``, found in the first pass.

    Notes
    -----
    With ``Omega`` Gaussian (``n x l``) and ``q`` power iterations, the test matrix is
    ``Omega_q = orth(A^2 ... orth(A^2 Omega))``; ``Y = A Omega_q``; shift ``nu = eps ||Y||_F``;
    ``Y_nu = Y + nu Omega_q``; ``C = chol(Omega_q.T Y_nu)``; ``Y_nu C^{-1} = Q R`` (on the
    backend: ``Q`` is never gathered); ``R = U_R S V.T``; ``A ~ (Q U_R) diag(max(S^2 - nu, 0))
    (Q U_R).T``, the stabilised Nystrom approximation of Tropp, Yurtsever, Udell, Cevher [1]_
    (Alg. 3; RandLAPACK's REVD2 [3]_) applied to the test matrix ``Omega_q`` (power iteration
    before Nystrom, as in [2]_).

    Reads of ``A``: ``q + 1``. Each power step is one read computing ``A Z`` and
    ``A.T (A Z) = A^2 Z`` together; for ``"auto"`` the first read is such a step (its ``A Omega``
    serves as ``Y`` when the decay needs no iteration, so fast decay costs one read); a last read
    forms ``Y``. Data near overflow or underflow costs two more, as in :func:`svd`.

    Error: no a-posteriori estimate is returned. ``A - A_hat`` is positive semidefinite, and for
    ``q = 0`` ``E ||A - A_hat||_* <= (1 + k / (p - 1)) sum_{j > k} lambda_j`` with
    ``p = l - k`` ([1]_); power iterations shrink the tail's weight by
    ``(lambda_j / lambda_k)^(4q)``. The eigenvalues are estimates from below. Without
    iterations, slowly decaying spectra (``lambda_j = j^-1/2``) give top eigenvalues tens of
    percent low; ``"auto"`` chooses iterations there.

    References
    ----------
    .. [1] J. A. Tropp, A. Yurtsever, M. Udell, V. Cevher, "Fixed-rank approximation of a
       positive-semidefinite matrix from streaming data", NeurIPS 2017. arXiv:1706.05736.
    .. [2] P.-G. Martinsson, J. A. Tropp, "Randomized numerical linear algebra: foundations and
       algorithms", Acta Numerica 29, 2020. arXiv:2002.01387.
    .. [3] R. Murray, J. Demmel, M. W. Mahoney et al., "Randomized numerical linear algebra: a
       perspective on the field with an eye to software", 2023. arXiv:2302.11474.

    Examples
    --------
    >>> import numpy as np, distsketch
    >>> V = np.linalg.qr(np.random.default_rng(0).standard_normal((500, 500)))[0]
    >>> A = (V / np.sqrt(np.arange(1, 501))) @ V.T        # eigenvalues j^-1/2: slow decay
    >>> A = (A + A.T) / 2
    >>> top = np.linalg.eigvalsh(A)[::-1][:10]
    >>> r0 = distsketch.nystrom(A, 10, n_power_iter=0, seed=0)   # one read: ~60% low here
    >>> bool(np.all(r0.lam < 0.5 * top))
    True
    >>> r = distsketch.nystrom(A, 10, seed=0)                   # "auto": q = 2, three reads
    >>> bool(np.all(np.abs(r.lam - top) <= 0.03 * top)), r.n_power_iter, r.passes
    (True, 2, 3)
    """
    data = as_rowdata(A)
    _check_symmetric(data)
    n = data.shape[0]
    if isinstance(rank, bool) or int(rank) != rank or not 1 <= rank <= n:
        raise ParameterError(f"rank must be an integer in [1, n={n}]; got {rank!r}")
    _check_power_iter(n_power_iter, allow_auto=True)
    _check_oversamples(n_oversamples)
    seed = resolve_seed(seed)
    try:
        res, scale = _rescaled(lambda d: _nystrom_run(d, rank, n_oversamples, n_power_iter, seed), data,
                               _dense_flops(n, n, rank, n_oversamples, 0))
    except _Zero as z:  # A = 0: lam = 0, U the first columns of the identity
        U = _eye_columns(data, z.Y, int(rank))
        return NystromResult(U=data.output(U, dtype=data.dtype), lam=np.zeros(int(rank), data.dtype),
                             passes=data.passes, shift=0.0, seed=seed, n_power_iter=0)
    if scale != 1.0:
        res = dataclasses.replace(res, lam=res.lam / scale, shift=res.shift / scale, passes=data.passes)
    return dataclasses.replace(res, U=data.output(res.U, dtype=data.dtype), lam=res.lam.astype(data.dtype))


def _nystrom_run(data, rank, n_oversamples, q, seed):
    n = data.shape[0]
    k = int(rank)
    l = min(n, k + int(n_oversamples))
    Om = _gaussian_block(n, l, seed, 0)  # entries N(0, 1/l)
    if q == 0:
        Y, W = passes.matmul(data, Om), None
    else:
        Y, W = passes.matmul_rmatmul(data, Om)  # one read: A Omega and A^2 Omega
    ysq = float(data.dist_pass(passes.K_DIST_SUMSQ, dist=(Y,))[1][0][0])
    _check_first(data, ysq, Y, *(() if W is None else (W,)))
    if q == "auto":
        q = _auto_power_iter(np.linalg.svd(W, compute_uv=False), k, l, n, krylov=False)[0]
    if q > 0:
        for j in range(q):  # invariant: span(Om) = span(A^(2j) Omega)
            if j:
                _, W = passes.matmul_rmatmul(data, Om)
            Om = np.linalg.qr(W)[0]
        Y = passes.matmul(data, Om)  # the Nystrom read: Y = A Omega_q
        ysq = float(data.dist_pass(passes.K_DIST_SUMSQ, dist=(Y,))[1][0][0])
    eps = np.finfo(np.float64).eps
    # the shift of Tropp, Yurtsever, Udell, Cevher (2017): sqrt(n) eps ||Y|| (||Y||_F >= ||Y||_2 here);
    # eps ||Y||_F alone left the Cholesky below failing on PSD matrices with -5e-16 rounding eigenvalues
    nu = float(math.sqrt(n) * eps * math.sqrt(ysq))
    Od = data.distribute(Om, check=False)  # Omega_q beside the rows of A (no read of A)
    (Ynu,), _ = data.dist_pass(passes.K_DIST_PROJECT, dist=(Y, Od), small=(-nu * np.eye(l),),
                               dist_out=((l, np.float64),))  # Y_nu = Y + nu Omega_q
    _, (M,) = data.dist_pass(passes.K_DIST_CROSS, dist=(Od, Ynu))  # Omega_q.T Y_nu
    # Omega.T A Omega is symmetric for a symmetric A, to the rounding of its n-term sums: a larger
    # asymmetry is A's own (only three 128 x 128 block pairs were compared before the reads)
    asym = float(np.linalg.norm(M - M.T))
    om_f = float(np.linalg.norm(Om))
    if not asym <= 10 * n * eps * om_f * (math.sqrt(ysq) + nu * om_f):  # |sum of n terms| rounding, worst case
        raise ParameterError(f"nystrom needs a symmetric A: Omega.T A Omega differs from its transpose by {asym:.3g} "
                             f"(||Omega.T A Omega||_F = {float(np.linalg.norm(M)):.3g}), far beyond rounding. Use "
                             "distsketch.svd for a nonsymmetric A, or symmetrise it ((A + A.T) / 2)")
    M = (M + M.T) / 2
    try:
        C = scipy.linalg.cholesky(M, lower=False)
    except np.linalg.LinAlgError:
        w = np.linalg.eigvalsh(M)
        raise ParameterError(
            f"nystrom needs a positive semidefinite A: Omega.T (A + nu I) Omega has the eigenvalue {w[0]:.3g} "
            f"(largest {w[-1]:.3g}, shift nu = {nu:.3g}), so A has a negative eigenvalue beyond rounding. Use "
            "distsketch.svd, or distsketch.matfree.eigsh for the extreme eigenvalues of an indefinite A") from None
    B = apply_right(data, Ynu, scipy.linalg.solve_triangular(C, np.eye(l)))
    Q, R = orthonormalize(data, B)
    Ur, S, _ = scipy.linalg.svd(R)
    lam = np.maximum(S**2 - nu, 0.0)[:k]
    U = apply_right(data, Q, Ur[:, :k])
    return NystromResult(U=U, lam=lam, passes=data.passes, shift=nu, seed=seed, n_power_iter=int(q))
