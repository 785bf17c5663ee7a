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

from .. import passes
from ..errors import ConvergenceWarning, IllConditionedWarning, ParameterError
from ..operators import make_operator
from ._cholqr import NORMAL_COND_LIMIT, GramFactorError, cholqr_minnorm, cholqr_solve, cond2_estimate, normal_factor
from ._lsqr import LSQRState, lsqr_precond
from ._precond import build_precond
from ._result import MESSAGES, NOT_VERIFIED, STALLED, LstsqResult
from ._scale import scale_sketch
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

    def scale_options(self, sA: float, SA) -> None:
        """Enter the scaled problem ``sA A``, ``sb b``: ``damp' = sA damp``, ``c' = sA sb c``,
        ``x0' = (sb / sA) x0``."""
        self.sA = sA
        if self.req.damp * sA > 1e150:  # damp'^2 would overflow: relative to ||A||, damp is beyond float64
            raise ParameterError(
                f"damp={self.req.damp:.3g} is so large relative to A (||S A||_F ~ {np.linalg.norm(SA) / sA:.3g}) "
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
    """The sketch's read (``[S A, S b]``; for ``normal_cholqr`` also ``A.T A`` and ``A.T b``), callable again
    on the scaled data when the first one overflowed (:func:`~._scale.scale_sketch`)."""

    def __init__(self, op, bd, with_gram: bool):
        self.op, self.bd, self.with_gram = op, bd, with_gram
        self.gram_A = None
        self.gram_of = None  # the data (view) the Gram matrix was formed from

    def __call__(self, data):
        if self.with_gram:  # one read: S A, S b, A.T A, A.T b
            SA, Sbs, G_A, hs = passes.sketch_gram(data, self.op, extra=[self.bd])
            self.gram_A, self.gram_of = (G_A, hs[0][:, 0]), data
            return SA, Sbs[0]
        sk = passes.left_sketch(data, self.op, extra=[] if self.bd is None else [self.bd], dtype=np.float64)
        return sk[0], (sk[1] if self.bd is not None else None)


def sketch_stage(s: Solve, session, stacklevel: int):
    """Pass 1 (or the checkpoint's sketch): ``S A``, ``S b``, the scale of ``A``; returns ``(fac, gram_A)``.

    ``fac`` is the factored sketch (:func:`~._precond.build_precond`): preconditioner,
    sketch-and-solve solution, estimates of ``||A||_F`` and ``cond(A)``, numerical rank.
    """
    req = s.req
    op = make_operator(req.kind, s.d, s.data.shape[0], seed=s.seed, nnz=min(8, s.d))
    if req.built:  # a backend lstsq built itself: its blocks may suit the sketch
        s.data.prefer_sketch_blocks(s.d)
    saved = session.saved_sketch() if session is not None else None
    if saved is not None:
        SA, Sb, gram_A, sA = saved
        if sA != 1.0:
            s.data = s.data.scaled(sA)
        if gram_A is None and s.meth == "normal_cholqr":
            s.reason += "; the checkpoint holds no Gram of A"
    else:
        sk = _SketchPass(op, s.bd, s.meth == "normal_cholqr")
        SA, Sb = sk(s.data)
        s.data, SA, Sb, sA = scale_sketch(s.data, SA, Sb, sk)
        gram_A = sk.gram_A
        if gram_A is not None and sk.gram_of is not s.data:
            # A was scaled (exactly, by a power of two) after its Gram matrix was formed: that Gram
            # over- or underflowed (||A||^2 beyond float64), so it is dropped and cholqr runs instead
            gram_A = None
            s.reason += f"; A.T A over- or underflowed (A scaled by {sA:.3g} after the read)"
    s.scale_options(sA, SA)
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
    return fac, gram_A


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
    """The Gram of ``A`` from the sketch's read, used while the sketch says ``cond(A) <= NORMAL_COND_LIMIT``;
    otherwise (or if its Cholesky fails) hands over to ``cholqr``, which forms the Gram of ``A R^-1`` in a
    read of its own (the same decision on a resume: the checkpoint keeps ``S A`` and the Gram of ``A``)."""
    factor = None
    if gram_A is None:  # (the sketch stage said why: a checkpoint without it, or A.T A out of range)
        s.meth, s.reason = "cholqr", s.reason + "; no Gram of A to use: ran cholqr"
        return None
    if fac.precond.R is None or (cond2 := cond2_estimate(fac.precond.R)) > NORMAL_COND_LIMIT:
        c2 = f"{cond2:.3g}" if fac.precond.R is not None else "inf (rank-deficient)"
        s.meth, s.reason = "cholqr", (s.reason + f"; 2-norm cond estimate {c2} > {NORMAL_COND_LIMIT:.0e}: the Gram "
                                      "of A is too inaccurate, ran cholqr (one more read)")
        return None
    s.reason += f"; 2-norm cond estimate {cond2:.3g} <= {NORMAL_COND_LIMIT:.0e}"
    state = session.state_for("cholqr") if session is not None else None
    if state is None:  # (resuming the refinement: the checkpoint holds R2 and x)
        try:
            factor = normal_factor(gram_A[0], gram_A[1], fac.precond.R, s.damp)
        except GramFactorError as exc:
            s.meth, s.reason = "cholqr", s.reason + f"; Cholesky of the preconditioned A.T A failed ({exc}): ran cholqr"
            return None
    x, r, istop, itn, normr, normar, hist = cholqr_solve(
        s.data, s.bd, s.cT, fac.precond, damp=s.damp, atol=s.req.atol, btol=s.req.btol, maxiter=s.maxiter(),
        bnorm=s.bnorm, anorm_A=fac.anorm, x0=s.x0, checkpoint=session, state=state, factor=factor, min_steps=1,
        gram=gram_A[0])
    if hist and hist[-1].get("from_gram"):
        s.reason += "; the last step checked from A.T A (no read)"
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
