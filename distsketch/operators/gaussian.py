"""Dense Gaussian sketch: i.i.d. N(0, 1/d) entries.

Cost of ``S @ A``: ``2 d m n`` flops (GEMM) plus ``d m`` normal draws. The best
embedding of the families here and the most expensive to apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._base import SketchOperator, _as_2d

__all__ = ["Gaussian"]


def gaussian_panel(d: int) -> int:
    """Panel length for a Gaussian operator with ``d`` rows: at most 32 MiB of draws a panel."""
    P = 4096
    while P > 64 and d * P > 4 * 2**20:
        P //= 2
    return P


@dataclass(frozen=True)
class Gaussian(SketchOperator):
    """``S[i, j] ~ N(0, 1/d)`` independent, so that ``E[S.T @ S] = I``.

    Panel ``p`` is the ``d x panel`` array ``standard_normal((d, panel)) / sqrt(d)``
    of its generator (row-major draw order).
    """

    kind = "gaussian"
    family = 1

    def _panel(self, p: int) -> np.ndarray:
        return self._panel_rng(p).standard_normal((self.d, self.panel)) * (1.0 / np.sqrt(self.d))

    def _panel_columns(self, p, lo, hi):
        return self._panel(p)[:, lo:hi]

    def _apply_panel(self, p, lo, hi, Xp, out):
        # the scale 1/sqrt(d) applied to the d x n product, not to the d x panel draws
        G = self._panel_rng(p).standard_normal((self.d, self.panel))[:, lo:hi]
        out += (G.astype(Xp.dtype, copy=False) @ Xp) * Xp.dtype.type(1.0 / np.sqrt(self.d))

    def apply_right(self, X, offset=0):
        """``X @ S[:, offset:offset+k].T`` as GEMMs on column slices of ``X`` (no transposed copy of ``X``)."""
        X = _as_2d(X)
        self._check_range(offset, X.shape[1])
        out = np.zeros((X.shape[0], self.d), dtype=X.dtype)
        for p, lo, hi, o in self._panels(offset, offset + X.shape[1]):
            G = self._panel_rng(p).standard_normal((self.d, self.panel))[:, lo:hi]
            out += X[:, o:o + hi - lo] @ G.T.astype(X.dtype, copy=False)
        out *= X.dtype.type(1.0 / np.sqrt(self.d))
        return out
