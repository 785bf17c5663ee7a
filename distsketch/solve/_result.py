"""The result object of :func:`distsketch.lstsq`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LstsqResult", "MESSAGES"]

# scipy.sparse.linalg.lsqr's istop codes and wording
MESSAGES = (
    "The exact solution is x = 0",
    "Ax - b is small enough, given atol, btol",
    "The least-squares solution is good enough, given atol",
    "The estimate of cond(Abar) has exceeded conlim",
    "Ax - b is small enough for this machine",
    "The least-squares solution is good enough for this machine",
    "Cond(Abar) seems to be too large for this machine",
    "The iteration limit has been reached",
)


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
        scipy lsqr's stopping code (0-7); ``message`` is its wording.
    message : str
    iterations : int
        LSQR iterations, or refinement steps of ``cholqr``.
    passes : int
        Reads of ``A``, counted by the backend (not estimated).
    normr : float
        ``||b - A x||`` (``sqrt(||b - A x||^2 + damp^2 ||x||^2)`` for ridge), computed in
        the last pass from the returned ``x``; for ``sketch_solve``, the sketched estimate;
        for minimum-norm problems ``||A x - b||`` with ``A x`` accumulated by the refinement
        (right to rounding, ``eps ||A|| ||x||``).
    normar : float
        ``||A.T (b - A x) - damp^2 x - c||`` for the returned ``x`` (NaN where it would cost
        a pass of its own: ``sketch_solve`` and minimum-norm problems).
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

    @property
    def converged(self) -> bool:
        return self.istop in (0, 1, 2, 4, 5)
