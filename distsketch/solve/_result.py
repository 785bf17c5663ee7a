"""The result object of :func:`distsketch.lstsq`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LstsqResult", "MESSAGES", "CONVERGED", "NOT_VERIFIED", "STALLED", "rounding_level", "rounding_stop"]

# scipy.sparse.linalg.lsqr's istop codes and wording (0-7), and two of distsketch's own (8, 9)
MESSAGES = (
    "The exact solution is x = 0",
    "Ax - b is small enough, given atol, btol",
    "The least-squares solution is good enough, given atol",
    "The estimate of cond(Abar) has exceeded conlim",
    "Ax - b is small enough for this machine",
    "The least-squares solution is good enough for this machine",
    "Cond(Abar) seems to be too large for this machine",
    "The iteration limit has been reached",
    "Not verified: sketch-and-solve bound only (no pass computed the true residual); use method='cholqr' or "
    "'sketch_precondition' for a verified solution",
    "The refinement stopped improving above the rounding level of the true residual: the sketch did not "
    "embed A (use a mixing sketch, kind='sparse_sign', 'gaussian' or 'srct': uniform sampling fails on "
    "coherent data; or a larger d), or A is numerically rank-deficient (see rank) and b is not in its "
    "numerical range",
)

#: istop codes whose test was evaluated on the true residual of the returned x
CONVERGED = (0, 1, 2, 4, 5)
NOT_VERIFIED = 8
STALLED = 9


def rounding_level(anrm: float, normr: float, xnorm: float, n: int, extra: float = 0.0) -> float:
    """The size of ``||A.T r||`` (or of ``||r||`` for a consistent system) that rounding alone explains.

    A backward-stable solution is the exact one of ``A + dA`` with ``||dA|| ~ eps ||A||``, so
    its computed ``A.T r`` is about ``eps ||A|| (||r|| + ||A|| ||x||)``; the factor
    ``10 sqrt(n)`` covers the sums of ``n`` terms (measured ratios stay below 0.3 for
    n = 30 and cond(A) up to 1e15). ``extra`` adds the size of other terms (``eps ||c||``).
    A "good enough for this machine" stop (istop 4 or 5) is reported only when the true
    quantity is below this level.
    """
    eps = np.finfo(np.float64).eps
    return float(10 * np.sqrt(max(n, 1)) * eps * (anrm * (normr + anrm * xnorm) + extra))


def rounding_stop(normar: float, anrm: float, normr: float, xnorm: float, n: int, extra: float = 0.0,
                  code: int = 5) -> int:
    """The istop of a refinement that stopped improving before a tolerance test held, on the returned ``x``.

    ``code`` (5: ``||A.T r - damp^2 x - c||``; 4 for the minimum-norm problem:
    ``||A x - b||``, passed as ``normar``) when that true quantity is within
    :func:`rounding_level` ("good enough for this machine"), else :data:`STALLED` (9, not
    converged). One definition for every solver: LSQR (stagnation of the verified
    iterates, or its restarts spent), the Cholesky QR refinement and its minimum-norm form.
    """
    return code if normar <= rounding_level(anrm, normr, xnorm, n, extra) else STALLED


@dataclass(frozen=True)
class LstsqResult:
    """Outcome of a least-squares solve.

    Attributes
    ----------
    x : numpy.ndarray or dask.array.Array
        The solution (numpy when ``n`` is the short side; a dask array for a lazy
        minimum-norm problem, whose solution is long). Same floating dtype as ``A``.
    y : numpy.ndarray, dask.array.Array or None
        The dual solution ``y = b - A x`` when ``c`` was given (the saddle-point pair).
    method : str
        What ran: ``sketch_solve``, ``sketch_precondition`` or ``cholqr``.
    reason : str
        Why that method (the cost model's estimates for ``method="auto"``).
    istop : int
        scipy lsqr's stopping code (0-7), or 8 (``sketch_solve``: not verified, the
        sketch-and-solve bound only) or 9 (the refinement stalled before a test held on
        the true residual: the sketch did not embed ``A``); ``message`` is its wording.
        Codes 0, 1, 2, 4 and 5 are reported only after the test was evaluated on the true
        residual of the returned ``x`` (``converged``); 4 and 5 mean the true residual
        reached the rounding level (:func:`rounding_level`).
    message : str
    iterations : int
        LSQR iterations, or refinement steps of ``cholqr``.
    passes : int
        Reads of ``A``, counted by the backend (not estimated).
    normr : float
        ``||b - A x||`` (``sqrt(||b - A x||^2 + damp^2 ||x||^2)`` for ridge), computed in
        the last pass from the returned ``x``; when that ``x`` was checked from ``A.T A`` without
        a pass (``normal_cholqr``, ``history[-1]["from_gram"]``), from the last pass's residual and
        the step (an upper bound where the two nearly cancel). For float32 data these figures are
        those of the float64 iterate that ``x`` is rounded from (``res.reason`` says so); for ``sketch_solve`` (``verified`` False),
        the sketched estimate ``||S (A x - b)||``, within a factor ``1 +- eps_sketch`` of
        the true one when the sketch embeds ``A`` (no pass checks it);
        for minimum-norm problems ``||A x - b||`` with ``A x`` accumulated by the refinement
        (right to rounding, ``eps ||A|| ||x||``).
    normar : float
        ``||A.T (b - A x) - damp^2 x - c||`` for the returned ``x`` (an upper bound of it when
        checked from ``A.T A``; NaN where it would cost a pass of its own: ``sketch_solve`` and
        minimum-norm problems).
    anorm : float
        ``||A||_F`` estimated from the sketch (unbiased).
    cond : float
        Condition-number estimate of ``A`` from the sketch's triangular factor.
    rank : int
        Numerical rank kept (``n`` unless ``A`` is rank-deficient).
    eps_sketch : float
        Distortion the sketch size allows, used for the ``sketch_solve`` bound
        ``||A x - b|| <= (1 + eps) / (1 - eps) * min ||A z - b||``.
    seed : int
    history : tuple of dict
        Per pass after the sketch: residual norms, for inspection.
    verified : bool
        Whether ``normr`` and ``normar`` were computed from the returned ``x`` and the true
        ``A`` (False only for ``sketch_solve``).
    """

    x: Any
    y: Any
    method: str
    reason: str
    istop: int
    message: str
    iterations: int
    passes: int
    normr: float
    normar: float
    anorm: float
    cond: float
    rank: int
    eps_sketch: float
    seed: int
    history: tuple = field(default=(), repr=False)
    verified: bool = True

    @property
    def converged(self) -> bool:
        """True only when a stopping test held on the true residual of the returned ``x``."""
        return self.verified and self.istop in CONVERGED
