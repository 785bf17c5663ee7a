"""The stages of :func:`distsketch.lstsq` after validation: the sketch, one runner per method, the result.

A :class:`Solve` holds one call in the solver's coordinates: the tall factor ``T`` (``A``,
or ``A.T`` for the minimum-norm problem) as a backend, the method that runs and why, the
sketch size, ``b`` placed beside ``T``'s rows, and the exact power-of-two scales of ``A``
and ``b`` (:mod:`._scale`). :func:`sketch_stage` makes (or restores) the sketch and its
factor; :data:`RUNNERS` maps each method to the function that runs it, which returns an
:class:`Outcome` or hands over to another method (``normal_cholqr`` to ``cholqr`` beyond
its condition limit, ``cholqr`` to LSQR when its Gram factor fails); :func:`build_result`
scales the answer back, warns, and makes the :class:`~distsketch.solve.LstsqResult`.

Nothing here asks which backend holds the data: every read goes through
:mod:`distsketch.passes` and every distributed result through :meth:`RowData.output`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg

from .. import passes
from ..errors import ConvergenceWarning, IllConditionedWarning, ParameterError
from ..operators import make_operator
from ._cholqr import (NORMAL_COND_LIMIT, GramFactorError, cholqr_minnorm, cholqr_solve, gram_cholesky,
                      normal_contraction)
from ._lsqr import LSQRState, lsqr_precond
from ._precond import Precond, SketchFactor, build_precond
from ._result import MESSAGES, NOT_VERIFIED, STALLED, LstsqResult
from ._scale import SAFE, scale_sketch
from ._validate import Request

__all__ = ["Solve", "Outcome", "sketch_stage", "RUNNERS", "run", "build_result", "DEFAULT_MAXITER", "sketch_eps"]

#: iteration limits when ``maxiter`` is None: LSQR iterations, or refinement steps of the Cholesky QR methods
DEFAULT_MAXITER = {"sketch_precondition": 200, "cholqr": 20, "normal_cholqr": 20, "sketch_solve": 0}


def sketch_eps(n: int, d: int) -> float:
    """Distortion a d-row sketch allows for an (n+1)-dimensional subspace (Davidson-Szarek with t=3,
    which sparse sign embeddings match in practice): sqrt((n+1)/d) + 3/sqrt(d), capped below 1."""
    return float(min(0.99, math.sqrt((n + 1) / d) + 3 / math.sqrt(d)))


@dataclass
class Solve:
    """One call in the solver's coordinates (see the module notes); changed as the stages run."""

    req: Request
    data: Any  # RowData of T (after the sketch: of sA * T)
    meth: str
    reason: str
    d: int
    seed: int
    bd: Any = None  # b beside the rows of T (None for the minimum-norm problem, whose b is cT)
    cT: np.ndarray | None = None  # c, or the minimum-norm problem's right-hand side
    bnorm: float = 0.0
    sb: float = 1.0  # b (or cT) is sb * b
    sA: float = 1.0  # data is sA * T
    damp: float = 0.0
    x0: np.ndarray | None = None

    @property
    def minnorm(self) -> bool:
        return self.req.minnorm

    @property
    def T_n(self) -> int:
        return self.data.shape[1]

    def maxiter(self, meth: str | None = None) -> int:
        """The caller's ``maxiter``, or the default of the method that runs (:data:`DEFAULT_MAXITER`)."""
        return self.req.maxiter if self.req.maxiter is not None else DEFAULT_MAXITER[meth or self.meth]

    def scale_options(self, sA: float, anorm: float) -> None:
        """Enter the scaled problem ``sA A``, ``sb b``: ``damp' = sA damp``, ``c' = sA sb c``,
        ``x0' = (sb / sA) x0``; ``anorm`` is ``||A'||_F`` (or the sketch's estimate of it)."""
        self.sA = sA
        if self.req.damp * sA > 1e150:  # damp'^2 would overflow: relative to ||A||, damp is beyond float64
            raise ParameterError(
                f"damp={self.req.damp:.3g} is so large relative to A (||A||_F ~ {anorm / sA:.3g}) "
                "that damp^2 overflows float64; the ridge solution is x = 0 to working precision: pass a smaller damp")
        self.damp = self.req.damp * sA
        if self.req.c is not None:
            self.cT = self.req.c * sA * self.sb
        if self.req.x0 is not None:
            self.x0 = self.req.x0 * self.sb / sA


