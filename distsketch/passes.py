"""The fused passes every algorithm is written against; each is exactly one read of ``A``.

All of them are built from the single backend primitive
:meth:`distsketch.backends.RowData.row_pass`, so they run unchanged on numpy, Dask
and (later) MPI row blocks, and each call adds one to ``data.passes``.

=====================  ==========================================================
pass                   computes, in one read of ``A`` (and of the extra operands)
=====================  ==========================================================
``left_sketch``        ``S @ A`` and ``S @ b`` for every extra operand ``b``
``matmul``             ``A @ X`` (distributed, ``m`` rows)
``rmatmul``            ``A.T @ Y`` for distributed ``Y``
``matmul_rmatmul``     ``A @ X`` (distributed) and ``A.T @ (A @ X)`` together
``lsqr_step``          ``w = A v - alpha c u``, ``A.T w`` and ``||w||^2`` together
``lsqr_step_tiled``    the same over cache-sized row tiles (each tile read from memory once)
``gram``               ``A.T A`` and ``A.T b`` for every extra operand ``b``
``normal_gram``        ``A.T A`` (SYRK) and ``A.T b`` together, in float64
``col_norms``          the 2-norm of every column of ``A``
``right_sketch``       ``A @ Omega`` (distributed, ``m x d``) [and ``||A||_F^2``]
``rmatmul_matmul``     ``A.T @ Y`` and ``A @ X`` together (independent ``X``)
``sketch_both_sides``  ``A @ Omega``, ``Psi_j @ A`` for several ``Psi_j``, ``||A||_F^2``
``gram_matmat``        ``A.T @ (A @ X)`` for a small ``X`` (the Gram operator of matfree)
=====================  ==========================================================

Every per-block function is declared here as a :class:`Kernel` (the function and what a
backend may assume about it); the ``K_DIST_*`` kernels work on distributed operands only
(the thin ``m x k`` factors of the low-rank methods) and never read ``A``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .backends import RowData
from .operators import SketchOperator

__all__ = [
    "Kernel",
    "left_sketch",
    "matmul",
    "rmatmul",
    "matmul_rmatmul",
    "lsqr_step",
    "gram",
    "col_norms",
    "right_sketch",
    "rmatmul_matmul",
    "sketch_both_sides",
    "normal_gram",
    "lsqr_step_tiled",
    "gram_matmat",
]


def _2d(x):
    return x if x.ndim == 2 else x[:, None]


def _sumsq(X) -> float:
    """``sum(X**2)`` accumulated in float64 (``np.vdot`` of float32 data sums in float32: ~1e-6
    relative, which a Frobenius norm that decides a rank or an error estimate cannot afford)."""
    if X.dtype == np.float64:
        return float(np.vdot(X, X))
    return float(np.einsum("ij,ij->", X, X, dtype=np.float64)) if X.ndim == 2 else float(np.sum(
        np.square(X, dtype=np.float64)))


def _tmul(Ai, Y):
    """``Ai.T @ Y`` for a row block ``Ai`` (r x n) and a thin ``Y`` (r x k), C-ordered.

    Computed as ``(Y.T @ Ai).T``: OpenBLAS runs the transposed-left product of a C-ordered block
    with a thin right operand at well under its GEMM rate (one thread, r = 4,194, n = 1,000:
    19.7 ms against 13.3 ms for k = 60, 5.9 against 3.0 ms for k = 2; 1.2-2x over the shapes the
    passes use, ``scripts/bench/lowrank.py`` profile). A vector or single column is a GEMV,
    which runs at the same speed either way, and is left alone."""
    if Y.ndim == 1 or Y.shape[1] == 1:
        return Ai.T @ Y
    return np.ascontiguousarray((Y.T @ Ai).T)


# -- the kernel contract ----------------------------------------------------------------------
@dataclass(frozen=True)
class Kernel:
    """What a backend runs on each row block, and what it may assume about it.

    ``fn(A_i, r0, dist_i, *small) -> (dist_out_i, reduced_i)`` for a read of ``A``
    (:meth:`RowData.row_pass`), ``fn(r0, dist_i, *small)`` for a pass over distributed
    operands only (:meth:`RowData.dist_pass`). ``fn`` is a module-level function, so a
    kernel pickles to workers and tokenizes to the same Dask graph name in every process.

    Attributes
    ----------
    fn : callable
    propagates_nonfinite : bool
        Every output entry is a combination of the whole block with nonzero weights
        (``S A`` for a mixing ``S``, ``A v``, ``A.T A``): a NaN or Inf anywhere in ``A_i``
        shows in the outputs, so the finiteness check of the first pass scans the block
        only when an output is not finite (:func:`~distsketch.backends._protocol.run_kernel`).
    reduces : bool
        Whether ``reduced_i`` is non-empty. A lazy backend need not wait for a pass
        whose only outputs are distributed.
    """

    fn: Callable
    propagates_nonfinite: bool = False
    reduces: bool = True

    def __call__(self, *args):
        return self.fn(*args)

    @property
    def __name__(self):  # backends label progress and graph keys with it
        return self.fn.__name__

    @property
    def name(self) -> str:
        return self.fn.__name__.removeprefix("_k_")


# -- row kernels (one read of A): module-level so they pickle to workers -------------------
def _k_left_sketch(Ai, r0, dist, ops, dtype=None):
    if dtype is not None:
        Ai = Ai.astype(dtype, copy=False)
        dist = tuple(x.astype(dtype, copy=False) for x in dist)
    out = []
    for op in ops:
        out.append(op.apply(Ai, r0))
        out.extend(op.apply(_2d(x), r0) for x in dist)
    return (), tuple(out)


def _k_matmul(Ai, r0, dist, X):
    return (Ai @ X,), ()


def _k_rmatmul(Ai, r0, dist):
    return (), (_tmul(Ai, _2d(dist[0])),)


def _k_matmul_rmatmul(Ai, r0, dist, X):
    Y = Ai @ X
    return (Y,), (_tmul(Ai, Y),)


def _k_lsqr_step(Ai, r0, dist, v, alpha_c):
    # invariant: w = A v - alpha * u with u = c * u_raw, so beta u_new = w, beta = ||w||
    w = Ai @ v
    if alpha_c != 0.0:
        w -= alpha_c * _2d(dist[0])
    return (w,), (_tmul(Ai, w), np.array([np.vdot(w, w)]))


def _k_gram(Ai, r0, dist, right=None):
    B = Ai if right is None else right.right(Ai)  # B = A_i N for a right factor N
    return (), (B.T @ B,) + tuple(_tmul(B, _2d(x)) for x in dist)


def _k_col_norms(Ai, r0, dist):
    return (), (np.einsum("ij,ij->j", Ai, Ai),)


def _k_right_sketch(Ai, r0, dist, op):
    return (op.apply_right(Ai, 0),), ()


def _k_right_sketch_frob(Ai, r0, dist, op):
    return (op.apply_right(Ai, 0),), (np.array([_sumsq(Ai)]),)


def _k_matmul_rmatmul_frob(Ai, r0, dist, X):
    Y = Ai @ X
    return (Y,), (_tmul(Ai, Y), np.array([_sumsq(Ai)]))


def _k_rmatmul_matmul(Ai, r0, dist, X):
    return (Ai @ X,), (_tmul(Ai, _2d(dist[0])),)


def _k_single_pass(Ai, r0, dist, omega, psis):
    Y = omega.apply_right(Ai, 0)
    return (Y,), tuple(psi.apply(Ai, r0) for psi in psis) + (np.array([_sumsq(Ai)]),)


K_LEFT_SKETCH = Kernel(_k_left_sketch, propagates_nonfinite=True)
# a sampling operator (uniform rows) does not see every row: the block is scanned first
K_LEFT_SKETCH_SAMPLING = Kernel(_k_left_sketch)
K_MATMUL = Kernel(_k_matmul, propagates_nonfinite=True, reduces=False)
K_RMATMUL = Kernel(_k_rmatmul)  # A.T Y: a zero row of Y hides A's row
K_MATMUL_RMATMUL = Kernel(_k_matmul_rmatmul, propagates_nonfinite=True)
K_MATMUL_RMATMUL_FROB = Kernel(_k_matmul_rmatmul_frob, propagates_nonfinite=True)
K_LSQR_STEP = Kernel(_k_lsqr_step, propagates_nonfinite=True)
K_GRAM = Kernel(_k_gram, propagates_nonfinite=True)
K_COL_NORMS = Kernel(_k_col_norms, propagates_nonfinite=True)
K_RIGHT_SKETCH = Kernel(_k_right_sketch, propagates_nonfinite=True, reduces=False)
K_RIGHT_SKETCH_SAMPLING = Kernel(_k_right_sketch, reduces=False)
K_RIGHT_SKETCH_FROB = Kernel(_k_right_sketch_frob, propagates_nonfinite=True)
K_RMATMUL_MATMUL = Kernel(_k_rmatmul_matmul, propagates_nonfinite=True)
K_SINGLE_PASS = Kernel(_k_single_pass, propagates_nonfinite=True)


# -- distributed-operand kernels (no read of A): the thin factors of the low-rank methods ------
def _chain(dist, Ms):
    """``[Y_1 .. Y_k] M_1 M_2 ...``, the products applied left to right (one block)."""
    Z = dist[0] if len(dist) == 1 else np.hstack(dist)
    for M in Ms:
        Z = Z @ M
    return Z


def _k_dist_chain(r0, dist, Ms):
    return (_chain(dist, Ms),), ()


def _k_dist_chain_gram(r0, dist, Ms):
    Z = np.asarray(_chain(dist, Ms), dtype=np.float64)  # a float32 Y's first sweep: the Gram in float64
    return (), (Z.T @ Z,)


def _k_dist_chain_and_gram(r0, dist, Ms):
    Z = np.asarray(_chain(dist, Ms), dtype=np.float64)
    return (Z,), (Z.T @ Z,)


def _k_dist_left_apply(r0, dist, ops):
    return (), tuple(op.apply(dist[0], r0) for op in ops)


def _k_dist_project(r0, dist, C):
    Y, Q = dist
    return (Y - Q @ C,), ()


def _k_dist_cross(r0, dist):
    Q, Y = dist
    return (), (Q.T @ Y,)


def _k_dist_sumsq(r0, dist):
    return (), (np.array([_sumsq(dist[0])]),)


def _k_dist_shift(r0, dist, op, nu):
    return (dist[0] + nu * op.columns(r0, r0 + dist[0].shape[0]).T,), ()


K_DIST_CHAIN = Kernel(_k_dist_chain, reduces=False)
K_DIST_CHAIN_GRAM = Kernel(_k_dist_chain_gram)
K_DIST_CHAIN_AND_GRAM = Kernel(_k_dist_chain_and_gram)  # the product, stored, and its Gram
K_DIST_LEFT_APPLY = Kernel(_k_dist_left_apply)
K_DIST_PROJECT = Kernel(_k_dist_project, reduces=False)
K_DIST_CROSS = Kernel(_k_dist_cross)
K_DIST_SUMSQ = Kernel(_k_dist_sumsq)
K_DIST_SHIFT = Kernel(_k_dist_shift, reduces=False)


def _k_dist_eye(r0, dist, k):
    """Rows ``r0:r0+len(dist[0])`` of the first ``k`` columns of the identity."""
    rows = dist[0].shape[0]
    out = np.zeros((rows, k))
    idx = np.arange(r0, r0 + rows)
    hit = idx < k
    out[np.flatnonzero(hit), idx[hit]] = 1.0
    return (out,), ()


K_DIST_EYE = Kernel(_k_dist_eye, reduces=False)


# -- passes --------------------------------------------------------------------------------
def left_sketch(data: RowData, ops, extra=(), *, dtype=None) -> list[np.ndarray]:
    """``[S @ A, S @ b_1, ...]`` for each operator in ``ops`` (one read of ``A`` and the ``b``'s).

    ``ops`` is one :class:`SketchOperator` or a sequence of them (several independent
    sketches in the same read). Results are 2-D numpy arrays, in the data's dtype or in
    ``dtype`` when given (blocks are converted as they are read: a float32 matrix can
    be sketched in float64 without a float64 copy of it).
    """
    ops = (ops,) if isinstance(ops, SketchOperator) else tuple(ops)
    kernel = K_LEFT_SKETCH if all(op.mixes_all_rows for op in ops) else K_LEFT_SKETCH_SAMPLING
    small = (ops,) if dtype is None else (ops, np.dtype(dtype))
    _, red = data.row_pass(kernel, dist=tuple(extra), small=small)
    return list(red)


def _small(X, data):
    X = np.asarray(X)
    return _2d(X.astype(np.result_type(X.dtype, data.dtype), copy=False))


def matmul(data: RowData, X: np.ndarray):
    """``A @ X`` for a small ``n x k`` array ``X``; the result is distributed (``m x k``).

    Small operands keep their precision: a float64 ``X`` against float32 data gives a
    float64 product (the block is promoted as it is read).
    """
    X = _small(X, data)
    (Y,), _ = data.row_pass(K_MATMUL, small=(X,), dist_out=((X.shape[1], X.dtype),))
    return Y


def rmatmul(data: RowData, Y) -> np.ndarray:
    """``A.T @ Y`` for a distributed ``m x k`` operand ``Y``."""
    _, (Z,) = data.row_pass(K_RMATMUL, dist=(Y,))
    return Z


def matmul_rmatmul(data: RowData, X: np.ndarray, *, frobenius: bool = False):
    """``(A @ X, A.T @ A @ X)`` in one read: a whole power-iteration step.

    With ``frobenius=True`` also ``||A||_F^2``: ``(Y, Z, ||A||_F^2)``.
    """
    X = _small(X, data)
    if frobenius:
        (Y,), (Z, f) = data.row_pass(K_MATMUL_RMATMUL_FROB, small=(X,), dist_out=((X.shape[1], X.dtype),))
        return Y, Z, float(f[0])
    (Y,), (Z,) = data.row_pass(K_MATMUL_RMATMUL, small=(X,), dist_out=((X.shape[1], X.dtype),))
    return Y, Z


def lsqr_step(data: RowData, v: np.ndarray, u_raw=None, alpha_c: float = 0.0):
    """The fused LSQR step: ``w = A v - alpha_c * u_raw``, ``A.T w`` and ``||w||^2``.

    With ``u = c * u_raw`` (the unnormalised vector of the previous step and its
    scale), pass ``alpha_c = alpha * c``. Returns ``(w, A.T w, ||w||^2)`` with ``w``
    distributed; ``beta = ||w||`` and ``u_new = w / beta`` are left to the caller, so no
    extra sweep over ``m``-vectors is needed. With ``u_raw=None`` it is ``A v``.
    """
    v = _small(v, data)
    dist = () if u_raw is None else (u_raw,)
    (w,), (ATw, ww) = data.row_pass(
        K_LSQR_STEP, dist=dist, small=(v, float(alpha_c) if u_raw is not None else 0.0),
        dist_out=((v.shape[1], v.dtype),),
    )
    return w, ATw, float(ww[0])


def gram(data: RowData, extra=(), *, right=None) -> list[np.ndarray]:
    """``[B.T @ B, B.T @ b_1, ...]`` with ``B = A`` (or ``B = A N`` for a right factor), one read.

    ``right`` is any picklable object with a method ``right(A_i) -> A_i @ N`` (a
    preconditioner): the Gram matrix of ``A N`` is then formed block by block from
    ``A_i N``, never from ``A.T A``, so its conditioning is that of ``A N``.
    """
    _, red = data.row_pass(K_GRAM, dist=tuple(extra), small=() if right is None else (right,))
    return list(red)


def col_norms(data: RowData) -> np.ndarray:
    """Euclidean norm of each column of ``A``."""
    _, (sq,) = data.row_pass(K_COL_NORMS)
    return np.sqrt(sq)


def right_sketch(data: RowData, op: SketchOperator, *, frobenius: bool = False):
    """``A @ Omega`` with ``Omega = op.T`` (``n x d``); distributed ``m x d`` result.

    With ``frobenius=True`` also ``||A||_F^2`` from the same read: ``(Y, ||A||_F^2)``.
    """
    if frobenius:
        (Y,), (f,) = data.row_pass(K_RIGHT_SKETCH_FROB, small=(op,), dist_out=((op.d, data.dtype),))
        return Y, float(f[0])
    kernel = K_RIGHT_SKETCH if op.mixes_all_rows else K_RIGHT_SKETCH_SAMPLING
    (Y,), _ = data.row_pass(kernel, small=(op,), dist_out=((op.d, data.dtype),))
    return Y


def rmatmul_matmul(data: RowData, Y, X: np.ndarray):
    """``(A.T @ Y, A @ X)`` in one read, for a distributed ``Y`` and an unrelated small ``X``.

    Blocked QB uses it to finish one block (``B_i = Q_i.T A``) while starting the next
    (``A Omega_{i+1}``).
    """
    X = _small(X, data)
    (AX,), (ATY,) = data.row_pass(K_RMATMUL_MATMUL, dist=(Y,), small=(X,), dist_out=((X.shape[1], X.dtype),))
    return ATY, AX


def sketch_both_sides(data: RowData, omega: SketchOperator, psis):
    """``(A @ Omega, [Psi_j @ A ...], ||A||_F^2)`` in one read: the single-pass sketches."""
    (Y,), red = data.row_pass(K_SINGLE_PASS, small=(omega, tuple(psis)), dist_out=((omega.d, data.dtype),))
    return Y, list(red[:-1]), float(red[-1][0])


# -- the fused sketch + Gram read of the normal-equation least-squares path (lsq) -----------
def _k_normal_gram(Ai, r0, dist):
    """The upper triangle of ``A_i.T A_i`` (SYRK, half a GEMM's flops) and ``A_i.T b_i``, in float64."""
    Ai = np.asarray(Ai, dtype=np.float64)
    return (), (_syrk(Ai),) + tuple(_tmul(Ai, _2d(np.asarray(x, dtype=np.float64))) for x in dist)


def _syrk(X):
    """``X.T X`` in float64 by SYRK, the GIL released.

    numpy's matmul recognises ``X.T @ X`` on one C-ordered buffer and calls dsyrk (its upper
    triangle is bit for bit scipy's ``blas.dsyrk``'s, mirrored below), releasing the GIL, so the
    numpy backend's threads run their blocks' Grams in parallel. scipy's f2py BLAS wrappers
    hold the GIL: with them, two threads took as long as one.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # ||A||^2 beyond float64: the callers' scaling handles it
        return X.T @ X


K_NORMAL_GRAM = Kernel(_k_normal_gram, propagates_nonfinite=True)


def normal_gram(data: RowData, extra=()) -> tuple:
    """``(A.T A, [A.T b ...])`` in one read of ``A`` and the ``b``'s, in float64 whatever the data's dtype.

    The Gram matrix is formed with SYRK block by block (``m n^2`` flops, half of a GEMM),
    summed as upper triangles and symmetrised here: the normal-equation least-squares path
    (``lstsq(method="normal_cholqr")``) reads nothing else before its refinement.
    """
    _, red = data.row_pass(K_NORMAL_GRAM, dist=tuple(extra))
    return _symmetrize_upper(red[0]), list(red[1:])


# -- the LSQR step with cache-sized row tiles (lsq) --------------------------------------------
#: bytes of A per tile of :func:`lsqr_step_tiled`: small enough that the tile read by ``A_t v``
#: is still in cache for ``A_t.T w_t``, large enough for BLAS-2 at full speed
TILE_BYTES = 2 * 2**20
#: fewest rows per tile: ``A_t.T w_t`` is ``n`` dot products of the tile's length, which run far
#: below the memory rate when short (100,000 x 2,000 in memory, 2 threads: 131-row tiles gave
#: 11 GB/s, 1,024-row tiles 20 GB/s; at n = 200 and 500 the 2 MiB tiles already hold >= 500 rows
#: and larger ones were no faster)
TILE_MIN_ROWS = 1024


def _k_lsqr_step_tiled(Ai, r0, dist, v, alpha_c):
    # invariant, per tile t: w_t = A_t v - alpha_c u_t, and A.T w accumulates A_t.T w_t while
    # A_t is still in cache: one read of the block from memory instead of two
    rows = max(TILE_MIN_ROWS, TILE_BYTES // max(1, Ai.shape[1] * Ai.itemsize))
    dt = np.result_type(Ai.dtype, v.dtype)
    w = np.empty((Ai.shape[0], v.shape[1]), dtype=dt)
    z = np.zeros((Ai.shape[1], v.shape[1]), dtype=dt)
    ww = 0.0
    u = _2d(dist[0]) if alpha_c != 0.0 else None
    for s in range(0, Ai.shape[0], rows):
        At = Ai[s:s + rows]
        wt = At @ v
        if u is not None:
            wt -= alpha_c * u[s:s + rows]
        w[s:s + rows] = wt
        z += At.T @ wt
        ww += float(np.vdot(wt, wt))
    return (w,), (z, np.array([ww]))


K_LSQR_STEP_TILED = Kernel(_k_lsqr_step_tiled, propagates_nonfinite=True)


def lsqr_step_tiled(data: RowData, v: np.ndarray, u_raw=None, alpha_c: float = 0.0):
    """:func:`lsqr_step` computed tile by tile (``TILE_BYTES`` of rows): the same
    ``(w, A.T w, ||w||^2)`` up to rounding, with each block read from memory once."""
    v = _small(v, data)
    dist = () if u_raw is None else (u_raw,)
    (w,), (ATw, ww) = data.row_pass(
        K_LSQR_STEP_TILED, dist=dist, small=(v, float(alpha_c) if u_raw is not None else 0.0),
        dist_out=((v.shape[1], v.dtype),),
    )
    return w, ATw, float(ww[0])


# -- the Gram operator of the matrix-free methods (distsketch.matfree) -----------------------
def _k_gram_matmat(Ai, r0, dist, X):
    """``A_i.T (A_i X)``: the block's share of ``A.T A X`` (two thin GEMMs, never ``A_i.T A_i``)."""
    if Ai.dtype != X.dtype:
        Ai = Ai.astype(X.dtype, copy=False)
    return (), (_tmul(Ai, Ai @ X),)


K_GRAM_MATMAT = Kernel(_k_gram_matmat, propagates_nonfinite=True)


def gram_matmat(data: RowData, X: np.ndarray) -> np.ndarray:
    """``A.T @ (A @ X)`` for a small ``n x k`` array ``X``, in one read of ``A``.

    Nothing of ``m`` rows is kept: each block contributes ``A_i.T (A_i X)`` (``4 m_i n k``
    flops) to a sum taken in a fixed order. The product is computed in the dtype of ``X``
    promoted with the data's (a float64 ``X`` against float32 data gives float64).
    """
    X = _small(X, data)
    _, (Z,) = data.row_pass(K_GRAM_MATMAT, small=(X,))
    return Z


# -- rank-revealing factorizations: CQRRPT, interpolative decompositions, CUR (distsketch.lowrank) ----
# All in float64 (the sketches' pivoted QR and the preconditioned Gram need it; float32 data is
# promoted block by block as it is read). Reused from above: ``left_sketch`` (the column sketch
# ``S A`` and its test sketch ``Theta A``), ``K_DIST_CHAIN``/``K_DIST_CHAIN_GRAM`` (CholeskyQR
# sweeps over ``B``, in lowrank/_orth.py).
def _syrk_upper(B):
    """``B.T B`` in float64 (SYRK: half a GEMM's flops; callers read its upper triangle); zeros for an
    empty ``B``. See :func:`_syrk` (the GIL is released)."""
    if B.shape[1] == 0 or B.shape[0] == 0:
        return np.zeros((B.shape[1], B.shape[1]))
    return _syrk(B)


def _symmetrize_upper(G):
    """The symmetric matrix whose upper triangle is that of ``G`` (a sum of SYRK outputs)."""
    G = np.triu(G)
    return G + np.triu(G, 1).T


def _precondition(Ai, J, R11):
    """``A_i[:, J] R11^{-1}`` in float64 (row-wise backward-stable triangular solve).

    ``R11.T B.T = A_k.T`` is solved by ``dtrsm`` in place on the gathered columns (``A_k.T`` of a
    C-ordered ``A_k`` is Fortran-ordered: no copy besides the gather)."""
    import scipy.linalg.blas as blas

    Ak = np.asarray(Ai, dtype=np.float64).take(J, axis=1)
    if Ak.shape[1] == 0 or Ak.shape[0] == 0:
        return Ak
    return blas.dtrsm(1.0, R11, Ak.T, side=0, lower=0, trans_a=1, overwrite_b=1).T


def _k_cqrrpt_gram(Ai, r0, dist, J, T, R11, keep):
    """``B_i = A_i[:, J] R11^{-1}`` (kept when ``keep``), ``triu(B_i.T B_i)``, ``B_i.T A_i[:, T]``."""
    B = _precondition(Ai, J, R11)
    C = B.T @ np.asarray(Ai, dtype=np.float64)[:, T]
    return ((B,) if keep else ()), (_syrk_upper(B), C)


def _k_cqrrpt_gram2(Ai, r0, dist, J, R11, M):
    """Second step without a stored ``B``: ``triu((B_i M).T (B_i M))`` with ``M = Rc^{-1}``."""
    return (), (_syrk_upper(_precondition(Ai, J, R11) @ M),)


def _k_dist_trsm(r0, dist, Rt, dtype):
    """``B_i Rt^{-1}`` for upper triangular ``Rt``, cast to ``dtype`` (no read of ``A``)."""
    import scipy.linalg.blas as blas

    B = dist[0]
    if B.shape[1] == 0 or B.shape[0] == 0:
        return (B.astype(dtype),), ()
    # Rt.T Q.T = B.T, solved on a copy (B may be a stored operand that other tasks read)
    Q = blas.dtrsm(1.0, Rt, np.array(B, dtype=np.float64, order="C").T, side=0, lower=0, trans_a=1,
                   overwrite_b=1).T
    return (Q.astype(dtype, copy=False),), ()


def _k_right_two(Ai, r0, dist, om, th):
    """``(A_i Omega, A_i Theta)`` in float64 (``Omega = I`` when ``om`` is None: a float64 copy of ``A_i``)."""
    A64 = np.asarray(Ai, dtype=np.float64)
    return ((om.apply_right(A64, 0) if om is not None else A64.copy()), th.apply_right(A64, 0)), ()


def _k_cur_sketch(Ai, r0, dist, S, th, oms):
    """``A_i Omega`` for each ``Omega`` in ``oms`` (distributed; ``None``: a float64 copy of ``A_i``)
    and the partial sums of ``Theta A`` and ``S A``, float64. ``S=None``: a copy of ``A_i`` is one
    more distributed output instead of ``S A`` (no sketch smaller than ``A``)."""
    A64 = np.asarray(Ai, dtype=np.float64)
    douts = tuple(om.apply_right(A64, 0) if om is not None else A64.copy() for om in oms)
    douts += (A64.copy(),) if S is None else ()
    return douts, (th.apply(A64, r0),) + ((S.apply(A64, r0),) if S is not None else ())


def _k_cur_second(Ai, r0, dist, J, R11, rows, dtype):
    """``C_i = A_i[:, J]`` (kept), ``B_i = C_i R11^{-1}``: ``triu(B_i.T B_i)``, ``B_i.T A_i``, rows of ``A``."""
    A64 = np.asarray(Ai, dtype=np.float64)
    B = _precondition(A64, J, R11)
    R = np.zeros((len(rows), Ai.shape[1]))
    hit = (rows >= r0) & (rows < r0 + Ai.shape[0])
    R[hit] = A64[rows[hit] - r0]
    return (np.asarray(Ai)[:, J].astype(dtype, copy=False),), (_syrk_upper(B), B.T @ A64, R)


def _k_dist_residual(r0, dist, Qs):
    """Squared norm of each row of ``Y_i`` after projecting out ``span(Qs)`` (``l x j``, orthonormal)."""
    Y = dist[0]
    r = np.einsum("ij,ij->i", Y, Y)
    if Qs.shape[1]:
        P = Y @ Qs
        r = r - np.einsum("ij,ij->i", P, P)
    return (r[:, None],), ()


def _k_dist_take(r0, dist, idx):
    """Rows ``idx`` (global) of each distributed operand, as sums (other blocks add zeros)."""
    outs = []
    hit = (idx >= r0) & (idx < r0 + dist[0].shape[0])
    for x in dist:
        out = np.zeros((len(idx), x.shape[1]))
        out[hit] = x[idx[hit] - r0]
        outs.append(out)
    return (), tuple(outs)


def _k_dist_row_interp(r0, dist, Qi, Ri, dtype):
    """``X_i = Y_i Qi Ri^{-T}``, i.e. ``X = Y Y[idx]^+`` with ``Y[idx].T = Qi Ri``."""
    import scipy.linalg

    Z = dist[0] @ Qi
    X = scipy.linalg.solve_triangular(Ri, Z.T, lower=False, check_finite=False).T if Z.shape[1] else Z
    return (X.astype(dtype, copy=False),), ()


def _k_dist_row_resid(r0, dist, ZI):
    """``||Z_i - X_i Z[idx]||_F^2`` and ``||Z_i||_F^2``."""
    X, Z = dist
    E = Z - np.asarray(X, dtype=np.float64) @ ZI
    return (), (np.array([np.vdot(E, E)]), np.array([_sumsq(Z)]))


K_CQRRPT_GRAM = Kernel(_k_cqrrpt_gram, propagates_nonfinite=True)
K_CQRRPT_GRAM2 = Kernel(_k_cqrrpt_gram2, propagates_nonfinite=True)
K_DIST_TRSM = Kernel(_k_dist_trsm, reduces=False)
K_RIGHT_TWO = Kernel(_k_right_two, propagates_nonfinite=True, reduces=False)
K_CUR_SKETCH = Kernel(_k_cur_sketch, propagates_nonfinite=True)
K_CUR_SECOND = Kernel(_k_cur_second)  # rows of A are copied, not mixed: the block is scanned
K_DIST_RESIDUAL = Kernel(_k_dist_residual, reduces=False)
K_DIST_TAKE = Kernel(_k_dist_take)
K_DIST_ROW_INTERP = Kernel(_k_dist_row_interp, reduces=False)
K_DIST_ROW_RESID = Kernel(_k_dist_row_resid)


def cqrrpt_gram(data: RowData, cols, rest, R11, *, keep: bool = True):
    """``(B, B.T B, B.T A[:, rest])`` with ``B = A[:, cols] R11^{-1}``, in one read of ``A`` (float64).

    The second read of CQRRPT (:func:`distsketch.qrcp`) and of a refined column ID: ``B`` is
    formed block by block (TRSM), its Gram matrix by SYRK (summed as upper triangles and
    symmetrised here). ``B`` (``m x len(cols)``, distributed) is kept only with ``keep``;
    otherwise ``None`` is returned in its place.
    """
    cols, rest = np.asarray(cols, dtype=np.intp), np.asarray(rest, dtype=np.intp)
    R11 = np.asfortranarray(R11, dtype=np.float64)
    outs, (G, C) = data.row_pass(K_CQRRPT_GRAM, small=(cols, rest, R11, bool(keep)),
                                 dist_out=((len(cols), np.float64),) if keep else ())
    return (outs[0] if keep else None), _symmetrize_upper(G), C


def cqrrpt_gram2(data: RowData, cols, R11, M) -> np.ndarray:
    """``(B M).T (B M)`` with ``B = A[:, cols] R11^{-1}``, in one read of ``A`` (float64): the second
    Cholesky QR step of CQRRPT when ``B`` was not stored."""
    cols = np.asarray(cols, dtype=np.intp)
    _, (G,) = data.row_pass(K_CQRRPT_GRAM2, small=(cols, np.asfortranarray(R11, dtype=np.float64), M))
    return _symmetrize_upper(G)


def dist_trsm(data: RowData, B, Rt, *, dtype=np.float64):
    """``B Rt^{-1}`` for a distributed ``B`` and a small upper triangular ``Rt`` (no read of ``A``),
    cast to ``dtype``; lazy on a lazy backend."""
    Rt = np.asfortranarray(Rt, dtype=np.float64)
    (Q,), _ = data.dist_pass(K_DIST_TRSM, dist=(B,), small=(Rt, np.dtype(dtype)),
                             dist_out=((Rt.shape[1], np.dtype(dtype)),))
    return Q


def right_sketch_pair(data: RowData, omega, theta):
    """``(A @ Omega, A @ Theta)`` in one read of ``A``, both distributed and float64.

    ``omega=None`` stands for the identity (a float64 copy of ``A``: no sketch smaller than ``A``).
    The row interpolative decomposition's range sketch and its test sketch.
    """
    l = data.shape[1] if omega is None else omega.d
    (Y, Z), _ = data.row_pass(K_RIGHT_TWO, small=(omega, theta),
                              dist_out=((l, np.float64), (theta.d, np.float64)))
    return Y, Z


def cur_sketch(data: RowData, S, theta, omegas=()):
    """``([A @ Omega ...], A_copy, Theta @ A, S @ A)`` in one read of ``A``, float64.

    Every ``A @ Omega`` is distributed (``None`` in ``omegas``: a float64 copy of ``A``).
    ``S=None``: ``S @ A`` is ``None`` and ``A_copy`` is a distributed float64 copy of ``A``
    (to be gathered when no sketch would be smaller than ``A``); otherwise ``A_copy`` is ``None``.
    """
    n = data.shape[1]
    omegas = tuple(omegas)
    dist_out = tuple((n if om is None else om.d, np.float64) for om in omegas)
    dist_out += ((n, np.float64),) if S is None else ()
    outs, red = data.row_pass(K_CUR_SKETCH, small=(S, theta, omegas), dist_out=dist_out)
    Ys, copy = list(outs[:len(omegas)]), (outs[-1] if S is None else None)
    return Ys, copy, red[0], (red[1] if S is not None else None)


def cur_second(data: RowData, cols, R11, rows, *, dtype):
    """The second read of CUR: ``(C, B.T B, B.T A, A[rows, :])`` with ``C = A[:, cols]`` (distributed,
    in ``dtype``) and ``B = C R11^{-1}``; the rest float64, ``B.T B`` symmetrised."""
    cols, rows = np.asarray(cols, dtype=np.intp), np.asarray(rows, dtype=np.intp)
    (C,), (G, BtA, R) = data.row_pass(K_CUR_SECOND, small=(cols, np.asfortranarray(R11, dtype=np.float64), rows,
                                                           np.dtype(dtype)),
                                      dist_out=((len(cols), np.dtype(dtype)),))
    return C, _symmetrize_upper(G), BtA, R


def dist_row_residuals(data: RowData, Y, Qs):
    """Squared norms of the rows of a distributed ``Y`` (``m x l``) after projecting out the span of
    the orthonormal columns of the small ``Qs`` (``l x j``): distributed, ``m x 1`` (no read of ``A``)."""
    (r,), _ = data.dist_pass(K_DIST_RESIDUAL, dist=(Y,), small=(np.asarray(Qs, dtype=np.float64),),
                             dist_out=((1, np.float64),))
    return r


def dist_take(data: RowData, idx, *xs) -> list[np.ndarray]:
    """Rows ``idx`` (global indices) of each distributed operand in ``xs``, as small float64 arrays."""
    _, outs = data.dist_pass(K_DIST_TAKE, dist=xs, small=(np.asarray(idx, dtype=np.intp),))
    return list(outs)


def dist_row_interp(data: RowData, Y, Qi, Ri, *, dtype):
    """``X = Y Qi Ri^{-T}`` for a distributed ``Y`` (``X = Y Y[idx]^+`` when ``Y[idx].T = Qi Ri``),
    distributed, in ``dtype`` (no read of ``A``)."""
    (X,), _ = data.dist_pass(K_DIST_ROW_INTERP, dist=(Y,), small=(Qi, Ri, np.dtype(dtype)),
                             dist_out=((Qi.shape[1], np.dtype(dtype)),))
    return X


def dist_row_resid(data: RowData, X, Z, ZI) -> tuple[float, float]:
    """``(||Z - X ZI||_F^2, ||Z||_F^2)`` for distributed ``X`` (``m x k``) and ``Z`` (``m x t``)."""
    _, (e2, z2) = data.dist_pass(K_DIST_ROW_RESID, dist=(X, Z), small=(ZI,))
    return float(e2[0]), float(z2[0])


# (listed here rather than in the table and ``__all__`` at the top, so this block merges on its own)
__all__ += ["cqrrpt_gram", "cqrrpt_gram2", "dist_trsm", "right_sketch_pair", "cur_sketch", "cur_second",
            "dist_row_residuals", "dist_take", "dist_row_interp", "dist_row_resid"]
