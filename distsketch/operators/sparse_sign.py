"""Sparse sign embedding (SASO): exactly ``nnz`` nonzeros ``+-1/sqrt(nnz)`` per column.

Cost of ``S @ A``: ``nnz * m * n`` multiply-adds, with no dense operator in memory.
``nnz=1`` is CountSketch (Clarkson-Woodruff). PARLA uses 8; RandBLAS defaults to 4.

Generation of one panel (draw order, for reproducibility): for ``t = 0..nnz-1``
(Floyd's algorithm, vectorised over the panel's columns) the row index
``integers(0, d - nnz + t + 1, size=panel)``, replaced by ``d - nnz + t`` where it
repeats an earlier pick of the same column; then the signs
``integers(0, 2, size=(panel, nnz))``. Each column's rows are a uniformly random
``nnz``-subset of ``range(d)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import ParameterError
from ._base import SketchOperator, _as_2d

__all__ = ["SparseSign"]

#: columns of the data a tile of :meth:`SparseSign.apply` when the ``d x n`` output is larger
#: than :data:`APPLY_TILE_BYTES` (measured on the 2-core reference machine: 64 columns of a
#: 8000-row output, 4 MiB, run ~20% faster than the whole product)
APPLY_TILE_COLS = 64
APPLY_TILE_BYTES = 8 * 2**20

#: Floyd's repeat test as pairwise compares of contiguous vectors up to this many earlier picks
#: (cheaper than one panel x t comparison for the usual nnz <= 16); the same picks either way
_PAIRWISE_MAX = 16


@dataclass(frozen=True)
class SparseSign(SketchOperator):
    """Sparse sign operator with ``nnz`` nonzeros per column.

    Parameters
    ----------
    nnz : int
        Nonzeros per column, ``1 <= nnz <= d``.
    """

    nnz: int = 8

    kind = "sparse_sign"
    family = 2

    def __post_init__(self):
        super().__post_init__()
        if int(self.nnz) != self.nnz or self.nnz < 1:
            raise ParameterError(f"sparse_sign: nnz must be a positive integer; got {self.nnz!r}")
        if self.nnz > self.d:
            raise ParameterError(
                f"sparse_sign: nnz={self.nnz} nonzeros per column do not fit in d={self.d} rows; "
                "use nnz <= d"
            )

    def _panel_pattern(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (nnz x panel, int32) and signs (nnz x panel, True for +) of panel ``p``:
        entry ``[t, j]`` is the ``t``-th nonzero of the panel's column ``j``."""
        rng = self._panel_rng(p)
        P, d, k = self.panel, self.d, self.nnz
        rows = np.empty((k, P), dtype=np.int32)  # one contiguous row of picks per t
        for t in range(k):
            top = d - k + t  # Floyd: draw from [0, top]; on a repeat take top itself
            draw = rng.integers(0, top + 1, size=P, dtype=np.int32)
            if t and t <= _PAIRWISE_MAX:  # t compares of contiguous vectors, no P x t temporary
                repeat = rows[0] == draw
                for s in range(1, t):
                    repeat |= rows[s] == draw
                draw[repeat] = top
            elif t:
                draw[(rows[:t] == draw).any(axis=0)] = top
            rows[t] = draw
        signs = rng.integers(0, 2, size=(P, k), dtype=np.int8)
        return rows, (signs == 1).T

    def _csc(self, j0: int, j1: int, dtype) -> sp.csc_matrix:
        """``S[:, j0:j1]`` as a CSC matrix with exactly ``nnz`` entries a column."""
        k = j1 - j0
        if k <= 0:  # an empty row block (a zero-row chunk, an MPI rank without rows)
            return sp.csc_matrix((self.d, 0), dtype=dtype)
        nnz = self.nnz
        indices = np.empty((k, nnz), dtype=np.int32)
        positive = np.empty((k, nnz), dtype=bool)
        for p, lo, hi, o in self._panels(j0, j1):
            rows, pos = self._panel_pattern(p)
            indices[o:o + hi - lo] = rows[:, lo:hi].T
            positive[o:o + hi - lo] = pos[:, lo:hi].T
        v = np.dtype(dtype).type(1.0 / np.sqrt(nnz))  # the float64 value, rounded once to dtype
        data = np.where(positive, v, -v).ravel()
        indptr = np.arange(0, (k + 1) * nnz, nnz, dtype=np.int64 if k * nnz >= 2**31 else np.int32)
        return sp.csc_matrix((data, indices.ravel(), indptr), shape=(self.d, k))

    def _panel_columns(self, p, lo, hi):
        rows, pos = self._panel_pattern(p)
        out = np.zeros((self.d, hi - lo))
        cols = np.broadcast_to(np.arange(hi - lo), (self.nnz, hi - lo))
        out[rows[:, lo:hi], cols] = np.where(pos[:, lo:hi], 1.0, -1.0) / np.sqrt(self.nnz)
        return out

    def apply(self, X, offset=0):
        X = _as_2d(X)
        self._check_range(offset, X.shape[0])
        S = self._csc(offset, offset + X.shape[0], X.dtype)
        n = X.shape[1]
        if n <= 2 * APPLY_TILE_COLS or self.d * n * X.itemsize <= APPLY_TILE_BYTES:
            return S @ np.ascontiguousarray(X)
        # column tiles: each nonzero of S adds a row of X into a row of the output, at random rows; a
        # d x APPLY_TILE_COLS tile of the output stays in cache where the whole d x n one would not. Every
        # output entry sums the same terms in the same order as the untiled product: bit-identical
        out = np.empty((self.d, n), dtype=X.dtype)
        for c in range(0, n, APPLY_TILE_COLS):
            c1 = min(n, c + APPLY_TILE_COLS)
            out[:, c:c1] = S @ np.ascontiguousarray(X[:, c:c1])
        return out

    def apply_transpose(self, Y, offset, k):
        Y = _as_2d(Y)
        self._check_range(offset, k)
        return self._csc(offset, offset + k, Y.dtype).T @ Y

    def describe(self):
        return {**super().describe(), "nnz": self.nnz}
