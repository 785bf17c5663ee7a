"""Uniform row sampling with rescaling: ``S = sqrt(m/d) E_rows``.

``d`` distinct rows of ``range(m)`` are drawn once for the whole operator (they do not
belong to a panel) with ``choice(m, d, replace=False)`` from the operator's stream, so
``E[S.T S] = I``. Cost ``d n``; a good embedding only for incoherent data (no mixing).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import ParameterError
from ..random.streams import stream_generator
from ._base import SketchOperator, _as_2d

__all__ = ["Uniform"]


@dataclass(frozen=True)
class Uniform(SketchOperator):
    """Uniform sampling of ``d`` distinct rows, scaled by ``sqrt(m/d)``; requires ``d <= m``."""

    kind = "uniform"
    family = 4
    mixes_all_rows = False

    def __post_init__(self):
        super().__post_init__()
        if self.d > self.m:
            raise ParameterError(
                f"uniform sampling draws d distinct rows of m, so d must be <= m; got d={self.d}, m={self.m}"
            )

    @cached_property
    def rows(self) -> np.ndarray:
        """Sampled global row index of each sketch row (length d)."""
        rng = stream_generator(self.seed, self.family, self.stream)
        return rng.choice(self.m, size=self.d, replace=False)

    @property
    def _scale(self) -> float:
        return float(np.sqrt(self.m / self.d))

    def _panel_columns(self, p, lo, hi):
        out = np.zeros((self.d, hi - lo))
        c = self.rows - p * self.panel - lo
        hit = (c >= 0) & (c < hi - lo)
        out[np.flatnonzero(hit), c[hit]] = self._scale
        return out

    def apply(self, X, offset=0):
        X = _as_2d(X)
        self._check_range(offset, X.shape[0])
        out = np.zeros((self.d, X.shape[1]), dtype=X.dtype)
        local = self.rows - offset
        hit = (local >= 0) & (local < X.shape[0])
        out[hit] = X[local[hit]] * X.dtype.type(self._scale)
        return out

    def apply_transpose(self, Y, offset, k):
        Y = _as_2d(Y)
        self._check_range(offset, k)
        out = np.zeros((k, Y.shape[1]), dtype=Y.dtype)
        local = self.rows - offset
        hit = (local >= 0) & (local < k)
        out[local[hit]] = Y[hit] * Y.dtype.type(self._scale)  # rows are distinct: no collisions
        return out
