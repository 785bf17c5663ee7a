"""``distsketch.lstsq``: least squares to full accuracy in few passes over the data."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConvergenceWarning, IllConditionedWarning  # noqa: F401 (re-exported from here)
from ..operators import make_operator
from ..random.streams import resolve_seed
from ._result import LstsqResult
from ._runners import Solve, build_result, run, sketch_stage, zero_result
from ._runners import sketch_eps as _sketch_eps  # noqa: F401 (its old home)
from ._scale import scale_rhs, scale_vector
from ._session import CheckpointSession, _digest
from ._validate import METHODS, sketch_keywords, validate

__all__ = ["lstsq", "IllConditionedWarning", "ConvergenceWarning", "METHODS", "choose_method", "method_costs",
           "machine_rates", "lsqr_sketch_factor"]

#: assumed out-of-core read rate of the whole cluster, bytes/s (reading and decompressing Zarr
#: chunks; the benchmark measures the real one): used only to weigh reads against flops
OOC_READ_BYTES_PER_S = 5e8
_RATES: dict = {}
#: rates of this project's 2-core reference machine (quiet), used instead of a measurement for
#: problems of under 1e10 flops (m n^2), where any method takes well under a second
NOMINAL_RATES = {"gemm_1t": 5e10, "sparse_1t": 1.5e9, "read_bw": 2e10, "step_bw": 8e9}


def machine_rates() -> dict:
    """Rates the cost model uses, measured once per process (~0.05 s) on this machine
    (for problems of at least 1e10 flops; smaller ones use :data:`NOMINAL_RATES`).

    ``gemm_1t``: flop/s of a 256 x 256 GEMM on one BLAS thread. ``sparse_1t``: flop/s
    (``2 nnz`` per entry of ``A``) of the sparse-sign sketch of a 2048 x 128 block on one
    thread, through the operator itself. ``read_bw``: bytes/s of a matrix-vector product
    of a 64 MiB matrix (larger than the caches) with all threads: one in-memory read of
    ``A``. ``step_bw``: bytes of ``A`` per second of the refinement/LSQR pass
    (:func:`distsketch.passes.lsqr_step_tiled`: ``A v``, ``A.T w`` and ``||w||``) over the
    same matrix in 4 row blocks, as the numpy backend runs it: 2.3-3.4x slower than
    ``read_bw`` here (each tile is multiplied twice, the second time from cache), so a
    step is not priced as one read. Medians of three; a loaded machine measures lower
    rates, and the choice follows.
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
    from .. import passes
    from ..backends import as_rowdata

    data = as_rowdata(big, block_rows=big.shape[0] // 4)
    passes.lsqr_step_tiled(data, v)
    step = big.nbytes / best(lambda: passes.lsqr_step_tiled(data, v))
    _RATES.update(gemm_1t=float(gemm), sparse_1t=float(sparse), read_bw=float(bw), step_bw=float(step))
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
    larger of its read and its arithmetic (they overlap); a refinement or LSQR step
    (``A v``, ``A.T w``: ``4 m n`` flops) costs ``step = max(t_s, 4 m n / F)`` with ``t_s`` a
    read out of core and, in memory, ``m n itemsize / step_bw`` (the step's own measured rate,
    see :func:`machine_rates`):

    * ``normal_cholqr``: ``max(t_r, m n^2 / F)`` (A.T A and A.T b in one read, no sketch) +
      ``n^3 / (3 F)`` (its Cholesky) + 1 step (the correction after it is checked from ``A.T A``);
    * ``cholqr``: ``max(t_r, sketch(2n))`` + factor(2n) + ``max(t_r, 3 m n^2 / F)`` (the Gram of
      ``A R^-1``) + 1 step;
    * ``sketch_precondition``: ``max(t_r, sketch(f n))`` + factor(f n) + ``k + 2`` steps,
      ``k = log(atol) / log(1/sqrt(f))`` LSQR iterations, for the sketch
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

    # a refinement/LSQR step: out of core the read dominates; in memory its measured rate
    t_step = t_r if lazy else m * n * itemsize / rates.get("step_bw", 0.4 * rates["read_bw"])

    def step():
        return max(t_step, 4.0 * m * n / F)

    def lsqr(f):
        return max(t_r, sketch(f * n)) + factor(f * n) + (_lsqr_iterations(atol, f) + 2) * step()

    f_best = lsqr_sketch_factor(m, n, lazy=lazy, itemsize=itemsize, atol=atol)
    iters = _lsqr_iterations(atol, f_best)
    costs = {
        "normal_cholqr": max(t_r, m * n * n / F) + n**3 / (3 * F) + step(),
        "cholqr": max(t_r, sketch(2 * n)) + factor(2 * n) + max(t_r, 3.0 * m * n * n / F) + step(),
        "sketch_precondition": lsqr(f_best),
    }
    terms = {"threads": p, "gemm_GFLOPs": F / 1e9, "read_s": t_r, "read_GBs": B / 1e9, "step_s": step(),
             "lsqr_iterations": iters,
             "lsqr_sketch_factor": f_best, "sketch_2n_s": sketch(2 * n), "factor_2n_s": factor(2 * n),
             "factor_lsqr_s": factor(f_best * n), "syrk_s": m * n * n / F, "gram_AN_s": 3.0 * m * n * n / F,
             "rates": "nominal" if nominal else "measured"}
    return {"seconds": costs, "terms": terms, "passes": {"normal_cholqr": 2, "cholqr": 3,
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
           f"read of A {t['read_s']:.3g} s at {t['read_GBs']:.3g} GB/s {rd}, a refinement/LSQR step {t['step_s']:.3g} s): "
           + ", ".join(f"{k} ~{v:.3g} s in {ps[k]} reads" for k, v in sorted(c.items(), key=lambda kv: kv[1]))
           + f" [SYRK of A {t['syrk_s']:.3g} s, Gram of A R^-1 {t['gram_AN_s']:.3g} s, factor of the 2n sketch "
           f"{t['factor_2n_s']:.3g} s; LSQR: a {t['lsqr_sketch_factor']}n sketch, factor {t['factor_lsqr_s']:.3g} s, "
           f"{t['lsqr_iterations']} iterations]")
    if best == "normal_cholqr":
        est += ("; normal_cholqr falls back to cholqr (two more reads) if the Cholesky factor of A.T A "
                "estimates cond > 1e7")
    return best, est


def lstsq(A, b, *, method: str = "auto", atol: float = 1e-12, btol: float = 1e-12, maxiter: int | None = None,
          damp: float = 0.0, c=None, seed=None, x0=None, checkpoint=None, kind: str = "sparse_sign",
          d: int | None = None, conlim: float = 1e16, sketch_kind: str | None = None,
          sketch_size: int | None = None) -> LstsqResult:
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
        ``normal_cholqr``: no sketch: one read forms ``A.T A`` and ``A.T b``, whose
        (column-scaled) Cholesky factor ``R`` preconditions one corrected semi-normal step:
        2 passes; used while ``R``'s condition estimate is at most 1e7, else the sketch is
        read and ``cholqr`` runs (``method`` and ``reason`` say so; 2 more passes). For
        ``m < n`` or a ``c`` term it runs ``cholqr``.
        ``auto``: a cost model of passes, flops and bytes with measured rates (see
        :func:`choose_method`); ``reason`` quotes it.
    atol, btol : float
        Stopping tolerances (scipy lsqr's meaning; see the Notes).
    maxiter : int, optional
        LSQR iterations (default 200) or refinement steps of ``cholqr`` and
        ``normal_cholqr`` (default 20). The default is that of the method that runs: the
        one ``auto`` chooses, and the one a method hands over to (``normal_cholqr`` to
        ``cholqr``: 20; ``cholqr`` to LSQR when its Gram factor fails: 200).
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
    kind, d : str, int
        The sketching operator's family and number of rows, named as in
        :func:`distsketch.sketch`, :func:`distsketch.operators.make_operator` and the command
        line (default ``sparse_sign``; ``d = max(2n, 8)`` for ``cholqr`` and
        ``normal_cholqr``, ``max(4n, 8)`` for ``sketch_solve``, ``max(f n, 8)`` for
        ``sketch_precondition`` with ``f`` from :func:`lsqr_sketch_factor` (4 out of core; in
        memory the cost model's choice among 4, 6, 8 for this ``atol``, at nominal rates so
        the same call gives the same ``d`` everywhere), at most ``m`` for
        ``uniform``/``srct``; ``n`` is ``m`` for wide ``A``). ``d`` must be at least ``n``.
    conlim : float
        LSQR's limit on the condition estimate of the preconditioned operator.
    sketch_kind, sketch_size : str, int, optional
        Deprecated names of ``kind`` and ``d`` (a ``DeprecationWarning``): one name for
        the sketch across the library.

    Returns
    -------
    LstsqResult

    Raises
    ------
    ShapeError
        ``b`` (or ``c``, ``x0``) of the wrong length or ragged; empty ``A``.
    ParameterError
        Unknown method; negative tolerances, ``damp`` or ``maxiter``; a ``c`` or ``damp``
        with ``m < n``; ``d`` below ``n`` (``m`` for wide ``A``); ``sketch_solve``
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
    together; ``normal_cholqr`` 1 (the Gram of ``A``) + one per refinement step
    (at least one step; that step is checked from ``A.T A`` without a read when the bounds
    allow, see below: 2 in all at full accuracy, else 3);
    ``sketch_precondition`` 1 (sketch) + 1 (``r0``) + one per LSQR iteration + one
    verification. Every count is reported in ``passes``.

    Flops: ``normal_cholqr`` ``m n^2`` (SYRK) in its first read, ``cholqr`` ``3 m n^2`` in
    its Gram read (``A_i R^-1`` and its Gram), LSQR ``4 m n`` per iteration. Why
    ``normal_cholqr`` stays accurate: ``A.T A`` is formed with an error ``~ eps |A|.T |A|``,
    so its Cholesky factor ``R`` (computed after scaling the columns to unit norm) makes
    ``R^-T A.T A R^-1`` the identity to ``~ eps cond^2`` (``cond`` that of the column-scaled
    ``A``, the gate's) and each corrected semi-normal step (the residual and ``A.T r``
    recomputed from ``A`` itself) contracts the error by about that factor;
    the first ``x`` already meets the residual tests but has a forward error
    ``~ eps cond(A)^2``, hence the step that is always taken. That step ``dx`` is checked
    without reading ``A`` again: the read before it gave the true ``g`` of ``x``, and
    ``A.T (b - A (x + dx)) = A.T (b - A x) - A.T A dx`` with ``A.T A`` known to within
    ``gamma_m |A|.T |A|`` (``gamma_m = m eps / (1 - m eps)``, any summation order). The
    tests below are applied to ``||g - (A.T A + damp^2) dx|| + gamma_m ||A||_F^2 ||dx||``
    ``+ eps (||A|| (||r|| + ||A|| ||x||) + ||c||)`` (the last term: the rounding of the read
    that gave ``g``, which ``dx`` inherits) and to the bracket ``||r|| -+ ||A dx||`` (each on its unfavourable side); ``dx`` is
    ``~ eps cond(A)^2 ||x||``, so this is as sharp as a read's own rounding. If a test does
    not hold on the bounds, the next read checks the step as usual
    (``history[-1]["from_gram"]`` says which, and ``reason`` says "checked from A.T A").

    Stopping codes. Every test is evaluated on the true residual ``r = b - A x`` of the
    returned ``x`` (the pass that verifies it is counted; for ``normal_cholqr``'s last step
    on the bounds from the read before it, as above; for the minimum-norm problem
    ``A x - b`` as the refinement accumulates it, equal to the true one to
    ``eps ||A|| ||x||``, so tolerances 0 can end in istop 1), with ``||A||`` estimated by
    ``||S A||_F`` (``normal_cholqr``: ``||A||_F`` itself, from ``A.T A``;
    ``sqrt(||A||_F^2 + n damp^2)`` for ridge), ``g = A.T r - damp^2 x - c``
    and the rounding level ``rho = 10 sqrt(n) eps (||A|| (||r|| + ||A|| ||x||) + ||c||)``
    (for the minimum-norm problem ``10 sqrt(m) eps (||A|| ||x|| + ||b||)``). The codes
    are scipy lsqr's with the same wording (``message``), plus 8 and 9; the same code
    means the same thing for every method:

    =====  ======================================================================  =========
    istop  meaning                                                                 converged
    =====  ======================================================================  =========
    0      ``b = 0`` (no ``c``): ``x = 0`` is exact, no pass                       yes
    1      ``||r|| <= btol ||b|| + atol ||A|| ||x||`` (minimum-norm problem:       yes
           ``||A x - b|| <= btol ||b|| + atol ||A|| ||x||``)
    2      ``||g|| <= atol ||A|| ||r||``                                           yes
    3      LSQR's estimate of ``cond(A N)`` exceeded ``conlim``                    no
    4      minimum-norm problem: the refinement stopped improving with             yes
           ``||A x - b|| <= rho``
    5      the refinement stopped improving (a verified step reduced ``||g||``     yes
           by less than half, or LSQR spent its 3 restarts) with ``||g|| <= rho``
    6      LSQR's estimate of ``cond(A N)`` is beyond ``1 / eps``                  no
    7      ``maxiter`` reached (``ConvergenceWarning``)                            no
    8      ``sketch_solve``: nothing verified (``verified`` is False)              no
    9      as 4 or 5, but above ``rho``: the sketch did not embed ``A``, or ``A``  no
           is numerically rank-deficient with ``b`` outside its numerical range
    =====  ======================================================================  =========

    Codes 3, 6, 7 and 9 return the verified iterate with the smallest ``||g||``.

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
    kind, d, d_name = sketch_keywords(kind, d, sketch_kind, sketch_size)
    req = validate(A, b, method=method, atol=atol, btol=btol, maxiter=maxiter, damp=damp, c=c, seed=seed, x0=x0,
                   kind=kind, d=d, conlim=conlim, d_name=d_name)
    s = _orient(req)
    session = CheckpointSession.open(checkpoint, s, b_checksum=_rhs_checksum)
    if not s.minnorm and req.c is None and s.bnorm == 0.0:  # b = 0: x = 0 exactly, as scipy's lsqr
        return zero_result(s, session, stacklevel=2)
    fac, gram_A = sketch_stage(s, session, stacklevel=2)  # pass 1 (or the checkpoint's sketch)
    out = run(s, fac, gram_A, session)  # the method's runner (and the one it hands over to)
    return build_result(s, fac, out, session, stacklevel=2)


def _orient(req) -> Solve:
    """The tall factor ``T`` (``A``, or ``A.T`` for the minimum-norm problem), the method that runs and
    why, the sketch size ``d``, and ``b`` beside ``T``'s rows (scaled when its norm nears over/underflow)."""
    data = req.data.transposed() if req.minnorm else req.data
    T_m, T_n = data.shape
    seed = resolve_seed(req.seed)
    if req.method == "auto":
        meth, reason = choose_method(T_m, T_n, lazy=data.out_of_core, itemsize=req.dtype.itemsize, atol=req.atol,
                                     c_given=req.c is not None, minnorm=req.minnorm, threads=data.workers)
    else:
        meth, reason = req.method, "requested"
    if meth == "normal_cholqr" and (req.minnorm or req.c is not None):
        meth, reason = "cholqr", reason + "; normal_cholqr solves m >= n problems without c: ran cholqr"
    # cholqr only needs A N moderately conditioned (d = 2n: cond(A N) ~ 6, Gram ~ 35), which halves
    # the QR of the sketch; LSQR's iteration count and sketch_solve's bound improve with d = 4n
    if meth == "sketch_precondition" and req.d is None and not req.minnorm:
        # the sketch size the cost model finds cheapest for this atol (4n out of core), at the nominal
        # rates: d, hence x, is a function of the call alone, the same on any machine and at any load
        f = lsqr_sketch_factor(T_m, T_n, lazy=data.out_of_core, itemsize=req.dtype.itemsize, atol=req.atol)
        if f != 4:
            reason += f"; sketch size {f}n (cost model: fewer LSQR iterations for the larger factor)"
    else:
        f = 4
    d = req.d or max((2 if meth in ("cholqr", "normal_cholqr") else f) * T_n, 8)
    if req.d is None and req.kind in ("uniform", "srct"):
        d = min(d, T_m)  # these draw d distinct rows of m (d >= T_n still holds: T_m >= T_n)
    s = Solve(req=req, data=data, meth=meth, reason=reason, d=d, seed=seed)
    # sb: an exact power-of-two scale of b, 1 unless its norm nears over/underflow (_scale.py)
    if req.minnorm:  # b is short (m < n): held here as the right-hand side of T.T y = b
        s.cT, s.sb = scale_vector(np.asarray(req.b).astype(np.float64))
        s.bnorm = float(np.linalg.norm(s.cT))
    else:
        s.cT = req.c
        bd = data.distribute(req.b)
        with np.errstate(over="ignore", under="ignore"):  # a norm that overflows is scaled next
            bnorm = data.norm(bd)
        s.bd, s.bnorm, s.sb = scale_rhs(data, bd, bnorm)
    return s


def _rhs_checksum(s: Solve) -> str:
    """``b`` in a checkpoint's fingerprint: a checksum of every entry (the backend reads ``b``, not ``A``)."""
    b = s.req.b
    h = s.data.checksum(s.bd) if s.bd is not None else int(_digest(s.cT)[:16], 16)
    return f"{b.dtype}{list(b.shape)}:{h:016x}"
