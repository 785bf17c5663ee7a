"""Dense Gaussian sketch: i.i.d. N(0, 1/d) entries.

Cost of ``S @ A``: ``2 d m n`` flops (GEMM) plus ``d m`` normal draws. The best
embedding of the families here and the most expensive to apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._base import SketchOperator

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
