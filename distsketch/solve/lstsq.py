"""``distsketch.lstsq``: least squares to full accuracy in few passes over the data."""

from __future__ import annotations

import math
import warnings

import numpy as np

from .. import passes
from .._inputs import as_matrix, is_lazy
from ..backends import RowData, as_rowdata
from ..errors import (ConvergenceWarning, IllConditionedWarning, InputTypeError, NonFiniteError,  # noqa: F401
                      ParameterError, ShapeError)  # (the warnings are re-exported from here)
from ..operators import make_operator
from ..random.streams import resolve_seed
from ._checkpoint import Checkpoint
from ._cholqr import (NORMAL_COND_LIMIT, GramFactorError, cholqr_minnorm, cholqr_solve, cond2_estimate,
                      normal_factor)
from ._lsqr import LSQRState, lsqr_precond
from ._precond import build_precond
from ._result import MESSAGES, NOT_VERIFIED, STALLED, LstsqResult
from ._scale import scale_rhs, scale_sketch, scale_vector

__all__ = ["lstsq", "IllConditionedWarning", "ConvergenceWarning", "METHODS", "choose_method", "method_costs",
           "machine_rates", "lsqr_sketch_factor"]

METHODS = ("auto", "sketch_solve", "sketch_precondition", "cholqr", "normal_cholqr")


def _sketch_eps(n: int, d: int) -> float:
    """Distortion a d-row sketch allows for an (n+1)-dimensional subspace (Davidson-Szarek with t=3,
    which sparse sign embeddings match in practice): sqrt((n+1)/d) + 3/sqrt(d), capped below 1."""
    return float(min(0.99, math.sqrt((n + 1) / d) + 3 / math.sqrt(d)))


#: assumed out-of-core read rate of the whole cluster, bytes/s (reading and decompressing Zarr
#: chunks; the benchmark measures the real one): used only to weigh reads against flops
OOC_READ_BYTES_PER_S = 5e8
_RATES: dict = {}
#: rates of this project's 2-core reference machine (quiet), used instead of a measurement for
#: problems of under 1e10 flops (m n^2), where any method takes well under a second
NOMINAL_RATES = {"gemm_1t": 5e10, "sparse_1t": 1.5e9, "read_bw": 2e10}


def machine_rates() -> dict:
    """Rates the cost model uses, measured once per process (~0.05 s) on this machine
    (for problems of at least 1e10 flops; smaller ones use :data:`NOMINAL_RATES`).

    ``gemm_1t``: flop/s of a 256 x 256 GEMM on one BLAS thread. ``sparse_1t``: flop/s
    (``2 nnz`` per entry of ``A``) of the sparse-sign sketch of a 2048 x 128 block on one
    thread, through the operator itself. ``read_bw``: bytes/s of a matrix-vector product
    of a 64 MiB matrix (larger than the caches) with all threads: one in-memory read of
    ``A``. Medians of three; a loaded machine measures lower rates, and the choice follows.
    """
    if _RATES:
        return dict(_RATES)
    import time

    from .._threads import blas_limit as threadpool_limits  # single-thread rates (a measurement)

    def best(f, k=3):
        ts = []
        for _ in range(k):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return sorted(ts)[k // 2]

    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256))
    blk = rng.standard_normal((2048, 128))
    op = make_operator("sparse_sign", 512, 2048, seed=0)
    with threadpool_limits(1):
        a @ a
        gemm = 2 * 256**3 / best(lambda: a @ a)
        op.apply(blk, 0)
        sparse = 2 * 8 * blk.size / best(lambda: op.apply(blk, 0))
    big = np.empty((8192, 1024))
    big.fill(1.0)
    v = np.ones(1024)
    big @ v
    bw = big.nbytes / best(lambda: big @ v)
    _RATES.update(gemm_1t=float(gemm), sparse_1t=float(sparse), read_bw=float(bw))
    return dict(_RATES)


#: sketch sizes ``d = f n`` the cost model weighs for LSQR in memory (out of core: 4n, the
#: partial sketches travel between workers); and the largest sketch it allows, in bytes
LSQR_SKETCH_FACTORS = (4, 6, 8)
LSQR_SKETCH_MAX_BYTES = 2**28


def _lsqr_iterations(atol: float, f: float) -> int:
    """LSQR iterations to reach ``atol`` on ``A N`` with ``N`` from a ``d = f n`` sketch: its singular
    values fill ``[1 - 1/sqrt(f), 1 + 1/sqrt(f)]`` (Marchenko-Pastur edges, which sparse sign sketches
    follow), so the error falls by ``(kappa - 1)/(kappa + 1) = 1/sqrt(f)`` an iteration."""
    return math.ceil(math.log(max(atol, 1e-16)) / math.log(1.0 / math.sqrt(f)))


