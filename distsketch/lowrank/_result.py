"""Result objects of the low-rank drivers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SVDResult", "QBResult", "NystromResult"]


@dataclass(frozen=True)
class SVDResult:
    """``A ~ U diag(s) Vt``.

    Attributes
    ----------
    U : numpy.ndarray or dask.array.Array
        ``m x k``, orthonormal columns; a dask array when ``A`` was lazy and tall.
    s : numpy.ndarray
        The ``k`` singular values, descending.
    Vt : numpy.ndarray or dask.array.Array
        ``k x n``, orthonormal rows (a dask array for a lazy wide ``A``).
    passes : int
        Reads of ``A``, counted by the backend.
    error_estimate : float
        A-posteriori estimate of ``||A - U diag(s) Vt||_F`` (see each method's Notes).
    method : str
        What ran; ``reason`` says why, and how many power or Krylov iterations.
    n_power_iter : int
    seed : int
    """

    U: Any
    s: Any
    Vt: Any
    passes: int
    error_estimate: float
    method: str
    reason: str
    n_power_iter: int
    seed: int
    norm_fro: float = field(default=float("nan"))

    @property
    def rank(self) -> int:
        return len(self.s)


@dataclass(frozen=True)
class QBResult:
    """``A ~ Q B`` with ``Q`` (``m x k``) orthonormal and ``B = Q.T A`` (``k x n``)."""

    Q: Any
    B: Any
    passes: int
    error_estimate: float
    norm_fro: float
    history: tuple = field(default=(), repr=False)
    seed: int = 0


@dataclass(frozen=True)
class NystromResult:
    """``A ~ U diag(lam) U.T`` for symmetric positive semidefinite ``A``."""

    U: Any
    lam: Any
    passes: int
    shift: float
    seed: int
    n_power_iter: int = 0
