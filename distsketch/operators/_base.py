"""The sketching-operator base class: a distribution plus a seed, generated lazily.

An operator ``S`` is a ``d x m`` matrix that is never materialised whole. The
contracted dimension ``m`` (rows of ``A`` in ``S @ A``, columns of ``A`` in
``A @ S.T``) is cut into panels of ``panel`` indices; panel ``p`` is drawn from its
own Philox generator (:mod:`distsketch.random.streams`). Any column range of ``S``
is produced from the panels it overlaps, so a chunk of data that covers rows
``[r0, r1)`` meets exactly ``S[:, r0:r1]`` whatever the chunking.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterator

import numpy as np

from ..errors import ParameterError, ShapeError
from ..random.streams import DEFAULT_PANEL, panel_generator

__all__ = ["SketchOperator"]


@dataclass(frozen=True)
class SketchOperator(ABC):
    """A ``d x m`` random sketching operator, addressed panel by panel.

    Parameters
    ----------
    d : int
        Sketch size (rows of ``S``).
    m : int
        Contracted dimension (columns of ``S``).
    seed : int
        Non-negative integer from :func:`distsketch.random.resolve_seed`.
    stream : int
        Operator identity under one seed: two operators that must be independent
        (``Omega`` and ``Psi`` of a single-pass SVD) use different streams.
    panel : int
        Panel length along the contracted dimension; fixed by the family and ``d``,
        never by the data's chunking.
    """

    d: int
    m: int
    seed: int
    stream: int = 0
    panel: int = DEFAULT_PANEL

    kind: ClassVar[str] = ""
    family: ClassVar[int] = 0
    #: every column of S has a nonzero, so NaN/Inf anywhere in a block reaches S @ block
    mixes_all_rows: ClassVar[bool] = True

    # -- construction ---------------------------------------------------------------
    def __post_init__(self):
        for name in ("d", "m", "panel"):
            value = getattr(self, name)
            if int(value) != value or value <= 0:
                raise ParameterError(f"{self.kind}: {name} must be a positive integer; got {value!r}")
        if self.seed < 0:
            raise ParameterError(f"{self.kind}: seed must be non-negative; got {self.seed}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.d, self.m)

    def _panel_rng(self, p: int) -> np.random.Generator:
        return panel_generator(self.seed, self.family, self.stream, p)

    def _panels(self, j0: int, j1: int) -> Iterator[tuple[int, int, int, int]]:
        """Yield ``(p, lo, hi, out)``: columns ``[lo, hi)`` of panel ``p`` cover global
        columns ``[p*panel + lo, p*panel + hi)``, which sit at offset ``out`` of ``[j0, j1)``."""
        P = self.panel
        j = j0
        while j < j1:
            p, lo = divmod(j, P)
            hi = min(P, lo + (j1 - j))
            yield p, lo, hi, j - j0
            j += hi - lo

    def _check_range(self, offset: int, k: int) -> None:
        if offset < 0 or offset + k > self.m:
            raise ShapeError(
                f"{self.kind}: columns [{offset}, {offset + k}) requested of an operator with m={self.m} columns"
            )

    # -- dense blocks (reference path, used by tests and small problems) --------------
    @abstractmethod
    def _panel_columns(self, p: int, lo: int, hi: int) -> np.ndarray:
        """Dense ``d x (hi - lo)`` block: columns ``[lo, hi)`` of panel ``p``, float64."""

    def columns(self, j0: int, j1: int, dtype=np.float64) -> np.ndarray:
        """Dense ``S[:, j0:j1]``, generated from the panels it overlaps only."""
        self._check_range(j0, j1 - j0)
        out = np.empty((self.d, j1 - j0), dtype=dtype)
        for p, lo, hi, o in self._panels(j0, j1):
            out[:, o : o + hi - lo] = self._panel_columns(p, lo, hi)
        return out

    def block(self, rows: slice, cols: slice, dtype=np.float64) -> np.ndarray:
        """Dense ``S[rows, cols]`` (unit steps), generated alone."""
        j0, j1, step = cols.indices(self.m)
        if step != 1:
            raise ParameterError(f"{self.kind}.block: only unit-step column slices are supported; got step {step}")
        return self.columns(j0, j1, dtype)[rows]

    def toarray(self, dtype=np.float64) -> np.ndarray:
        """The whole operator as a dense array; for tests and small m only."""
        return self.columns(0, self.m, dtype)

    # -- application ---------------------------------------------------------------------
    def apply(self, X: np.ndarray, offset: int = 0) -> np.ndarray:
        """``S[:, offset:offset+k] @ X`` for a ``k x n`` block ``X`` of the data's rows.

        Summing ``apply`` over the row blocks of ``A`` gives ``S @ A``; the result has
        the dtype of ``X`` (float32 stays float32).
        """
        X = _as_2d(X)
        self._check_range(offset, X.shape[0])
        out = np.zeros((self.d, X.shape[1]), dtype=X.dtype)
        for p, lo, hi, o in self._panels(offset, offset + X.shape[0]):
            self._apply_panel(p, lo, hi, X[o : o + hi - lo], out)
        return out

    def _apply_panel(self, p: int, lo: int, hi: int, Xp: np.ndarray, out: np.ndarray) -> None:
        out += self._panel_columns(p, lo, hi).astype(Xp.dtype, copy=False) @ Xp

    def apply_transpose(self, Y: np.ndarray, offset: int, k: int) -> np.ndarray:
        """``S[:, offset:offset+k].T @ Y`` for a ``d x n`` array ``Y`` (the adjoint of :meth:`apply`)."""
        Y = _as_2d(Y)
        if Y.shape[0] != self.d:
            raise ShapeError(f"{self.kind}.apply_transpose: Y must have d={self.d} rows; got shape {Y.shape}")
        self._check_range(offset, k)
        out = np.empty((k, Y.shape[1]), dtype=Y.dtype)
        for p, lo, hi, o in self._panels(offset, offset + k):
            out[o : o + hi - lo] = self._apply_transpose_panel(p, lo, hi, Y)
        return out

    def _apply_transpose_panel(self, p: int, lo: int, hi: int, Y: np.ndarray) -> np.ndarray:
        return self._panel_columns(p, lo, hi).astype(Y.dtype, copy=False).T @ Y

    def apply_right(self, X: np.ndarray, offset: int = 0) -> np.ndarray:
        """``X @ S[:, offset:offset+k].T`` for an ``r x k`` block of the data's columns.

        This is the right sketch ``A @ Omega`` with ``Omega = S.T`` (``n x d``), one
        column block at a time.
        """
        X = _as_2d(X)
        return self.apply(np.ascontiguousarray(X.T), offset).T

    # -- theory --------------------------------------------------------------------------
    def describe(self) -> dict:
        """The parameters that define the operator: enough to rebuild it exactly."""
        return {"kind": self.kind, "d": self.d, "m": self.m, "seed": self.seed, "stream": self.stream,
                "panel": self.panel}


def _as_2d(X) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ShapeError(f"expected a 1-D or 2-D block; got an array with shape {X.shape}")
    return X