class Outcome(NamedTuple):
    """What a runner returns, in the scaled problem's units."""

    x: Any  # numpy n-vector; for the minimum-norm problem the distributed m-vector (T's rows)
    y: Any  # the distributed dual b - A x when c was given, else None
    istop: int
    itn: int
    normr: float
    normar: float
    history: list


class _SketchPass:
    """The sketch's read (``[S A, S b]``), callable again on the scaled data when the first one
    overflowed (:func:`~._scale.scale_sketch`)."""

    def __init__(self, op, bd):
        self.op, self.bd = op, bd

    def __call__(self, data):
        sk = passes.left_sketch(data, self.op, extra=[] if self.bd is None else [self.bd], dtype=np.float64)
        return sk[0], (sk[1] if self.bd is not None else None)


def sketch_stage(s: Solve, session, stacklevel: int):
    """Pass 1 (or the checkpoint's): the factor every method starts from; returns ``(fac, gram_A)``.

    ``fac`` is the factored sketch (:func:`~._precond.build_precond`): preconditioner,
    sketch-and-solve solution, estimates of ``||A||_F`` and ``cond(A)``, numerical rank.
    ``normal_cholqr`` reads ``A.T A`` and ``A.T b`` instead (:func:`_normal_stage`), and
    ``fac`` is then the Cholesky factor of ``A.T A``; ``gram_A`` is ``(A.T A, A.T b)`` or None.
    """
    req = s.req
    # the operator first (cheap; it checks d against m) even where normal_cholqr may not need it
    op = make_operator(req.kind, s.d, s.data.shape[0], seed=s.seed, nnz=min(8, s.d))
    saved = session.saved_sketch() if session is not None else None
    gram_A = None
    if s.meth == "normal_cholqr":
        got, gram_A = _normal_stage(s, session, saved)
        if got is not None:
            return got, gram_A
        # beyond its limit: the sketch is read (or restored), cholqr runs; the Gram of A stays in the
        # checkpoint so that a resumed solve repeats this decision without reading A for it
    if req.built:  # a backend lstsq built itself: its blocks may suit the sketch
        s.data.prefer_sketch_blocks(s.d)
    if saved is not None and saved[0] is not None:
        SA, Sb, _, sA = saved
        if sA != 1.0:
            s.data = s.data.scaled(sA)
    else:
        sk = _SketchPass(op, s.bd)
        SA, Sb = sk(s.data)
        s.data, SA, Sb, sA = scale_sketch(s.data, SA, Sb, sk)
    s.scale_options(sA, float(np.linalg.norm(SA)))
    # the iterative methods only need R as a preconditioner (and x_sketch as a start): the Cholesky of
    # the sketch's Gram matrix is enough while cond(S A) <= 1e6 (QR otherwise); sketch_solve's x is the QR's
    fac = build_precond(SA, None if Sb is None else Sb[:, 0], damp=s.damp,
                        method="qr" if s.meth == "sketch_solve" else "gram")
    warn_ill_conditioned(s, fac, stacklevel + 1)
    if s.req.method == "auto" and not s.minnorm and s.req.c is None:
        s.reason += f"; cond estimate {fac.cond:.3g}"
    if session is not None:
        session.save_sketch(SA, Sb, gram_A, sA)
        session.restore_iteration()
    return fac, None


