"""The pass protocol: one primitive, :meth:`RowData.row_pass`, that reads every row block once.

A *pass* maps a kernel over the row blocks ``A_i = A[r0:r1, :]`` of the matrix::

    dist_out_i, reduced_i = kernel(A_i, r0, dist_in_i, *small)

* ``dist_in_i`` are the matching row blocks of distributed operands (vectors or
  thin matrices with ``m`` rows: ``b``, the LSQR vector ``u``), which stay where
  the rows live;
* ``small`` are small operands broadcast to every block (``v``, an operator);
* ``dist_out_i`` become new distributed operands, aligned with the rows of ``A``;
* ``reduced_i`` (a tuple of arrays) are summed over blocks in a fixed order.

Every call is one read of ``A`` and increments :attr:`RowData.passes`. The first
pass also checks that ``A`` (and every distributed operand flagged for checking) is
finite, and names the offending row range if not. A backend implements the
primitive and the handling of distributed operands; :mod:`distsketch.passes` builds
every fused operation the algorithms need from it, once, for all backends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import NonFiniteError

__all__ = ["RowData", "check_finite_block", "run_kernel"]


def check_finite_block(X: np.ndarray, r0: int, what: str = "A", c0: int = 0) -> None:
    """Raise :class:`NonFiniteError` naming the chunk if ``X`` (rows ``r0:``) holds NaN/Inf.

    The fast path is one column sum (NaN and Inf propagate through it); the exact
    scan runs only when that sum is not finite.
    """
    if X.size == 0:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        s = X.sum(axis=0)
    if np.isfinite(s).all():
        return
    bad = ~np.isfinite(X)
    if not bad.any():  # the sum overflowed on finite data
        return
    i, j = np.argwhere(bad)[0]
    ncols = X.shape[1] if X.ndim == 2 else 1
    raise NonFiniteError(
        f"{what} holds {int(bad.sum())} non-finite value(s) in the chunk of rows {r0}:{r0 + X.shape[0]}, "
        f"columns {c0}:{c0 + ncols} (first: {X[i, j]} at row {r0 + int(i)}, column {c0 + int(j)}); "
        "distsketch needs finite data: clean or mask these entries first"
    )


def _finite(parts) -> bool:
    return all(np.isfinite(p).all() for p in parts)


def run_kernel(kernel, Ai, r0, dist_i, small, check: bool):
    """Run one block of a pass; with ``check``, verify that ``Ai`` is finite.

    ``kernel`` is a :class:`distsketch.passes.Kernel` (a plain function is taken as one
    that does not propagate). A kernel marked ``propagates_nonfinite`` multiplies every entry of ``Ai`` by a
    nonzero (``S A`` for a mixing ``S``, ``A v``, ``A.T A``): a NaN or Inf anywhere in the
    block then shows in its outputs, so only non-finite outputs trigger the exact scan
    and a clean block costs no extra sweep. Other kernels scan the block first.
    """
    propagates = getattr(kernel, "propagates_nonfinite", False)
    if check and not propagates:
        check_finite_block(Ai, r0)
    douts, reds = kernel(Ai, r0, dist_i, *small)
    if check and propagates and not (_finite(douts) and _finite(reds)):
        check_finite_block(Ai, r0)
    return douts, reds


class RowData(ABC):
    """An ``m x n`` matrix held in row blocks, with a pass counter.

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    passes : int
        Number of reads of the whole matrix made so far (one per :meth:`row_pass`).
    """

    shape: tuple[int, int]
    dtype: np.dtype
    #: whether a pass reads storage (cost models weigh passes by this)
    out_of_core: bool = False
    #: whether distributed outputs of :meth:`dist_pass` may be deferred (computed where used)
    lazy: bool = False

    def __init__(self):
        self.passes = 0
        self._checked = False

    @property
    def checked(self) -> bool:
        """Whether a completed pass has verified that the data is finite."""
        return self._checked

    @abstractmethod
    def row_pass(
        self,
        kernel: Callable,
        *,
        dist: Sequence[Any] = (),
        small: Sequence[Any] = (),
        dist_out: Sequence[tuple[int, np.dtype]] = (),
    ) -> tuple[tuple, tuple]:
        """Run ``kernel`` over every row block; return ``(dist_outputs, reduced_sums)``.

        ``dist_out`` gives ``(n_columns, dtype)`` of each distributed output so lazy
        backends can describe them before they are computed.
        """

    @abstractmethod
    def dist_pass(self, kernel: Callable, *, dist: Sequence[Any] = (), small: Sequence[Any] = (),
                  dist_out: Sequence[tuple[int, np.dtype]] = ()) -> tuple[tuple, tuple]:
        """Like :meth:`row_pass` over distributed operands only: ``A`` is not read, no pass is counted.

        ``kernel(r0, dist_i, *small) -> (dist_out_i, reduced_i)``. Used for the thin
        ``m x k`` factors of low-rank methods (Gram matrices, ``Y R^{-1}``).
        """

    @abstractmethod
    def distribute(self, x, *, check: bool = True):
        """Place an ``m``-row operand (``b``, an initial vector) alongside the rows of ``A``.

        With ``check`` its finiteness is verified (eagerly or in the next pass).
        """

    @abstractmethod
    def gather(self, x) -> np.ndarray:
        """Bring a distributed operand to this process as a numpy array."""

    @abstractmethod
    def combine(self, fn: Callable, *xs, ncols: int | None = None, dtype=None):
        """Apply ``fn`` blockwise to aligned distributed operands (no read of ``A``)."""

    @abstractmethod
    def norm(self, x) -> float:
        """Euclidean (Frobenius) norm of a distributed operand; reads the operand, not ``A``."""

    def persist(self, x):
        """Store a deferred distributed operand that will be used several times (eager backends: ``x``)."""
        return x

    def _count(self) -> bool:
        """Record a pass; return whether this pass must check finiteness."""
        self.passes += 1
        return not self._checked
