"""Dask backend: row blocks are the row chunks of a dask array (often read from Zarr).

Each pass is one task per row block (the block is read, the kernel runs, the block is
dropped) followed by a fixed-order binary tree of additions, so the same chunking gives
bit-identical sums on any number of workers and after any task is recomputed. The
active scheduler is used: a ``dask.distributed`` Client when one is current, else the
local threaded scheduler. Distributed outputs are persisted (kept on the workers that
computed them) and stay aligned with the row chunks of ``A``.
"""

from __future__ import annotations

from contextlib import contextmanager
from operator import getitem

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .._memory import aligned_copy
from .._progress import progress_for, show
from ..errors import ShapeError
from ._protocol import RowData, check_finite_block, run_kernel

__all__ = ["DaskRowData"]


#: ``cache="auto"`` keeps ``A`` in worker memory when it takes at most this share of the
#: workers' summed memory limits (Dask spills at 60% of a worker's limit; the low-rank factors
#: and each task's temporaries need the rest)
CACHE_FRACTION = 0.25

#: operands up to this size are always moved to a 64-byte boundary (the copy costs nothing)
_SMALL_BYTES = 2**20


def _aligned(x):
    """``x`` at an address where every BLAS call gives results that depend on its values alone.

    A block that is not aligned to its item size (a Zarr chunk can be decoded at any byte
    offset) would make numpy bypass BLAS for a slower loop that rounds differently, so it is
    copied. Item-aligned blocks are used in place: OpenBLAS packs GEMM operands into its own
    aligned buffers, and ``tests/test_passes.py`` checks on the installed BLAS that every
    kernel's result is bit-identical at every item-aligned offset. (Zarr 3 decodes chunks at
    16-byte boundaries; copying each one to a 64-byte boundary cost a memory sweep per block.)
    Small operands are still moved to a 64-byte boundary. Either way a task recomputed on
    another worker after a failure gives bit-identical results.
    """
    if isinstance(x, tuple):
        return tuple(_aligned(y) for y in x)
    if not isinstance(x, np.ndarray) or x.ctypes.data % 64 == 0:
        return x
    if x.flags.aligned and x.nbytes > _SMALL_BYTES:
        return x
    return aligned_copy(x)


def _run_block(kernel, Ai, r0, check, ndist, *args):
    # distributed operands arrive as separate arguments: a Delayed inside a tuple argument does
    # not keep its persisted Future alive, and the scheduler may drop it before the task runs
    args = tuple(_aligned(x) for x in args)
    return run_kernel(kernel, _aligned(Ai), r0, args[:ndist], args[ndist:], check)


def _run_dist_block(kernel, r0, check, ndist, *args):
    args = tuple(_aligned(x) for x in args)
    return kernel(r0, args[:ndist], *args[ndist:])


def _pick(part, k):
    """The ``k``-th distributed output of one block's ``(dist_outputs, reduced)``."""
    return part[0][k]


def _add(*parts):
    """The sum of reduced tuples, added left to right (a fixed order)."""
    total = parts[0]
    for p in parts[1:]:
        total = tuple(x + y for x, y in zip(total, p))
    return total


def _checked(x, block_info=None):
    r0 = block_info[0]["array-location"][0][0] if block_info else 0
    check_finite_block(x if x.ndim == 2 else x[:, None], r0, what="b")
    return x


#: bytes of reduced parts one task of the tree may hold at once (see :func:`fan_in_for`)
TREE_BYTES = 256 * 2**20