def _normal_stage(s: Solve, session, saved):
    """``normal_cholqr``'s first read: ``A.T A`` and ``A.T b``, no sketch; returns ``(fac, (G, h))``.

    ``fac`` holds ``N = R^{-1}`` with ``R.T R = A.T A + damp^2 I`` (:func:`~._cholqr.gram_cholesky`),
    ``||A||_F`` (exact: ``sqrt(trace(A.T A))``) and the condition estimate of ``R``. It is None,
    and ``s.meth`` becomes ``cholqr`` with ``s.reason`` saying why, when ``||A||_F`` is outside the
    range where ``A.T A`` is formed without over- or underflow (the sketch's path scales ``A``
    exactly), when the Cholesky fails, or when the column-scaled factor's 2-norm condition
    estimate exceeds ``NORMAL_COND_LIMIT``: the Gram of ``A`` is then too inaccurate to refine on.
    """
    if saved is not None and saved[2] is not None:  # a resume: the Gram of A of the first read
        G, h = saved[2]
    else:
        G, (h,) = passes.normal_gram(s.data, extra=[s.bd])
        h = h[:, 0]
    fro2 = float(np.trace(G))
    why = None
    if not (math.isfinite(fro2) and SAFE[0] ** 2 <= fro2 <= SAFE[1] ** 2):
        why = f"||A||_F^2 = {fro2:.3g} is beyond the range where A.T A is formed without over- or underflow"
    else:
        s.scale_options(1.0, math.sqrt(fro2))  # (a damp whose square overflows is refused here)
        try:
            R, cond_s, cond = gram_cholesky(G, s.damp)
        except GramFactorError as exc:
            why = f"the Cholesky of A.T A failed ({exc})"
        else:
            if not cond_s <= NORMAL_COND_LIMIT:
                why = (f"2-norm cond estimate {cond_s:.3g} (column-scaled Cholesky factor of A.T A) > "
                       f"{NORMAL_COND_LIMIT:.0e}: A.T A is too inaccurate")
            elif not cond <= 1 / np.finfo(np.float64).eps:
                # well conditioned once its columns are scaled, but not as it is: every other method (and
                # gelsd) returns the minimum-norm solution over A's numerical rank there, and warns
                why = (f"cond estimate {cond:.3g} > 1/eps: A is numerically rank-deficient as given (its "
                       "column-scaled Gram is not), and the minimum-norm solution over its numerical rank is cholqr's")
    if why is not None:
        s.meth, s.reason = "cholqr", s.reason + f"; {why}, ran cholqr (its sketch and Gram of A R^-1: two more reads)"
        if session is not None and saved is None:
            session.save_sketch(None, None, (G, h), 1.0)
        return None, (G, h)
    n = G.shape[0]
    hz = scipy.linalg.solve_triangular(R, h, trans="T", check_finite=False)  # R^{-T} A.T b
    x = scipy.linalg.solve_triangular(R, hz, check_finite=False)  # the normal-equation solution
    rho = float(np.sqrt(max(s.bnorm**2 - float(hz @ hz), 0.0)))  # ||b - A x||^2 = ||b||^2 - h.T G^-1 h
    fac = SketchFactor(Precond(R=R), x, rho, cond, n, math.sqrt(fro2))
    s.reason += f"; 2-norm cond estimate {cond_s:.3g} <= {NORMAL_COND_LIMIT:.0e} (column-scaled Cholesky of A.T A)"
    if s.req.method == "auto":
        s.reason += f"; cond estimate {cond:.3g}"
    if session is not None:
        session.save_sketch(None, None, (G, h), 1.0)
        session.restore_iteration()
    return fac, (G, h)


def warn_ill_conditioned(s: Solve, fac, stacklevel: int) -> None:
    eps = np.finfo(np.float64 if s.req.dtype == np.float64 else np.float32).eps
    if fac.cond > 1 / eps or fac.rank < s.T_n:
        warnings.warn(
            f"cond(A) is estimated at {fac.cond:.3g}, beyond 1/eps = {1 / eps:.3g} for {s.req.dtype}: A is "
            f"numerically rank-deficient (rank {fac.rank} of {s.T_n} kept), and the solution returned is the "
            "minimum-norm one over that rank (or the sketch did not embed A: the refinement then reports "
            "istop 9). Silence with warnings.simplefilter('ignore', "
            "distsketch.IllConditionedWarning)", IllConditionedWarning, stacklevel=stacklevel + 1)


# ---- one runner per method: (Solve, factored sketch, Gram of A, session) -> Outcome, or None to hand over ----

