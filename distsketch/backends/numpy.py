"""In-memory backend: the matrix is a numpy array, processed in row blocks of bounded size."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._threads import blas_limit, threads_per_worker
from ..errors import ShapeError
from ._protocol import RowData, check_finite_block, run_kernel

__all__ = ["NumpyRowData"]

_BLOCK_BYTES = 64 * 2**20


def _block_rows(m: int, n: int, itemsize: int) -> int:
    rows = max(4096, (_BLOCK_BYTES // max(1, n * itemsize)) // 4096 * 4096)
    return min(m, rows) if m else 1


class NumpyRowData(RowData):
    """A numpy matrix; blocks are row slices of at most ~64 MiB (multiples of 4096 rows).

    Blocks run on ``workers`` threads (default: one per core) with BLAS limited to one
    thread inside the pass; partial results are summed in block order, so the answer
    does not depend on ``workers``. Distributed operands are numpy arrays with ``m`` rows.
    """

    def __init__(self, A: np.ndarray, *, block_rows: int | None = None, workers: int | None = None):
        super().__init__()
        self.A = A
        self.shape = A.shape
        self.dtype = A.dtype
        m, n = A.shape
        self.block_rows = block_rows or _block_rows(m, n, A.dtype.itemsize)
        self.workers = workers or os.cpu_count() or 1

    def _ranges(self):
        m = self.shape[0]
        for r0 in range(0, max(m, 1), self.block_rows):
            yield r0, min(m, r0 + self.block_rows)

    def prefer_sketch_blocks(self, d: int) -> None:
        """Row blocks of at least ``2 d`` rows, in a multiple of ``workers`` blocks.

        Each block of a sketch pass returns a dense ``d x n`` partial sum: with blocks of fewer
        than ``d`` rows the partials outweigh the blocks themselves (at 100,000 x 2,000 with
        4,096-row blocks and ``d = 8,000``, 25 partials of 128 MB). The block count stays a
        multiple of the threads so that no thread idles at the end of a pass.
        """
        m, rows, workers = self.shape[0], self.block_rows, self.workers
        if rows >= 2 * d or m <= rows:
            return
        k = max(workers, (m // (2 * d)) // workers * workers)
        self.block_rows = max(rows, -(-m // k))

    def row_pass(self, kernel, *, dist=(), small=(), dist_out=()):
        check = self._count()
        A = self.A

        def one(rr):
            r0, r1 = rr
            return run_kernel(kernel, A[r0:r1], r0, tuple(x[r0:r1] for x in dist), small, check)

        outs, total = self._blockwise(one, dist_out)
        total = self._take_checksum(total, check)
        self._checked = True
        return outs, total

    def dist_pass(self, kernel, *, dist=(), small=(), dist_out=()):
        def one(rr):
            r0, r1 = rr
            return kernel(r0, tuple(x[r0:r1] for x in dist), *small)

        return self._blockwise(one, dist_out)

    def _blockwise(self, one, dist_out):
        ranges = list(self._ranges())
        if self.workers > 1 and len(ranges) > 1:
            # blocks in parallel threads (numpy, BLAS and scipy.sparse release the GIL), sharing the
            # cores: threads x BLAS threads never exceed them (one BLAS thread each by default)
            with blas_limit(threads_per_worker(self.workers)), ThreadPoolExecutor(self.workers) as ex:
                results = list(ex.map(one, ranges))
        else:
            results = [one(rr) for rr in ranges]
        total = results[0][1]
        for _, reds in results[1:]:  # fixed order: the same sums for any number of threads
            total = tuple(a + b for a, b in zip(total, reds))
        outs = tuple(np.concatenate([res[0][k] for res in results]) for k in range(len(dist_out)))
        return outs, total

    def distribute(self, x, *, check=True):
        x = np.asarray(x)
        if x.shape[0] != self.shape[0]:
            raise ShapeError(f"operand must have m={self.shape[0]} rows like A; got shape {x.shape}")
        if check:
            check_finite_block(x if x.ndim == 2 else x[:, None], 0, what="b")
        return x

    def norm(self, x):
        return float(np.linalg.norm(x))

    def gather(self, x):
        return np.asarray(x)

    def combine(self, fn, *xs, ncols=None, dtype=None):
        return fn(*xs)

    def output(self, x, *, dtype=None):
        x = np.asarray(x)
        return x if dtype is None else x.astype(dtype, copy=False)

    def peek(self, rows, cols):
        return np.array(self.A[rows, cols])

    def busy_cores_here(self) -> int:
        """Cores the pass threads take with their own BLAS limits: a caller's multi-threaded BLAS call
        between passes would leave a pool thread spinning beside them. One worker runs the blocks
        in the caller's thread with the caller's BLAS threads (nothing to leave)."""
        return self.workers * threads_per_worker(self.workers) if self.workers > 1 else 0

    def transposed(self):
        return NumpyRowData(self.A.T, workers=self.workers)
