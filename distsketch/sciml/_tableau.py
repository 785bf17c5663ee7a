"""Butcher tableaux of explicit Runge-Kutta methods, validated once.

A tableau ``(A, b, c)`` with ``s`` stages advances ``x`` by one step ``h`` as

    k_i = f(t + c_i h, x + h sum_{j<i} A_ij k_j),   x_new = x + h sum_i b_i k_i.

It is *explicit* when ``A`` is strictly lower triangular, *consistent* (order >= 1)
when ``sum(b) = 1``, and follows the usual row-sum convention when ``c = A 1``.
The order conditions up to order 4 (Butcher trees; Hairer, Norsett, Wanner, Solving
ODEs I, Table II.2.2) are checked for the order a tableau claims.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError, ShapeError

__all__ = ["Tableau", "TABLEAUX", "get_tableau", "order_of"]

_TOL = 1e-12


def _order_residuals(A: np.ndarray, b: np.ndarray, c: np.ndarray) -> dict[int, float]:
    """Largest violation of the order conditions of each order 1..4."""
    one = np.ones_like(b)
    Ac = A @ c
    return {
        1: abs(b @ one - 1.0),
        2: abs(b @ c - 1 / 2),
        3: max(abs(b @ c**2 - 1 / 3), abs(b @ Ac - 1 / 6)),
        4: max(abs(b @ c**3 - 1 / 4), abs(b @ (c * Ac) - 1 / 8), abs(b @ (A @ c**2) - 1 / 12),
               abs(b @ (A @ Ac) - 1 / 24)),
    }


def order_of(A, b, c) -> int:
    """Highest order ``p <= 4`` whose conditions (and all lower ones) hold to 1e-12; 0 if none."""
    res = _order_residuals(np.asarray(A, float), np.asarray(b, float), np.asarray(c, float))
    p = 0
    for q in (1, 2, 3, 4):
        if res[q] > _TOL:
            break
        p = q
    return p


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta method: ``A`` (s, s) strictly lower triangular, ``b`` (s,), ``c`` (s,).

    Build one with :meth:`from_arrays` (validates) or take a named one from
    :func:`get_tableau`. ``order`` is the classical order (at most 4 is checked).
    The arrays are read-only copies.
    """

    name: str
    A: np.ndarray = field(repr=False)
    b: np.ndarray = field(repr=False)
    c: np.ndarray = field(repr=False)
    order: int

    @property
    def stages(self) -> int:
        return int(self.b.shape[0])

    @classmethod
    def from_arrays(cls, A, b, c=None, *, order: int | None = None, name: str = "user") -> "Tableau":
        """Validate and freeze a user tableau.

        Parameters
        ----------
        A : array_like, shape (s, s)
            Stage coefficients; must be strictly lower triangular (explicit method).
        b : array_like, shape (s,)
            Weights; ``sum(b)`` must be 1 (consistency).
        c : array_like, shape (s,), optional
            Nodes; default ``A @ 1``. When given it must equal ``A @ 1``.
        order : int, optional
            The order the method claims; its order conditions (up to 4) are checked.
            Default: the highest order whose conditions hold (up to 4).
        name : str
            Label used in tables and plots.

        Raises
        ------
        ShapeError
            ``A`` not square, or ``b``/``c`` not of length ``s``.
        ParameterError
            Non-finite entries; ``A`` not strictly lower triangular; ``sum(b) != 1``;
            ``c != A 1``; order conditions of the claimed order violated.
        """
        A = np.array(A, dtype=np.float64)
        b = np.array(b, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
            raise ShapeError(f"tableau A must be a square (s, s) matrix with s >= 1; received shape {A.shape}; "
                             "pass the stage coefficients of an s-stage method")
        s = A.shape[0]
        if b.shape != (s,):
            raise ShapeError(f"tableau b must have shape ({s},) to match A of shape {A.shape}; received shape "
                             f"{b.shape}; pass one weight per stage")
        c = A.sum(axis=1) if c is None else np.array(c, dtype=np.float64)
        if c.shape != (s,):
            raise ShapeError(f"tableau c must have shape ({s},) to match A of shape {A.shape}; received shape "
                             f"{c.shape}; pass one node per stage (or omit c to use A @ 1)")
        if not (np.isfinite(A).all() and np.isfinite(b).all() and np.isfinite(c).all()):
            raise ParameterError("tableau entries must be finite; received NaN or Inf in A, b or c; "
                                 "check the coefficients")
        upper = np.triu(A)
        if np.any(upper != 0):
            i, j = np.argwhere(upper != 0)[0]
            raise ParameterError(f"tableau A must be strictly lower triangular (an explicit method); received "
                                 f"A[{i}, {j}] = {A[i, j]!r}; implicit methods are not supported, move the "
                                 "coefficient below the diagonal or use another method")
        if abs(b.sum() - 1.0) > _TOL:
            raise ParameterError(f"tableau weights must sum to 1 (consistency); received sum(b) = {b.sum()!r}; "
                                 "rescale b")
        if np.max(np.abs(c - A.sum(axis=1))) > _TOL:
            raise ParameterError(f"tableau nodes must satisfy c = A @ 1; received c = {c.tolist()} but A @ 1 = "
                                 f"{A.sum(axis=1).tolist()}; omit c to use A @ 1")
        found = order_of(A, b, c)
        if order is None:
            order = found
        else:
            if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
                raise ParameterError(f"tableau order must be a positive integer; received {order!r}")
            order = int(order)
            if min(order, 4) > found:
                raise ParameterError(f"tableau {name!r} claims order {order} but satisfies the order "
                                     f"conditions only up to order {found}; correct the coefficients or the "
                                     "claimed order")
        for arr in (A, b, c):
            arr.setflags(write=False)
        return cls(name=str(name), A=A, b=b, c=c, order=order)


def _named() -> dict[str, Tableau]:
    third = 1.0 / 3.0
    specs = {
        # forward Euler, order 1
        "euler": ([[0.0]], [1.0], 1),
        # explicit midpoint, order 2
        "midpoint": ([[0.0, 0.0], [0.5, 0.0]], [0.0, 1.0], 2),
        # Heun's method (explicit trapezoid), order 2 (torchdiffeq's "heun2")
        "heun": ([[0.0, 0.0], [1.0, 0.0]], [0.5, 0.5], 2),
        # the classical Runge-Kutta method, order 4
        "rk4": ([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1.0, 0]],
                [1 / 6, 1 / 3, 1 / 3, 1 / 6], 4),
        # Kutta's 3/8 rule, order 4 (torchdiffeq's fixed-grid "rk4" is this one)
        "rk4_38": ([[0, 0, 0, 0], [third, 0, 0, 0], [-third, 1.0, 0, 0], [1.0, -1.0, 1.0, 0]],
                   [1 / 8, 3 / 8, 3 / 8, 1 / 8], 4),
    }
    return {k: Tableau.from_arrays(A, b, order=p, name=k) for k, (A, b, p) in specs.items()}


TABLEAUX: dict[str, Tableau] = _named()


def get_tableau(method) -> Tableau:
    """Return the :class:`Tableau` named ``method`` (or ``method`` itself if it is one).

    Names: ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` (classical), ``"rk4_38"``
    (3/8 rule, torchdiffeq's fixed-grid ``"rk4"``).

    Raises
    ------
    ParameterError
        Unknown name.
    InputTypeError
        Neither a name nor a Tableau.
    """
    if isinstance(method, Tableau):
        return method
    if isinstance(method, str):
        try:
            return TABLEAUX[method]
        except KeyError:
            raise ParameterError(f"unknown integrator {method!r}; expected one of {sorted(TABLEAUX)} or a "
                                 "Tableau (Tableau.from_arrays(A, b, order=...))") from None
    from ..errors import InputTypeError

    raise InputTypeError(f"an integrator must be a name or a Tableau; received {type(method).__name__}; pass "
                         f"one of {sorted(TABLEAUX)} or Tableau.from_arrays(A, b)")