def run_sketch_solve(s: Solve, fac, gram_A, session) -> Outcome:
    """Nothing is verified: ``normr`` is the sketched ``||S (A x - b)||`` (istop 8)."""
    return Outcome(fac.x_sketch, None, NOT_VERIFIED, 0, fac.rho, float("nan"), [{"normr_sketched": fac.rho}])


def run_normal_cholqr(s: Solve, fac, gram_A, session) -> Outcome | None:
    """Corrected semi-normal refinement on the Cholesky factor of ``A.T A`` (``fac``, from
    :func:`_normal_stage`, which handed over to ``cholqr`` already when that factor is unusable):
    one read per step, the last step checked from ``A.T A`` without a read when the bounds allow."""
    state = session.state_for("cholqr") if session is not None else None
    n = fac.precond.R.shape[0]
    factor = None
    if state is None:  # (resuming the refinement: the checkpoint holds R2 and x)
        factor = (np.eye(n), scipy.linalg.solve_triangular(fac.precond.R, gram_A[1], trans="T", check_finite=False))
    x, r, istop, itn, normr, normar, hist = cholqr_solve(
        s.data, s.bd, s.cT, fac.precond, damp=s.damp, atol=s.req.atol, btol=s.req.btol, maxiter=s.maxiter(),
        bnorm=s.bnorm, anorm_A=fac.anorm, x0=s.x0, checkpoint=session, state=state, factor=factor, min_steps=1,
        gram=gram_A[0], contraction=normal_contraction(fac.precond.R), cond=fac.cond)
    s.reason += f"; {itn} refinement step(s)"
    if hist and hist[-1].get("from_gram"):
        s.reason += ", the last checked from A.T A (no read)"
    return Outcome(x, None, istop, itn, normr, normar, hist)


def run_cholqr(s: Solve, fac, gram_A, session) -> Outcome | None:
    """Randomized Cholesky QR and refinement; without ``c``, a failed Gram factor hands over to LSQR."""
    if s.minnorm:
        return _run_minnorm(s, fac, session)
    try:
        x, r, istop, itn, normr, normar, hist = cholqr_solve(
            s.data, s.bd, s.cT, fac.precond, damp=s.damp, atol=s.req.atol, btol=s.req.btol, maxiter=s.maxiter(),
            bnorm=s.bnorm, anorm_A=fac.anorm, x0=s.x0, checkpoint=session,
            state=session.state_for("cholqr") if session is not None else None)
    except GramFactorError as exc:
        if s.req.c is not None:
            raise
        s.meth, s.reason = "sketch_precondition", f"cholqr's Gram factor failed ({exc}); fell back to LSQR"
        return None
    y = r[:, 0] if r.ndim == 2 else r
    return Outcome(x, y if s.req.c is not None else None, istop, itn, normr, normar, hist)


def _run_minnorm(s: Solve, fac, session) -> Outcome:
    """``T = A.T``: the minimum-norm solution of ``T.T y = c`` is the caller's ``x``, and ``c - T.T y = b - A x``."""
    y, istop, itn, normr, hist = cholqr_minnorm(
        s.data, s.cT, fac.precond, atol=s.req.atol, btol=s.req.btol, maxiter=s.maxiter(), anorm_A=fac.anorm,
        checkpoint=session, state=session.state_for("minnorm") if session is not None else None)
    return Outcome(y[:, 0] if y.ndim == 2 else y, None, istop, itn, normr, float("nan"), hist)


def run_lsqr(s: Solve, fac, gram_A, session) -> Outcome:
    """Sketch-preconditioned LSQR from ``x0`` (default: the sketch-and-solve solution), verified and refined."""
    start = s.x0 if s.x0 is not None else fac.x_sketch
    state = session.state_for("lsqr") if session is not None else None
    lstate = LSQRState.from_arrays(s.data, state) if state is not None else None
    x, r, istop, itn, normr, normar, hist = lsqr_precond(
        s.data, s.bd, fac.precond, start, damp=s.damp, atol=s.req.atol, btol=s.req.btol, conlim=s.req.conlim,
        maxiter=s.maxiter(), bnorm=s.bnorm, anorm_A=fac.anorm, checkpoint=session, state=lstate)
    return Outcome(x, None, istop, itn, normr, normar, hist)


