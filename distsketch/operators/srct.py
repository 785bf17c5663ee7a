"""Block subsampled randomized cosine transform (block SRCT).

Per panel ``p`` of ``P`` rows: random signs ``D_p``, the orthonormal DCT-II ``H``
(``scipy.fft.dct(..., norm="ortho")``), ``d`` distinct sampled rows ``R_p``, scaled
by ``sqrt(P / d)``; the sketch is the sum over panels::

    S @ A = sum_p sqrt(P/d) R_p H D_p A_p

(Balabanov, Beaupere, Grigori, arXiv 2210.11295, with one sample per panel). Each
panel term has ``E[S_p.T S_p] = I`` and distinct panels are uncorrelated through the
signs, so ``E[S.T S] = I``. The last panel is zero-padded to ``P`` rows; a data chunk
that covers part of a panel contributes the transform of its zero-padded part.

Cost: ``m n log2(P)`` for the transforms, no operator in memory beyond ``P + d``
integers a panel. Draw order of a panel: ``integers(0, 2, P)`` (signs), then
``choice(P, d, replace=False)`` (sampled rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..errors import ParameterError
from ._base import SketchOperator

__all__ = ["SRCT", "srct_panel"]


def srct_panel(d: int) -> int:
    """Panel length for a block SRCT with ``d`` rows: a power of two >= max(4096, d)."""
    P = 4096
    while P < d:
        P *= 2
    return P


@dataclass(frozen=True)
class SRCT(SketchOperator):
    """Block subsampled randomized cosine transform; requires ``d <= min(m, panel)``."""

    kind = "srct"
    family = 3

    def __post_init__(self):
        super().__post_init__()
        if self.d > self.m:
            raise ParameterError(
                f"srct keeps d of the m mixed rows, so d must be <= m; got d={self.d}, m={self.m}"
            )
        if self.d > self.panel:
            raise ParameterError(f"srct: d={self.d} exceeds the panel length {self.panel}; use panel >= d")

    def _draw(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        rng = self._panel_rng(p)
        signs = np.where(rng.integers(0, 2, size=self.panel, dtype=np.int8) == 1, 1.0, -1.0)
        rows = rng.choice(self.panel, size=self.d, replace=False)
        return signs, rows

    @property
    def _scale(self) -> float:
        return float(np.sqrt(self.panel / self.d))

    def _panel_columns(self, p, lo, hi):
        # closed form of the orthonormal DCT-II: H[r, c] = w_r cos(pi r (2c + 1) / (2P))
        signs, rows = self._draw(p)
        P = self.panel
        c = np.arange(lo, hi)
        # reduce the integer phase modulo 4P first, so cos() sees an argument below 2*pi
        phase = (rows[:, None].astype(np.int64) * (2 * c[None, :] + 1)) % (4 * P)
        H = np.cos(np.pi * phase / (2 * P)) * np.sqrt(2.0 / P)
        H[rows == 0] *= np.sqrt(0.5)
        return self._scale * H * signs[lo:hi]

    def _apply_panel(self, p, lo, hi, Xp, out):
        signs, rows = self._draw(p)
        s = signs[lo:hi, None].astype(Xp.dtype)
        if hi - lo == self.panel:  # a whole panel: no zero padding to write first
            Z = Xp * s
        else:
            Z = np.zeros((self.panel, Xp.shape[1]), dtype=Xp.dtype)
            np.multiply(Xp, s, out=Z[lo:hi])
        F = scipy.fft.dct(Z, type=2, norm="ortho", axis=0, overwrite_x=True)
        out += F[rows] * Xp.dtype.type(self._scale)

    def _apply_transpose_panel(self, p, lo, hi, Y):
        signs, rows = self._draw(p)
        Z = np.zeros((self.panel, Y.shape[1]), dtype=Y.dtype)
        Z[rows] = Y
        # H.T = H^{-1} for the orthonormal DCT-II
        G = scipy.fft.idct(Z, type=2, norm="ortho", axis=0, overwrite_x=True)
        return G[lo:hi] * (signs[lo:hi, None] * self._scale).astype(Y.dtype)