def lsqr_sketch_factor(m, n, *, lazy, itemsize, atol) -> int:
    """The sketch size ``d = f n`` of LSQR: the ``f`` in :data:`LSQR_SKETCH_FACTORS` (4 out of core,
    and where a larger sketch exceeds :data:`LSQR_SKETCH_MAX_BYTES` or ``m`` rows) minimising the
    sketch, its factor and the LSQR reads of :func:`method_costs`, at :data:`NOMINAL_RATES` on 2
    threads: a function of the call alone, so that ``d``, hence ``x``, is the same on any machine."""
    if lazy:
        return 4
    F, r = 2 * NOMINAL_RATES["gemm_1t"], NOMINAL_RATES
    t_r = m * n * itemsize / r["read_bw"]
    step = max(t_r, 4.0 * m * n / F)

    def cost(f):
        return (f * n * n + n**3 / 3.0) / F + (_lsqr_iterations(atol, f) + 2) * step

    fs = [f for f in LSQR_SKETCH_FACTORS if f == 4 or (f * n <= m and f * n * n * 8 <= LSQR_SKETCH_MAX_BYTES)]
    return min(fs, key=cost)


def method_costs(m, n, *, lazy, itemsize, atol, threads=None, rates=None) -> dict:
    """Modelled seconds of each full-accuracy method, and the terms behind them.

    With ``p`` threads (one BLAS thread each, as the passes run), ``F = p gemm_1t``, a read
    of ``A`` ``t_r = m n itemsize / B`` (``B`` the measured in-memory bandwidth, or
    :data:`OOC_READ_BYTES_PER_S` out of core), the sparse sketch ``16 m n / (p sparse_1t)``
    and the factor of a ``d x n`` sketch ``(d n^2 + n^3 / 3) / F`` (SYRK and Cholesky of its
    Gram matrix; see :func:`~distsketch.solve._precond.build_precond`). A pass costs the
    larger of its read and its arithmetic (they overlap):

    * ``normal_cholqr``: ``max(t_r, m n^2 / F + sketch(2n))`` (S A, A.T A, A.T b in one
      read) + factor(2n) + ``7/3 n^3 / F`` + 2 refinement reads (``4 m n`` flops each);
    * ``cholqr``: ``max(t_r, sketch(2n))`` + factor(2n) + ``max(t_r, 3 m n^2 / F)`` (the Gram of
      ``A R^-1``) + 1 refinement read;
    * ``sketch_precondition``: ``max(t_r, sketch(f n))`` + factor(f n) + ``k + 2`` reads of
      ``4 m n`` flops, ``k = log(atol) / log(1/sqrt(f))`` LSQR iterations, for the sketch
      size ``f n`` of :func:`lsqr_sketch_factor` (``terms["lsqr_sketch_factor"]``): a larger
      sketch costs more to factor and saves iterations, the more so the smaller ``atol``.
    """
    import os

    nominal = rates is None and m * n * n < 1e10
    rates = rates or (dict(NOMINAL_RATES) if nominal else machine_rates())
    p = threads or os.cpu_count() or 1
    F = p * rates["gemm_1t"]
    B = OOC_READ_BYTES_PER_S if lazy else rates["read_bw"]
    t_r = m * n * itemsize / B

    def sketch(d):
        return 16.0 * m * n / (p * rates["sparse_1t"])

    def factor(d):
        return (d * n * n + n**3 / 3.0) / F

    def step():
        return max(t_r, 4.0 * m * n / F)

    def lsqr(f):
        return max(t_r, sketch(f * n)) + factor(f * n) + (_lsqr_iterations(atol, f) + 2) * step()

    f_best = lsqr_sketch_factor(m, n, lazy=lazy, itemsize=itemsize, atol=atol)
    iters = _lsqr_iterations(atol, f_best)
    costs = {
        "normal_cholqr": max(t_r, m * n * n / F + sketch(2 * n)) + factor(2 * n) + 7 * n**3 / (3 * F) + 2 * step(),
        "cholqr": max(t_r, sketch(2 * n)) + factor(2 * n) + max(t_r, 3.0 * m * n * n / F) + step(),
        "sketch_precondition": lsqr(f_best),
    }
    terms = {"threads": p, "gemm_GFLOPs": F / 1e9, "read_s": t_r, "read_GBs": B / 1e9, "lsqr_iterations": iters,
             "lsqr_sketch_factor": f_best, "sketch_2n_s": sketch(2 * n), "factor_2n_s": factor(2 * n),
             "factor_lsqr_s": factor(f_best * n), "syrk_s": m * n * n / F, "gram_AN_s": 3.0 * m * n * n / F,
             "rates": "nominal" if nominal else "measured"}
    return {"seconds": costs, "terms": terms, "passes": {"normal_cholqr": 3, "cholqr": 3,
                                                         "sketch_precondition": iters + 3}}