RUNNERS = {"sketch_solve": run_sketch_solve, "normal_cholqr": run_normal_cholqr, "cholqr": run_cholqr,
           "sketch_precondition": run_lsqr}


def run(s: Solve, fac, gram_A, session) -> Outcome:
    """The runner of ``s.meth``, and of the method it hands over to (at most two hand-overs)."""
    while True:
        out = RUNNERS[s.meth](s, fac, gram_A, session)
        if out is not None:
            return out


class _NoFactor(NamedTuple):  # b = 0: nothing was factored
    anorm: float
    cond: float
    rank: int


def zero_result(s: Solve, session, stacklevel: int) -> LstsqResult:
    """``b = 0`` (and no ``c``): ``x = 0`` is the exact solution (as scipy's lsqr), before any read of ``A``."""
    s.meth, s.reason = s.req.method, "b = 0: x = 0 is the exact solution"
    out = Outcome(np.zeros(s.req.n), None, 0, 0, 0.0, 0.0, [])
    return build_result(s, _NoFactor(float("nan"), float("nan"), s.req.n), out, session, stacklevel + 1)


def build_result(s: Solve, fac, out: Outcome, session, stacklevel: int) -> LstsqResult:
    """Back from the scaled problem (``x = (sA / sb) x'``), the warnings, the checkpoint removed, the result."""
    x, y, normr, normar, anorm, reason = out.x, out.y, out.normr, out.normar, fac.anorm, s.reason
    if s.sA != 1.0 or s.sb != 1.0:
        x = x * s.sA / s.sb
        y = None if y is None else y / s.sb
        normr, normar, anorm = normr / s.sb, normar / s.sA / s.sb, anorm / s.sA
        reason += f"; A and b scaled by 2^{round(math.log2(s.sA))} and 2^{round(math.log2(s.sb))} internally (exact)"
    if np.dtype(s.req.dtype) != np.float64 and out.istop != NOT_VERIFIED:
        reason += (f"; normr and normar are those of the float64 iterate, returned rounded to {np.dtype(s.req.dtype)} "
                   "(its own residuals can differ by its rounding, ~eps32 ||A|| ||x||)")
    # the minimum-norm x is distributed like T's rows: in the caller's family; otherwise a numpy n-vector
    x = s.data.output(x, dtype=s.req.dtype) if s.minnorm else np.asarray(x).astype(s.req.dtype, copy=False)
    y = None if y is None else s.data.output(y)
    if out.istop == 7:
        warnings.warn(f"lstsq ({s.meth}) reached maxiter={s.maxiter()} before its stopping test held "
                      f"(normr={normr:.3g}, normar={normar:.3g}); x is the best iterate. Raise maxiter "
                      "or loosen atol/btol", ConvergenceWarning, stacklevel=stacklevel + 1)
    if out.istop == STALLED:
        what = f"||A x - b|| = {normr:.3g}" if s.minnorm else f"||A.T r|| = {normar:.3g}"
        warnings.warn(f"lstsq ({s.meth}) did not converge: the refinement stopped improving with the true "
                      f"{what} above the rounding level (sketch kind {s.req.kind!r}, d={s.d}, rank {fac.rank} of "
                      f"{s.T_n} kept); x is the best iterate. Use a mixing kind ('sparse_sign', "
                      "'gaussian', 'srct') or a larger d; if rank < n, A is numerically "
                      "rank-deficient and b is not in its numerical range", ConvergenceWarning,
                      stacklevel=stacklevel + 1)
    if session is not None:
        session.remove()
    return LstsqResult(x=x, y=y, method=s.meth, reason=reason, istop=int(out.istop), message=MESSAGES[out.istop],
                       iterations=int(out.itn), passes=s.data.passes, normr=float(normr), normar=float(normar),
                       anorm=anorm, cond=fac.cond, rank=fac.rank, eps_sketch=sketch_eps(s.T_n, s.d), seed=s.seed,
                       history=tuple(out.history), verified=out.istop != NOT_VERIFIED)