def fan_in_for(n: int, d: int = 0) -> int:
    """How many reduced parts one task of a pass's tree sum adds, for ``A`` with ``n`` columns
    (and ``d``, the most rows of a sketch operator the pass applies: ``S A`` is ``d x n``).

    A wider tree has fewer tasks, and on a small machine each task is a scheduler round on the
    cores the kernels use: the block Krylov SVD of ``scripts/bench/lowrank.py`` (q = 2, 48 row
    blocks) took 9.73 s with a pairwise tree, 9.55 s with groups of 4 and 9.15 s with groups of 8
    (medians of 4 interleaved runs, ``scripts/bench/lowrank_ab.py --compare tree``; an earlier pair of
    runs gave 11.4 s against 10.4 s for 2 against 4, and 10.0 s against 9.3 s for 4 against 8).
    A part is taken as ``max(4 n, d) n`` floats (a Gram matrix is ``n^2``, a sketch ``S A`` is
    ``d n``), and groups of up to 8 parts are kept within :data:`TREE_BYTES`: 8 for ``n <= 1024``
    (without a sketch of more than ``4 n`` rows), 2 from ``n ~ 2048``.
    """
    n = max(int(n), 1)
    part = 8.0 * n * max(4 * n, int(d))
    return int(max(2, min(8, TREE_BYTES // part)))


def _leaves(small):
    """The operands of a pass's ``small``, nested tuples and lists opened."""
    for x in small:
        if isinstance(x, (tuple, list)):
            yield from _leaves(x)
        else:
            yield x


def _sketch_rows(small) -> int:
    """The most rows ``d`` of any sketch operator among a pass's small operands (0 if none)."""
    from ..operators import SketchOperator

    return max((int(x.d) for x in _leaves(small) if isinstance(x, SketchOperator)), default=0)


def _nbytes(small) -> int:
    """Bytes of the arrays among a pass's small operands."""
    return sum(int(x.nbytes) for x in _leaves(small) if isinstance(x, np.ndarray))


#: the setting behind distributed's "Sending large graph" warning (absent before distributed 2023.4)
_GRAPH_WARNING = "distributed.admin.large-graph-warning-threshold"


@contextmanager
def _small_operands_embedded(small):
    """Raise distributed's large-graph warning threshold by the bytes of the small operands.

    A pass embeds each small operand once in its graph (up to ``n x n``: 30.5 MiB for
    ``n = 2000``, over the 10 MiB that distributed warns at). That is deliberate, not the mistake
    the warning is for: the scheduler keeps the operand with the task that produces it, so a task
    recomputed after a lost worker still finds it, where a scattered copy lives only in the
    memory of the workers that hold it. Anything else that makes the graph large still warns.
    """
    extra = _nbytes(small)
    try:
        from dask.utils import parse_bytes

        base = parse_bytes(dask.config.get(_GRAPH_WARNING))
    except (KeyError, TypeError, ValueError):
        base = None
    if not extra or base is None:
        yield
        return
    with dask.config.set({_GRAPH_WARNING: base + extra}):
        yield


def tree_sum(parts, fan_in=2):
    """Sum delayed tuples in a fixed tree (deterministic on any cluster): groups of ``fan_in``
    neighbours, added left to right, level by level."""
    k = max(2, int(fan_in))
    level = list(parts)
    while len(level) > 1:
        level = [dask.delayed(_add, pure=True)(*level[i:i + k]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), k)]
    return level[0]


class DaskRowData(RowData):
    """A dask array; column chunks are merged so each task sees whole rows.

    Parameters
    ----------
    A : dask.array.Array
        Two-dimensional, floating point.
    progress : bool
        Show a progress bar for each pass (the command line turns it on).
    cache : "auto", bool
        Keep the decoded row blocks in worker memory after the first pass, so later passes
        do not read storage again. ``"auto"``: when a distributed Client is active and ``A``
        takes at most ``CACHE_FRACTION`` of the workers' summed memory limits (an
        out-of-core matrix is never cached). Results are the same either way.
    """

    out_of_core = True
    lazy = True

    def __init__(self, A: da.Array, *, progress: bool = False, cache="auto"):
        super().__init__()
        self._cache = cache
        self._given = A  # as given (before the whole-rows rechunk): transposed() wraps its .T
        if A.numblocks[1] > 1:
            # whole rows per task; split tall column chunks into row blocks of ~64 MiB
            rows = max(1, int(64 * 2**20 // max(1, A.shape[1] * A.dtype.itemsize)))
            A = A.rechunk({0: rows if max(A.chunks[0]) > rows else A.chunks[0], 1: -1})
        self.A = A
        self.shape = A.shape
        self.dtype = A.dtype
        self.row_chunks = A.chunks[0]
        self.offsets = np.concatenate([[0], np.cumsum(self.row_chunks)]).astype(int)
        self._blocks = A.to_delayed(optimize_graph=True)[:, 0].tolist()
        self.progress = progress

    def _align(self, x: da.Array) -> da.Array:
        if x.ndim == 1:
            x = x[:, None]
        if x.chunks[0] != self.row_chunks or x.numblocks[1] != 1:
            x = x.rechunk((self.row_chunks, -1))
        return x

    @property
    def cached(self) -> bool:
        """Whether the row blocks are held in worker memory (later passes read no storage)."""
        return self._cache == "kept"

    def _cache_now(self) -> bool:
        """Whether this pass should keep the blocks it reads (decided once, at the first pass)."""
        if self._cache == "auto":
            from ..cluster import worker_memory_limits

            limits = worker_memory_limits()  # None: no distributed Client (the threaded scheduler)
            self._cache = bool(limits) and self.A.nbytes <= CACHE_FRACTION * sum(limits)
        return self._cache is True

    def busy_cores_here(self) -> int:
        """Threads of the active Client's worker processes on this machine (a LocalCluster's: all of
        them; a threads LocalCluster's workers run in this process and are not counted)."""
        from ..cluster import local_worker_threads

        return local_worker_threads()

    def row_pass(self, kernel, *, dist=(), small=(), dist_out=()):
        check = self._count()
        outs, reduced = self._graph(_run_block, kernel, self._blocks, dist, small, dist_out, check)
        keep = list(self._blocks) if self._cache_now() else []
        with progress_for(self.progress), _small_operands_embedded(small):
            # one graph, not optimised: array fusion would copy the kernel's tasks into the
            # outputs' graph and run every block (and read A) twice
            done = dask.persist(*outs, reduced, *keep, optimize_graph=False)
            outs, reduced, kept = done[:len(outs)], done[len(outs)], list(done[len(outs) + 1:])
            if self.progress:
                show(reduced)
            value = reduced.compute()
        value = self._take_checksum(value, check)
        if keep:  # later passes use the blocks in worker memory (same keys: a lost one is read again)
            self._blocks, self._cache = kept, "kept"
        self._checked = True
        return tuple(outs), value

    def row_pass_lazy(self, kernel, *, dist=(), small=(), dist_out=(), reduced_out=()):
        """:meth:`row_pass` as a graph: nothing is read until the results are computed.

        Returns ``(dist_outputs, reduced)`` as dask arrays; ``reduced_out`` gives the
        ``(shape, dtype)`` of each reduced sum. The read checks finiteness (it is the
        first read of this data), and counts as a pass.
        """
        self.passes += 1
        outs, reduced = self._graph(_run_block, kernel, self._blocks, dist, small, dist_out, True)
        red = [da.from_delayed(dask.delayed(getitem, pure=True)(reduced, k), shape=shape, dtype=dtype)
               for k, (shape, dtype) in enumerate(reduced_out)]
        return tuple(outs), tuple(red)

    def dist_pass(self, kernel, *, dist=(), small=(), dist_out=()):
        """Distributed outputs are persisted when the kernel also reduces (the round trip is paid
        anyway); otherwise they stay lazy, and are computed blockwise where they are used."""
        outs, reduced = self._graph(_run_dist_block, kernel, None, dist, small, dist_out, False)
        if not getattr(kernel, "reduces", True):
            return tuple(outs), ()
        with _small_operands_embedded(small):
            *outs, reduced = dask.persist(*outs, reduced, optimize_graph=False)
            return tuple(outs), reduced.compute()

    def _graph(self, runner, kernel, blocks, dist, small, dist_out, check):
        """The tasks of one pass: one per row block, then a fixed-order tree sum.

        Every key is a deterministic token of the kernel, the data and the operands, so
        two different passes never share a name and the same pass always has the same one.
        """
        dist = [self._align(x) for x in dist]
        dist_blocks = [x.to_delayed(optimize_graph=False)[:, 0].tolist() for x in dist]
        small_d = [dask.delayed(s, pure=True) if not isinstance(s, (int, float)) else s for s in small]
        kname = getattr(kernel, "name", None) or getattr(kernel, "__name__", "kernel")
        token = tokenize(kernel, self.A.name if blocks is not None else None, [x.name for x in dist], small,
                         dist_out, check)
        parts = []
        for i in range(len(self.row_chunks)):
            dist_i = tuple(db[i] for db in dist_blocks)
            first = (blocks[i],) if blocks is not None else ()
            parts.append(dask.delayed(runner, pure=True, nout=2)(
                kernel, *first, int(self.offsets[i]), check, len(dist_i), *dist_i, *small_d,
                dask_key_name=f"{'pass' if blocks is not None else 'dist'}-{kname}-{token}-{i}"))
        reduced = tree_sum([p[1] for p in parts], fan_in_for(self.shape[1], _sketch_rows(small)))
        prefix = f"{'pass' if blocks is not None else 'dist'}-out{{k}}-{kname}-{token}"
        return self._outputs(parts, dist_out, prefix), reduced

    def _outputs(self, parts, dist_out, prefix):
        """The distributed outputs of a pass as dask arrays aligned with the row blocks.

        Block ``i`` of output ``k`` is one task that picks it from block ``i``'s result. (A
        ``from_delayed`` piece a block and a ``concatenate`` added two more tasks a block, each a
        scheduler round on the cores the kernels use: the q = 2 block Krylov SVD of
        ``scripts/bench/lowrank.py`` ran 1,491 tasks in 12.25 s with them, 867 in 11.16 s without,
        medians of 4 interleaved in one run, ``scripts/bench/lowrank_ab.py --compare outputs``.)
        """
        outs = []
        for k, (ncols, dtype) in enumerate(dist_out):
            name = prefix.format(k=k)
            layer = {(name, i, 0): (_pick, p.key, k) for i, p in enumerate(parts)}
            graph = HighLevelGraph.from_collections(name, layer, dependencies=parts)
            outs.append(da.Array(graph, name, chunks=(tuple(self.row_chunks), (int(ncols),)), dtype=dtype))
        return outs

    def distribute(self, x, *, check=True):
        if x.shape[0] != self.shape[0]:
            raise ShapeError(f"operand must have m={self.shape[0]} rows like A; got shape {x.shape}")
        if isinstance(x, da.Array):
            x = self._align(x)
        else:
            x = np.asarray(x)
            x = da.from_array(x if x.ndim == 2 else x[:, None], chunks=(self.row_chunks, -1))
        if check:
            x = x.map_blocks(_checked, dtype=x.dtype)
        return x

    def persist(self, x):
        return x.persist(optimize_graph=False) if isinstance(x, da.Array) else x

    def norm(self, x):
        if not isinstance(x, da.Array):
            return float(np.linalg.norm(x))
        return float(np.sqrt((x.astype(np.float64) ** 2).sum().compute()))

    def gather(self, x):
        return np.asarray(x.compute()) if isinstance(x, da.Array) else np.asarray(x)

    def output(self, x, *, dtype=None):
        if not isinstance(x, da.Array):
            x = da.from_array(np.asarray(x), chunks=(self.row_chunks,) + tuple((s,) for s in np.shape(x)[1:]))
        return x if dtype is None else x.astype(dtype)

    def peek(self, rows, cols):
        return np.asarray(self.A[rows, cols].compute())

    def transposed(self):
        return DaskRowData(self._given.T, progress=self.progress, cache=self._cache if self._cache != "kept"
                           else "auto")

    def combine(self, fn, *xs, ncols=None, dtype=None):
        xs = [self._align(x) for x in xs]
        out = da.map_blocks(fn, *xs, dtype=dtype or xs[0].dtype,
                            chunks=(self.row_chunks, (ncols if ncols is not None else xs[0].shape[1],)))
        return out.persist()