def choose_method(m, n, *, lazy, itemsize, atol, c_given, minnorm, threads=None, rates=None):
    """The cost model behind ``method="auto"``: the cheapest of :func:`method_costs`.

    Returns ``(method, reason)``; the reason quotes the model's numbers (measured rates,
    read time, each method's modelled seconds and reads) so a user can see why.
    """
    if minnorm:
        return "cholqr", "minimum-norm (m < n) problems are solved by cholqr on A.T"
    if c_given:
        return "cholqr", "the saddle-point problem (c given) is solved by cholqr"
    mc = method_costs(m, n, lazy=lazy, itemsize=itemsize, atol=atol, threads=threads, rates=rates)
    c, t, ps = mc["seconds"], mc["terms"], mc["passes"]
    best = min(c, key=c.get)
    where = "out of core" if lazy else "in memory"
    rd = "assumed" if lazy else t["rates"]
    est = (f"{where}, cost model (GEMM {t['gemm_GFLOPs']:.3g} GFLOP/s {t['rates']} on {t['threads']} threads, one "
           f"read of A {t['read_s']:.3g} s at {t['read_GBs']:.3g} GB/s {rd}): "
           + ", ".join(f"{k} ~{v:.3g} s in {ps[k]} reads" for k, v in sorted(c.items(), key=lambda kv: kv[1]))
           + f" [SYRK of A {t['syrk_s']:.3g} s, Gram of A R^-1 {t['gram_AN_s']:.3g} s, factor of the 2n sketch "
           f"{t['factor_2n_s']:.3g} s; LSQR: a {t['lsqr_sketch_factor']}n sketch, factor {t['factor_lsqr_s']:.3g} s, "
           f"{t['lsqr_iterations']} iterations]")
    if best == "normal_cholqr":
        est += "; normal_cholqr falls back to cholqr (one more read) if the sketch estimates cond(A) > 1e7"
    return best, est


def _vector_checksum(v) -> str:
    """A checksum of every entry of a numpy or dask vector (one read of it; see block_checksum)."""
    from ..backends._protocol import block_checksum

    if is_lazy(v):
        import dask.array as da

        v2 = v if v.ndim == 2 else v[:, None]

        def _ck(x, block_info=None):
            r0 = int(block_info[0]["array-location"][0][0])
            return block_checksum(np.ascontiguousarray(x), r0)[:, None]

        parts = da.map_blocks(_ck, v2.rechunk({1: -1}), chunks=((1,) * v2.numblocks[0], (1,)), dtype=np.uint64)
        h = int(np.sum(parts.compute(), dtype=np.uint64))
    else:
        v = np.asarray(v)
        h = int(block_checksum(np.ascontiguousarray(v if v.ndim == 2 else v[:, None]), 0)[0])
    return f"{v.dtype}{list(v.shape)}:{h:016x}"


def _fingerprint(A, b, c, **kw):
    """The arguments of a checkpointed call. ``A`` enters by shape and dtype only: its content is
    verified by the data fingerprint the first pass computes (RowData.fingerprint)."""
    from dask.base import tokenize

    return {"shape": list(A.shape), "dtype": str(A.dtype), "b": _vector_checksum(b), "c": tokenize(c), **kw}


