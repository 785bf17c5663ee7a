"""MPI backend: each rank holds its own contiguous row range of ``A``; reductions by Allreduce.

Every rank opens the same Zarr store and reads only rows ``[r0, r1)`` of its share
(split on chunk boundaries where possible). A pass maps the kernel over the local rows
in blocks of bounded size, sums the local partial results in block order, then sums
across ranks with ``Allreduce``; distributed operands (``b``, LSQR's ``u``) stay on their
ranks. The random streams are the same as numpy's and Dask's (entries depend on global
indices only), so sketches, iterates and answers agree with them to rounding.

An algorithm never sees this class: it calls :mod:`distsketch.passes` as for any backend.
"""

from __future__ import annotations

import numpy as np

from .._threads import blas_limit, rank_blas_threads
from ..errors import ShapeError
from ._protocol import RowData, check_finite_block, run_kernel

__all__ = ["MPIRowData", "row_range"]

_BLOCK_BYTES = 64 * 2**20


def row_range(m: int, size: int, rank: int, chunk: int = 1) -> tuple[int, int]:
    """Rows of ``rank`` out of ``size``: contiguous, balanced in whole chunks of ``chunk`` rows."""
    nchunks = -(-m // chunk)
    lo = (nchunks * rank) // size
    hi = (nchunks * (rank + 1)) // size
    return min(m, lo * chunk), min(m, hi * chunk)


class MPIRowData(RowData):
    """Row-distributed matrix over an MPI communicator.

    Parameters
    ----------
    A_local : numpy.ndarray
        This rank's rows ``[r0, r0 + A_local.shape[0])`` of the global ``m x n`` matrix.
    r0 : int
        Global index of the first local row.
    m : int
        Global number of rows.
    comm : mpi4py communicator
    """

    def __init__(self, A_local: np.ndarray, r0: int, m: int, comm, *, source: str | None = None,
                 progress: bool = False):
        super().__init__()
        self.progress = progress
        self.A_local = A_local
        self.r0 = int(r0)
        self.shape = (int(m), int(A_local.shape[1]))
        self.dtype = A_local.dtype
        self.comm = comm
        self.source = source
        #: bytes this rank contributed to Allreduce calls (the communication volume of the passes)
        self.bytes_reduced = 0
        self.allreduce_calls = 0
        self.last_allreduce_bytes = 0
        # ranks sharing this node split its cores (distsketch._threads: ranks x BLAS threads <= cores)
        self.blas_threads = rank_blas_threads(comm)
        n = max(1, self.shape[1])
        self.block_rows = max(1024, (_BLOCK_BYTES // (n * A_local.dtype.itemsize)) // 1024 * 1024)

    @classmethod
    def from_zarr(cls, path: str, comm, *, progress: bool = False,
                  allow_missing_chunks: bool = False) -> "MPIRowData":
        """Open the Zarr array at ``path`` on every rank and read this rank's rows only.

        A store lacking chunks is refused (``MissingChunkError``) unless
        ``allow_missing_chunks``; an undecodable chunk raises ``CorruptChunkError`` naming it.
        """
        from .._inputs import float_dtype, open_zarr_array, read_rows

        z = open_zarr_array(path, allow_missing_chunks=allow_missing_chunks)
        if z.ndim != 2:
            raise ShapeError(f"A must be 2-D; got an array with shape {z.shape} at {path!r}")
        m = z.shape[0]
        r0, r1 = row_range(m, comm.size, comm.rank, z.chunks[0])
        A_local = np.asarray(read_rows(z, r0, r1, path), dtype=float_dtype(z.dtype))
        return cls(A_local, r0, m, comm, source=path, progress=progress)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def local_rows(self) -> tuple[int, int]:
        return self.r0, self.r0 + self.A_local.shape[0]

    def _ranges(self):
        k = self.A_local.shape[0]
        for a in range(0, max(k, 1), self.block_rows):
            yield a, min(k, a + self.block_rows)

    def _allreduce(self, parts):
        """Sum the partial results over ranks in ONE Allreduce (packed into a float64 buffer)."""
        from mpi4py import MPI

        parts = [np.asarray(p) for p in parts]
        if not parts:
            return ()
        buf = np.concatenate([p.astype(np.float64, copy=False).ravel() for p in parts])
        total = np.empty_like(buf)
        self.comm.Allreduce(buf, total, op=MPI.SUM)
        self.bytes_reduced += buf.nbytes
        self.allreduce_calls += 1
        self.last_allreduce_bytes = buf.nbytes
        out, k = [], 0
        for p in parts:
            out.append(total[k:k + p.size].reshape(p.shape))
            k += p.size
        return tuple(out)

    def _local(self, fn, dist, with_A, kernel, small, check, ndist_out):
        results = []
        for a, b in self._ranges():
            dist_i = tuple(x[a:b] for x in dist)
            if with_A:
                results.append(run_kernel(kernel, self.A_local[a:b], self.r0 + a, dist_i, small, check))
            else:
                results.append(kernel(self.r0 + a, dist_i, *small))
        total = results[0][1]
        for _, reds in results[1:]:
            total = tuple(x + y for x, y in zip(total, reds))
        outs = tuple(np.concatenate([r[0][k] for r in results]) for k in range(ndist_out))
        return outs, total

    # -- protocol ----------------------------------------------------------------------------
    def row_pass(self, kernel, *, dist=(), small=(), dist_out=()):
        import time

        t = time.perf_counter()
        check = self._count()
        with blas_limit(self.blas_threads):
            outs, total = self._local(None, dist, True, kernel, small, check, len(dist_out))
        total = self._take_checksum(total, check, combine=lambda h: sum(self.comm.allgather(h)))
        self._checked = True
        reduced = self._allreduce(total)
        if self.progress and self.comm.rank == 0:
            import sys

            name = getattr(kernel, "__name__", "pass").removeprefix("_k_")
            print(f"  pass {self.passes}: {name} ({time.perf_counter() - t:.2f} s)", file=sys.stderr, flush=True)
        return outs, reduced

    def dist_pass(self, kernel, *, dist=(), small=(), dist_out=()):
        with blas_limit(self.blas_threads):
            outs, total = self._local(None, dist, False, kernel, small, False, len(dist_out))
        return outs, self._allreduce(total)

    def distribute(self, x, *, check=True):
        if x.shape[0] != self.shape[0]:
            raise ShapeError(f"operand must have m={self.shape[0]} rows like A; got shape {x.shape}")
        r0, r1 = self.local_rows
        part = x[r0:r1]
        part = np.asarray(part.compute() if hasattr(part, "compute") else part)
        part = part if part.ndim == 2 else part[:, None]
        if check:
            check_finite_block(part, r0, what="b")
        return part

    def gather(self, x) -> np.ndarray:
        parts = self.comm.allgather(np.asarray(x))
        return np.concatenate(parts)

    def norm(self, x) -> float:
        (s,) = self._allreduce([np.array([np.vdot(x, x)])])
        return float(np.sqrt(s[0]))

    def combine(self, fn, *xs, ncols=None, dtype=None):
        return fn(*xs)

    def output(self, x, *, dtype=None):
        x = np.asarray(x)  # this rank's rows: every rank returns its share
        return x if dtype is None else x.astype(dtype, copy=False)

    def peek(self, rows, cols):
        """Every rank contributes the rows of the block it holds (one allgather of a small block)."""
        lo, hi, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("peek takes contiguous row ranges")
        r0, r1 = self.local_rows
        a, b = max(lo, r0), min(hi, r1)
        mine = self.A_local[a - r0:b - r0, cols] if a < b else self.A_local[:0, cols]
        return np.concatenate(self.comm.allgather(np.asarray(mine)))
