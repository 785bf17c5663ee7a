"""In-memory backend: the matrix is a numpy array, processed in row blocks of bounded size."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ._protocol import RowData, check_finite_block

__all__ = ["NumpyRowData"]

_BLOCK_BYTES = 64 * 2**20


def _block_rows(m: int, n: int, itemsize: int) -> int:
    rows = max(4096, (_BLOCK_BYTES // max(1, n * itemsize)) // 4096 * 4096)
    return min(m, rows) if m else 1


class NumpyRowData(RowData):
    """A numpy matrix; blocks are row slices of at most ~64 MiB (multiples of 4096 rows).

    Distributed operands are plain numpy arrays with ``m`` rows.
    """

    def __init__(self, A: np.ndarray, *, block_rows: int | None = None):
        super().__init__()
        self.A = A
        self.shape = A.shape
        self.dtype = A.dtype
        m, n = A.shape
        self.block_rows = block_rows or _block_rows(m, n, A.dtype.itemsize)

    def _ranges(self):
        m = self.shape[0]
        for r0 in range(0, max(m, 1), self.block_rows):
            yield r0, min(m, r0 + self.block_rows)

    def row_pass(self, kernel, *, dist=(), small=(), dist_out=()):
        check = self._count()
        outs = [[] for _ in dist_out]
        total = None
        for r0, r1 in self._ranges():
            Ai = self.A[r0:r1]
            if check:
                check_finite_block(Ai, r0)
            douts, reds = kernel(Ai, r0, tuple(x[r0:r1] for x in dist), *small)
            for k, blk in enumerate(douts):
                outs[k].append(blk)
            total = reds if total is None else tuple(a + b for a, b in zip(total, reds))
        self._checked = True
        return tuple(np.concatenate(o) for o in outs), total

    def distribute(self, x, *, check=True):
        x = np.asarray(x)
        if x.shape[0] != self.shape[0]:
            raise ShapeError(f"operand must have m={self.shape[0]} rows like A; got shape {x.shape}")
        if check:
            check_finite_block(x if x.ndim == 2 else x[:, None], 0, what="b")
        return x

    def gather(self, x):
        return np.asarray(x)

    def combine(self, fn, *xs, ncols=None, dtype=None):
        return fn(*xs)