def lstsq(A, b, *, method: str = "auto", atol: float = 1e-12, btol: float = 1e-12, maxiter: int | None = None,
          damp: float = 0.0, c=None, seed=None, x0=None, checkpoint=None, sketch_kind: str = "sparse_sign",
          sketch_size: int | None = None, conlim: float = 1e16) -> LstsqResult:
    """Solve least-squares problems with sketching, in few passes over ``A``.

    Overdetermined (``m >= n``): ``min ||A x - b||^2 + damp^2 ||x||^2 + 2 c.T x``; with
    ``c`` also the dual ``y = b - A x``, the minimum-norm solution of ``A.T y = c`` when
    ``b = 0``. Underdetermined (``m < n``): the minimum-norm solution of ``A x = b``.
    Rank-deficient ``A``: the minimum-norm solution among minimisers, like gelsd.

    Parameters
    ----------
    A : numpy array, dask array, zarr array, Zarr path, or a :class:`~distsketch.backends.RowData`
    b : array_like of length m (numpy or dask)
    method : {"auto", "sketch_solve", "sketch_precondition", "cholqr", "normal_cholqr"}
        ``sketch_solve``: one pass, ``||A x - b|| <= (1 + eps)/(1 - eps) min ||A z - b||``
        with ``eps`` reported in ``eps_sketch`` when the sketch embeds ``A``; nothing is
        verified, so it reports istop 8 and ``converged`` False (m >= n, no ``c``).
        ``sketch_precondition``: LSQR on ``A N`` with the fused one-read step, warm-started
        from the sketch-and-solve solution and refined. ``cholqr``: randomized Cholesky QR
        and refinement, 3-4 passes in all.
        ``normal_cholqr``: the Gram matrix ``A.T A`` formed in the sketch's own read and
        preconditioned by the sketch's ``R`` (Cholesky of ``R^-T A.T A R^-1``), one
        corrected semi-normal step: 3 passes; used while the sketch estimates
        ``cond(A) <= 1e7``, else ``cholqr`` runs (``method`` and ``reason`` say so). For
        ``m < n`` or a ``c`` term it runs ``cholqr``.
        ``auto``: a cost model of passes, flops and bytes with measured rates (see
        :func:`choose_method`); ``reason`` quotes it.
    atol, btol : float
        Stopping tolerances (scipy lsqr's meaning; see the Notes).
    maxiter : int, optional
        LSQR iterations (default 200) or refinement steps of ``cholqr`` (default 20).
    damp : float
        Ridge parameter.
    c : array_like of length n, optional
        Linear term of the saddle-point problem; the result then carries ``y``.
    seed : None, int, SeedSequence or Generator
        Seeds the sketch; recorded in the result. Never mutated.
    x0 : array_like of length n, optional
        Starting point for the iterative methods (instead of the sketch-and-solve one).
    checkpoint : str or path, optional
        A ``.npz`` file: iterative state is saved atomically every few iterations, and a
        call with the same arguments resumes from it and ends with the same ``x``. It is
        removed when the solve finishes. The file records the seed (a ``seed=None`` call
        resumes with the seed the interrupted one drew) and a fingerprint of every byte of
        ``A`` (:attr:`RowData.fingerprint`, computed in the first pass): the resumed solve
        recomputes it in its first pass and refuses changed data before saving or
        returning anything. Not used by ``method="sketch_solve"`` (one pass: nothing to resume).
    sketch_kind, sketch_size : str, int
        The sketching operator (default ``sparse_sign``; ``d = max(2n, 8)`` for ``cholqr``
        and ``normal_cholqr``, ``max(4n, 8)`` for ``sketch_solve``, ``max(f n, 8)`` for
        ``sketch_precondition`` with ``f`` from :func:`lsqr_sketch_factor` (4 out of core; in
        memory the cost model's choice among 4, 6, 8 for this ``atol``, at nominal rates so
        the same call gives the same ``d`` everywhere), at most ``m`` for
        ``uniform``/``srct``; ``n`` is ``m`` for wide ``A``). ``sketch_size`` must be at
        least ``n``.
    conlim : float
        LSQR's limit on the condition estimate of the preconditioned operator.

    Returns
    -------
    LstsqResult

    Raises
    ------
    ShapeError
        ``b`` (or ``c``, ``x0``) of the wrong length or ragged; empty ``A``.
    ParameterError
        Unknown method; negative tolerances, ``damp`` or ``maxiter``; a ``c`` or ``damp``
        with ``m < n``; ``sketch_size`` below ``n`` (``m`` for wide ``A``); ``sketch_solve``
        with ``c`` or wide ``A``; a checkpoint written for other arguments; a ``damp`` whose
        square overflows relative to ``||A||`` (raised after the sketch, which gives the scale).
    DataChangedError
        A checkpoint written for other data (the fingerprints of ``A`` differ).
    CheckpointError
        A checkpoint file that cannot be read.
    MissingChunkError, CorruptChunkError
        ``A`` or ``b`` given as a Zarr path whose store lacks chunks or holds undecodable
        ones (see :func:`distsketch.open_array` to accept missing chunks).
    InputTypeError
        Complex, string or masked input (with masked entries), a scipy sparse matrix.
    NonFiniteError
        NaN or Inf in ``A`` or ``b`` (found in the first pass, naming the chunk) or ``x0``.
    GramFactorError
        With ``c``: the Gram matrix of ``A N`` is not positive definite (the sketch did not
        embed ``A``); without ``c`` the solve falls back to LSQR.

    Warns
    -----
    IllConditionedWarning
        The sketch estimates ``cond(A) > 1/eps``.
    ConvergenceWarning
        ``maxiter`` reached (``istop = 7``), or the refinement stalled above the rounding
        level (``istop = 9``: the sketch did not embed ``A``); ``x`` is the best iterate.

    Notes
    -----
    Passes (reads of ``A``): ``sketch_solve`` 1; ``cholqr`` 1 (sketch) + 1 (Gram of
    ``A N``) + one per refinement step, each computing ``r = b - A x`` and ``A.T r``
    together; ``normal_cholqr`` 1 (sketch and Gram of ``A``) + one per refinement step
    (at least one step, then the verifying read: 3 in all at full accuracy);
    ``sketch_precondition`` 1 (sketch) + 1 (``r0``) + one per LSQR iteration + one
    verification. Every count is reported in ``passes``.

    Flops: ``normal_cholqr`` ``m n^2`` (SYRK) + ``16 m n`` (sparse sketch) in its first
    read, ``cholqr`` ``3 m n^2`` in its Gram read (``A_i R^-1`` and its Gram), LSQR
    ``4 m n`` per iteration. Why ``normal_cholqr`` stays accurate: ``A.T A`` is formed
    with an error ``~ eps ||A||^2``, so the preconditioned Gram ``R^-T A.T A R^-1`` is
    known to ``~ eps cond(A)^2`` and each corrected semi-normal step (the residual and
    ``A.T r`` recomputed from ``A`` itself) contracts the error by about that factor;
    the first ``x`` already meets the residual tests but has a forward error
    ``~ eps cond(A)^2``, hence the step that is always taken.

    The final tests, on the returned ``x`` with ``||A||`` estimated by ``||S A||_F``:
    ``||r|| <= btol ||b|| + atol ||A|| ||x||`` (istop 1) or
    ``||A.T r - damp^2 x - c|| <= atol ||A|| ||r||`` (istop 2), or, when the refinement stops
    improving, ``||A.T r - damp^2 x - c|| <= 10 sqrt(n) eps ||A|| (||r|| + ||A|| ||x||)``
    (istop 5, the rounding level; istop 4 for the minimum-norm problem). All are
    evaluated on the true residual of the returned ``x``; a stall above the rounding level
    is istop 9 and ``converged`` is False. ``sketch_solve`` checks nothing (istop 8).

    Scaling: ``A`` and ``b`` whose norms are outside ``[1e-100, 1e100]`` are multiplied by
    powers of two (exact) and the answer scaled back, so ``A * 1e-300`` gives ``x * 1e300``
    (no extra pass, unless the sketch itself overflows: then two).

    References
    ----------
    1. Meng, Saunders, Mahoney, "LSRN", SISC 36 (2014), arXiv 1109.5981.
    2. Avron, Maymounkov, Toledo, "Blendenpik", SISC 32 (2010).
    3. Epperly, Meier, Nakatsukasa, "Fast randomized least-squares solvers can be just as
       accurate and stable as classical direct solvers", arXiv 2406.03468.
    4. Garrison, Ipsen, "A randomized preconditioned Cholesky-QR algorithm", arXiv 2406.11751.
    5. Murray et al., "Randomized Numerical Linear Algebra", arXiv 2302.11474, section 3.

    Examples
    --------
    >>> import numpy as np, distsketch
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((20_000, 50)); b = rng.standard_normal(20_000)
    >>> res = distsketch.lstsq(A, b, seed=1)
    >>> bool(np.allclose(res.x, np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-10)), res.passes <= 5
    (True, True)
    """
    # ---- validation: all before any pass over the data --------------------------------------
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; expected one of {METHODS}")
    for name, val in (("atol", atol), ("btol", btol), ("damp", damp)):
        if not (isinstance(val, (int, float)) and val >= 0 and math.isfinite(val)):
            raise ParameterError(f"{name} must be a finite number >= 0; got {val!r}")
    if maxiter is not None and (int(maxiter) != maxiter or maxiter < 0):
        raise ParameterError(f"maxiter must be a non-negative integer; got {maxiter!r}")
    data_in = A if isinstance(A, RowData) else None
    if data_in is None:
        A = as_matrix(A)
    m, n = A.shape if data_in is None else data_in.shape
    dtype_in = A.dtype if data_in is None else data_in.dtype
    if m == 0 or n == 0:
        raise ShapeError(f"A is empty (shape {A.shape}); least squares needs m >= 1 and n >= 1")
    bm = as_matrix(b, "b", ndim=(1, 2))
    if bm.ndim == 2 and bm.shape[1] != 1:
        raise ShapeError(f"b must be a vector (m,) or (m, 1); got shape {bm.shape}")
    if bm.shape[0] != m:
        raise ShapeError(f"b must have m={m} entries to match A {A.shape}; got shape {bm.shape}")
    bm = bm[:, 0] if bm.ndim == 2 else bm
    minnorm = m < n
    if c is not None:
        c = _small_vector(c, "c")
        if minnorm:
            raise ParameterError("c (the saddle-point problem) needs m >= n; for m < n pass A.T and b=0, c=b")
        if c.shape != (n,):
            raise ShapeError(f"c must have n={n} entries; got shape {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ParameterError("c holds NaN or Inf")
    if minnorm and damp:
        raise ParameterError("damp with m < n is not supported; solve the ridge problem for A.T or pass m >= n")
    if x0 is not None:
        x0 = _small_vector(x0, "x0")
        if x0.shape != (n,) or minnorm:
            raise ShapeError(f"x0 must have n={n} entries (and m >= n); got shape {x0.shape}")
        if not np.all(np.isfinite(x0)):
            raise NonFiniteError(f"x0 holds {int(np.sum(~np.isfinite(x0)))} NaN or Inf value(s) (first at index "
                                 f"{int(np.flatnonzero(~np.isfinite(x0))[0])}); pass a finite starting point or "
                                 "x0=None (the sketch-and-solve start)")
    if method == "sketch_solve" and c is not None:
        raise ParameterError("sketch_solve does not solve the saddle-point problem (c given): its y = b - A x "
                             "would need a pass of its own; use method='cholqr' or 'auto'")
    if method == "sketch_solve" and minnorm:
        raise ParameterError(f"sketch_solve solves m >= n problems; A is {m} x {n} (wide): use method='cholqr' "
                             "or 'auto' for the minimum-norm solution")
    T_n_req = m if minnorm else n  # columns of the tall factor the sketch must embed
    if sketch_size is not None:
        if not (isinstance(sketch_size, (int, np.integer)) and not isinstance(sketch_size, bool)):
            raise ParameterError(f"sketch_size must be an integer; got {sketch_size!r}")
        if sketch_size < T_n_req:
            raise ParameterError(
                f"sketch_size={sketch_size} is smaller than {'m' if minnorm else 'n'}={T_n_req}: a sketch needs at "
                f"least as many rows as the {'rows' if minnorm else 'columns'} of A to embed its "
                f"{'row' if minnorm else 'column'} space; use sketch_size >= {T_n_req} (default "
                f"{4 * T_n_req}, {2 * T_n_req} for cholqr) or omit it")
    if minnorm and method == "sketch_precondition":
        raise ParameterError("sketch_precondition solves m >= n problems; use method='cholqr' or 'auto' for m < n")
    if c is not None and method == "sketch_precondition":
        raise ParameterError("the c-term is solved by method='cholqr' (or 'auto')")
    seed_given = seed
    seed = resolve_seed(seed)
    out_dtype = dtype_in
    if data_in is not None and minnorm:
        raise ParameterError("a RowData backend must hold a tall matrix (m >= n); pass the wide matrix itself")

    # ---- orientation: the tall factor T is A, or A.T for the minimum-norm problem -------------
    if data_in is not None and not minnorm:
        data = data_in
    else:
        data = as_rowdata(A.T if minnorm else A)
    T_m, T_n = data.shape
    if method == "auto":
        meth, reason = choose_method(T_m, T_n, lazy=data.out_of_core, itemsize=dtype_in.itemsize, atol=atol,
                                     c_given=c is not None, minnorm=minnorm, threads=getattr(data, "workers", None))
    else:
        meth, reason = method, "requested"
    if meth == "normal_cholqr" and (minnorm or c is not None):
        meth, reason = "cholqr", reason + "; normal_cholqr solves m >= n problems without c: ran cholqr"
    # cholqr only needs A N moderately conditioned (d = 2n: cond(A N) ~ 6, Gram ~ 35), which halves
    # the QR of the sketch; LSQR's iteration count and sketch_solve's bound improve with d = 4n
    if meth == "sketch_precondition" and sketch_size is None and not minnorm:
        # the sketch size the cost model finds cheapest for this atol (4n out of core), at the nominal
        # rates: d, hence x, is a function of the call alone, the same on any machine and at any load
        f = lsqr_sketch_factor(T_m, T_n, lazy=data.out_of_core, itemsize=dtype_in.itemsize, atol=atol)
        if f != 4:
            reason += f"; sketch size {f}n (cost model: fewer LSQR iterations for the larger factor)"
    else:
        f = 4
    d = sketch_size or max((2 if meth in ("cholqr", "normal_cholqr") else f) * T_n, 8)
    if sketch_size is None and sketch_kind in ("uniform", "srct"):
        d = min(d, T_m)  # these draw d distinct rows of m (d >= T_n still holds: T_m >= T_n)
    # sA, sb: exact power-of-two scales of A and b, 1 unless their norms near over/underflow (_scale.py)
    sA = sb = 1.0
    if minnorm:
        bT, cT = None, (bm.compute() if is_lazy(bm) else np.asarray(bm)).astype(np.float64)
        bd = None
        cT, sb = scale_vector(cT)
        bnorm = float(np.linalg.norm(cT))
    else:
        bT, cT = bm, c
        bd = data.distribute(bm)
        with np.errstate(over="ignore", under="ignore"):  # a norm that overflows is scaled next
            bnorm = data.norm(bd)
        bd, bnorm, sb = scale_rhs(data, bd, bnorm)
    maxit = maxiter if maxiter is not None else (20 if meth in ("cholqr", "normal_cholqr") else 200)
    ckpt = None
    state = None
    if checkpoint is not None and meth != "sketch_solve":
        if seed_given is None:  # resume with the seed the checkpointed solve drew
            path = checkpoint if hasattr(checkpoint, "saved_seed") else Checkpoint(checkpoint, {})
            saved_seed = path.saved_seed()
            seed = saved_seed if saved_seed is not None else seed
        fp = _fingerprint(A if data_in is None else data_in, bm, c, method=method, atol=atol, btol=btol, maxiter=maxit,
                                                   damp=damp, seed=seed, sketch=(sketch_kind, d),
                                                   x0=None if x0 is None else x0.tolist())
        # a path, or a checkpoint object (the MPI drivers pass one that keeps a file per rank)
        ckpt = checkpoint.bind(fp) if hasattr(checkpoint, "bind") else Checkpoint(checkpoint, fp)
        ckpt.data = data
        state = ckpt.load()
        if state is not None:  # the next pass re-reads every byte of A and must find the same fingerprint
            data.expect_fingerprint(ckpt.saved_data, f"checkpoint {ckpt.path!r}")

    def finish(x, y, meth, reason, istop, itn, normr, normar, fac, history):
        anorm = fac.anorm
        if sA != 1.0 or sb != 1.0:  # back from the scaled problem: x = (sA / sb) x'
            x = x * sA / sb
            y = None if y is None else y / sb
            normr, normar, anorm = normr / sb, normar / sA / sb, anorm / sA
            reason += f"; A and b scaled by 2^{round(math.log2(sA))} and 2^{round(math.log2(sb))} internally (exact)"
        x = _cast(x, out_dtype)
        if istop == 7:
            warnings.warn(f"lstsq ({meth}) reached maxiter={maxit} before its stopping test held "
                          f"(normr={normr:.3g}, normar={normar:.3g}); x is the best iterate. Raise maxiter "
                          "or loosen atol/btol", ConvergenceWarning, stacklevel=3)
        if istop == STALLED:
            what = f"||A x - b|| = {normr:.3g}" if minnorm else f"||A.T r|| = {normar:.3g}"
            warnings.warn(f"lstsq ({meth}) did not converge: the refinement stopped improving with the true "
                          f"{what} above the rounding level (sketch {sketch_kind!r}, d={d}, rank {fac.rank} of "
                          f"{T_n} kept); x is the best iterate. Use a mixing sketch_kind ('sparse_sign', "
                          "'gaussian', 'srct') or a larger sketch_size; if rank < n, A is numerically "
                          "rank-deficient and b is not in its numerical range", ConvergenceWarning, stacklevel=3)
        if ckpt is not None:
            ckpt.remove()
        return LstsqResult(x=x, y=y, method=meth, reason=reason, istop=int(istop), message=MESSAGES[istop],
                           iterations=int(itn), passes=data.passes, normr=float(normr), normar=float(normar),
                           anorm=anorm, cond=fac.cond, rank=fac.rank, eps_sketch=_sketch_eps(T_n, d), seed=seed,
                           history=tuple(history), verified=istop != NOT_VERIFIED)

    # b = 0 (and no c): x = 0 exactly, as scipy's lsqr
    if not minnorm and c is None and bnorm == 0.0:
        class _F:  # nothing was factored
            anorm, cond, rank = float("nan"), float("nan"), n
        return finish(np.zeros(n), None, method, "b = 0: x = 0 is the exact solution", 0, 0, 0.0, 0.0, _F, [])

    # ---- pass 1: the sketch [S A, S b] in one read, factored locally -----------------------------
    op = make_operator(sketch_kind, d, T_m, seed=seed, nnz=min(8, d))
    if data_in is None:  # a backend lstsq built itself: its blocks may suit the sketch
        data.prefer_sketch_blocks(d)

    def sketch_pass(data):
        nonlocal gram_A
        if meth == "normal_cholqr":  # one read: S A, S b, A.T A, A.T b
            SA, Sbs, G_A, hs = passes.sketch_gram(data, op, extra=[bd])
            gram_A = (G_A, hs[0][:, 0])
            return SA, Sbs[0]
        sk = passes.left_sketch(data, op, extra=[] if bd is None else [bd], dtype=np.float64)
        return sk[0], (sk[1] if bd is not None else None)

    if state is not None:
        SA, Sb = state["SA"], (state["Sb"] if "Sb" in state else None)
        gram_A = (state["G_A"], state["h_A"]) if "G_A" in state else None
        data.passes = int(state["passes_sketch"])
        sA = float(state["scale_A"]) if "scale_A" in state else 1.0
        if sA != 1.0:
            from ..backends._scaled import ScaledRowData

            data = ScaledRowData(data, sA)
    else:
        gram_A = None
        SA, Sb = sketch_pass(data)
        data, SA, Sb, sA = scale_sketch(data, SA, Sb, sketch_pass)
    # the scaled problem's options (see _scale.py): damp' = sA damp, c' = sA sb c, x0' = (sb / sA) x0
    if damp * sA > 1e150:  # damp'^2 would overflow: relative to ||A||, damp is beyond float64
        raise ParameterError(
            f"damp={damp:.3g} is so large relative to A (||S A||_F ~ {np.linalg.norm(SA) / sA:.3g}) that damp^2 "
            "overflows float64; the ridge solution is x = 0 to working precision: pass a smaller damp")
    damp = damp * sA
    if c is not None:
        cT = c * sA * sb
    if x0 is not None:
        x0 = x0 * sb / sA
    # the iterative methods only need R as a preconditioner (and x_sketch as a start): the Cholesky of
    # the sketch's Gram matrix is enough while cond(S A) <= 1e6 (QR otherwise); sketch_solve's x is the QR's
    fac = build_precond(SA, None if Sb is None else Sb[:, 0], damp=damp,
                        method="qr" if meth == "sketch_solve" else "gram")
    eps = np.finfo(np.float64 if out_dtype == np.float64 else np.float32).eps
    if fac.cond > 1 / eps or fac.rank < T_n:
        warnings.warn(
            f"cond(A) is estimated at {fac.cond:.3g}, beyond 1/eps = {1 / eps:.3g} for {out_dtype}: A is "
            f"numerically rank-deficient (rank {fac.rank} of {T_n} kept), and the solution returned is the "
            "minimum-norm one over that rank (or the sketch did not embed A: the refinement then reports "
            "istop 9). Silence with warnings.simplefilter('ignore', "
            "distsketch.IllConditionedWarning)", IllConditionedWarning, stacklevel=2)
    if method == "auto" and not minnorm and c is None:
        reason += f"; cond estimate {fac.cond:.3g}"
    if ckpt is not None and state is None:
        save = {"SA": SA, "passes_sketch": np.array(data.passes), "scale_A": np.array(sA)}
        if Sb is not None:
            save["Sb"] = Sb
        if gram_A is not None:
            save["G_A"], save["h_A"] = gram_A
        ckpt.save(stage=np.array("sketch"), **save)
        sketch_state = save
    else:
        sketch_state = ({k: state[k] for k in ("SA", "Sb", "G_A", "h_A", "passes_sketch", "scale_A") if k in state}
                        if state else None)

    class _Ckpt:  # keeps the sketch in every later checkpoint, so a resume skips pass 1
        def save(self, **kw):
            ckpt.save(**sketch_state, passes_done=np.array(data.passes), **kw)

    inner = _Ckpt() if ckpt is not None else None
    if state is not None and "passes_done" in state:
        data.passes = int(state["passes_done"])
    stage = str(state["stage"]) if state is not None else None

    if meth == "sketch_solve":  # nothing is verified: normr is the sketched ||S (A x - b)||
        return finish(fac.x_sketch, None, meth, reason, NOT_VERIFIED, 0, fac.rho, float("nan"), fac,
                      [{"normr_sketched": fac.rho}])
    factor = None
    if meth == "normal_cholqr":
        # the Gram of A is usable when the sketch says cond(A) <= NORMAL_COND_LIMIT; otherwise
        # (or if its Cholesky fails) cholqr forms the Gram of A R^-1 in a read of its own
        # (the same decision on a resume: the checkpoint keeps S A and the Gram of A)
        if gram_A is None:
            meth, reason = "cholqr", reason + "; the checkpoint holds no Gram of A: ran cholqr"
        elif fac.precond.R is None or (cond2 := cond2_estimate(fac.precond.R)) > NORMAL_COND_LIMIT:
            c2 = f"{cond2:.3g}" if fac.precond.R is not None else "inf (rank-deficient)"
            meth, reason = "cholqr", (reason + f"; 2-norm cond estimate {c2} > {NORMAL_COND_LIMIT:.0e}: the Gram "
                                      "of A is too inaccurate, ran cholqr (one more read)")
        elif stage == "cholqr":
            factor = ()  # resuming the refinement: the checkpoint holds R2 and x
            reason += f"; 2-norm cond estimate {cond2:.3g} <= {NORMAL_COND_LIMIT:.0e}"
        else:
            reason += f"; 2-norm cond estimate {cond2:.3g} <= {NORMAL_COND_LIMIT:.0e}"
            try:
                factor = normal_factor(gram_A[0], gram_A[1], fac.precond.R, damp)
            except GramFactorError as exc:
                meth, reason = "cholqr", reason + f"; Cholesky of the preconditioned A.T A failed ({exc}): ran cholqr"
    if meth == "normal_cholqr":
        x, r, istop, itn, normr, normar, hist = cholqr_solve(
            data, bd, cT, fac.precond, damp=damp, atol=atol, btol=btol, maxiter=maxit, bnorm=bnorm,
            anorm_A=fac.anorm, x0=x0, checkpoint=inner, state=state if stage == "cholqr" else None,
            factor=factor or None, min_steps=1)
        return finish(x, None, meth, reason, istop, itn, normr, normar, fac, hist)
    if meth == "cholqr" and minnorm:
        y, istop, itn, normr, hist = cholqr_minnorm(
            data, cT, fac.precond, atol=atol, btol=btol, maxiter=maxit, anorm_A=fac.anorm, checkpoint=inner,
            state=state if stage == "minnorm" else None)
        # T = A.T: y is the user's minimum-norm x, and c - T.T y = b - A x
        return finish(_dist_out(data, y), None, meth, reason, istop, itn, normr, float("nan"), fac, hist)
    if meth == "cholqr":
        try:
            x, r, istop, itn, normr, normar, hist = cholqr_solve(
                data, bd, cT, fac.precond, damp=damp, atol=atol, btol=btol, maxiter=maxit, bnorm=bnorm,
                anorm_A=fac.anorm, x0=x0, checkpoint=inner, state=state if stage == "cholqr" else None)
        except GramFactorError as exc:
            if c is not None:
                raise
            meth, reason = "sketch_precondition", f"cholqr's Gram factor failed ({exc}); fell back to LSQR"
        else:
            y = _dist_out(data, r) if c is not None else None
            return finish(x, y, meth, reason, istop, itn, normr, normar, fac, hist)
    # sketch_precondition
    start = x0 if x0 is not None else fac.x_sketch
    lstate = LSQRState.from_arrays(data, state) if stage == "lsqr" else None
    x, r, istop, itn, normr, normar, hist = lsqr_precond(
        data, bd, fac.precond, start, damp=damp, atol=atol, btol=btol, conlim=conlim, maxiter=maxit, bnorm=bnorm,
        anorm_A=fac.anorm, checkpoint=inner, state=lstate)
    return finish(x, None, meth, reason, istop, itn, normr, normar, fac, hist)


def _small_vector(v, name):
    """A length-n option (``c``, ``x0``) as a float64 vector; complex or ragged input is refused."""
    try:
        arr = np.asarray(v)
    except ValueError as exc:
        raise ShapeError(f"{name} must be a vector of numbers; got a ragged sequence ({exc})") from None
    if arr.dtype.kind not in "iufb":
        raise InputTypeError(f"{name} must hold real numbers; got dtype {arr.dtype}. Pass the real part explicitly "
                             "if that is what you mean")
    return arr.astype(np.float64).ravel()


def _cast(x, dtype):
    if is_lazy(x):
        return x.astype(dtype)
    return np.asarray(x).astype(dtype, copy=False)


def _dist_out(data, r):
    """A distributed m x 1 result as a 1-D array of the backend's family (numpy or dask)."""
    r = r[:, 0] if r.ndim == 2 else r
    return r if is_lazy(r) else np.asarray(r)
