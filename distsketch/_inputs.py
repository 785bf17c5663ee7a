"""Input coercion: numpy arrays, dask arrays, zarr arrays and Zarr paths/URLs.

Everything here is cheap (metadata and a listing of the store's keys): no chunk of data
is read.

Verified reads
--------------
Zarr reads a chunk that is absent from the store as the array's fill value, so a deleted
or never-written chunk of ``A`` silently becomes zeros. Before the first read,
:func:`open_zarr_array` lists the keys the store holds (one listing, no data) and refuses
an array with missing chunks (:class:`~distsketch.errors.MissingChunkError`) unless the
caller says they mean the fill value (``allow_missing_chunks=True``; Zarr skips writing
chunks that equal the fill value, so some writers leave such holes on purpose). Reads go
through a thin wrapper that turns a decoding failure (a truncated or altered chunk) into
a :class:`~distsketch.errors.CorruptChunkError` naming the store and the chunk's key.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import ArrayNotFoundError, CorruptChunkError, InputTypeError, MissingChunkError, ShapeError

__all__ = ["as_matrix", "is_lazy", "open_array", "open_zarr_array", "float_dtype", "missing_chunk_keys",
           "read_rows"]


def float_dtype(dtype) -> np.dtype:
    """The floating dtype distsketch computes in: float32 stays, float64 stays, ints/bools -> float64."""
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):
        return dtype
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    raise InputTypeError(
        f"expected real floating-point, integer or boolean data; got dtype {dtype}. "
        "Convert complex or object data explicitly before sketching."
    )


def open_zarr_array(path, *, allow_missing_chunks: bool = False):
    """Open a Zarr array read-only from a local path or an fsspec URL, or check an open one.

    Parameters
    ----------
    path : str, path or zarr.Array
    allow_missing_chunks : bool
        ``False`` (default): list the store's keys and raise if any chunk is absent.
        ``True``: absent chunks read as the array's fill value (Zarr's own rule).

    Raises
    ------
    ArrayNotFoundError
        Nothing, or a group, at ``path``.
    MissingChunkError
        Chunks absent from the store (and ``allow_missing_chunks`` is false).
    """
    import zarr

    if isinstance(path, (str, os.PathLike)):
        spath = os.fspath(path)
        try:
            arr = zarr.open_array(spath, mode="r")
        except (FileNotFoundError, KeyError, ValueError, zarr.errors.ArrayNotFoundError,
                zarr.errors.NodeTypeValidationError) as exc:
            raise ArrayNotFoundError(
                f"no Zarr array at {spath!r} ({type(exc).__name__}: {exc}); expected the path of a Zarr array "
                "(a group's member is addressed as 'store.zarr/name')"
            ) from None
        except Exception as exc:  # zarr raises several unrelated types for "not an array here"
            if type(exc).__name__ in {"ContainsGroupError", "GroupNotFoundError", "NodeNotFoundError"}:
                raise ArrayNotFoundError(f"no Zarr array at {spath!r}: {exc}") from None
            raise
    else:
        arr, spath = path, _describe(path)
    if not allow_missing_chunks:
        missing, total = missing_chunk_keys(arr)
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
            what = "shards" if getattr(arr, "shards", None) else "chunks"
            raise MissingChunkError(
                f"the Zarr array at {spath!r} lacks {len(missing)} of its {total} {what} ({shown}); Zarr would "
                f"read them as the fill value ({arr.fill_value}). Restore or rewrite the store, or, if the "
                "missing chunks really mean the fill value (zeros), open it with "
                "distsketch.open_array(path, allow_missing_chunks=True) (command line: --allow-missing-chunks)"
            )
    return arr


def _describe(z) -> str:
    """The store URL and path of an open zarr array, for messages."""
    try:
        return str(z.store_path)
    except Exception:  # pragma: no cover - zarr 2 arrays
        return f"{getattr(z, 'store', '?')}/{getattr(z, 'path', '')}"


def missing_chunk_keys(z) -> tuple[list[str], int]:
    """The storage keys of ``z``'s chunks (or shards) absent from its store, and the number expected.

    One listing of the store under the array's prefix; no chunk is read.
    """
    from zarr.core.sync import sync

    sp = z.store_path

    async def _list():
        return [k async for k in sp.store.list_prefix(sp.path)]

    prefix = f"{sp.path}/" if sp.path else ""
    stored = {k[len(prefix):] if k.startswith(prefix) else k for k in sync(_list())}
    expected = list(z._iter_shard_keys())
    return [k for k in expected if k not in stored], len(expected)


def _storage_grid(z) -> tuple[int, ...]:
    return tuple(z.shards) if getattr(z, "shards", None) else tuple(z.chunks)


def _keys_in(z, sel) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """(storage-grid coordinates, region) of every stored object a basic selection touches."""
    import itertools

    grid = _storage_grid(z)
    ranges = []
    for d, (size, ch) in enumerate(zip(z.shape, grid)):
        s = sel[d] if d < len(sel) else slice(None)
        start, stop, _ = s.indices(size) if isinstance(s, slice) else (int(s), int(s) + 1, 1)
        ranges.append(range(start // ch, max(start, stop - 1) // ch + 1) if stop > start else range(0))
    out = []
    for coords in itertools.product(*ranges):
        out.append((coords, tuple(slice(c * ch, min(n, (c + 1) * ch)) for c, ch, n in zip(coords, grid, z.shape))))
    return out


def _corrupt(z, sel, source, exc) -> CorruptChunkError:
    """Find which stored object(s) of the selection fail to decode (error path only)."""
    bad = []
    for coords, region in _keys_in(z, sel):
        try:
            z[region]
        except Exception:
            bad.append(z.metadata.encode_chunk_key(coords))
    from ._zarrio import corrupt_chunk_error

    keys = ", ".join(bad) if bad else "(could not isolate the chunk)"
    return corrupt_chunk_error(keys, source, f"{type(exc).__name__}: {exc}")


class _VerifiedZarr:
    """A zarr array whose reads name the store and chunk key when a chunk fails to decode.

    Passed to ``dask.array.from_array`` in place of the zarr array: each task reads one block
    of whole chunks (:func:`block_rows`) through ``__getitem__``. Whole row chunks of a local
    store are decoded straight into an aligned block (:class:`~distsketch._zarrio.ChunkReader`,
    the same values as Zarr's); anything else is read by Zarr, exactly as ``da.from_zarr`` does.
    """

    def __init__(self, z, source: str):
        from ._zarrio import ChunkReader

        self.z = z
        self.fast = ChunkReader.for_array(z)
        self.source = source
        self.shape = z.shape
        self.dtype = z.dtype
        self.ndim = z.ndim
        self.chunks = z.chunks

    def __getitem__(self, sel):
        rows = self.fast.rows_of(sel) if self.fast is not None else None
        if rows is not None:
            return self.fast.read(*rows, self.source)
        try:
            return self.z[sel]
        except Exception as exc:
            sel = sel if isinstance(sel, tuple) else (sel,)
            if all(isinstance(s, (slice, int, np.integer)) for s in sel):
                raise _corrupt(self.z, sel, self.source, exc) from exc
            raise


def read_rows(z, r0: int, r1: int, source: str | None = None) -> np.ndarray:
    """``z[r0:r1]``, with a decoding failure reported as :class:`CorruptChunkError` naming the key."""
    from ._zarrio import ChunkReader

    fast = ChunkReader.for_array(z)
    rows = fast.rows_of((slice(r0, r1),)) if fast is not None else None
    if rows is not None:
        return fast.read(*rows, source or _describe(z))
    try:
        return z[r0:r1]
    except Exception as exc:
        raise _corrupt(z, (slice(r0, r1),), source or _describe(z), exc) from exc


#: a row block (one task of a pass) groups whole store chunks up to this share of the smallest
#: worker memory limit of the active distributed Client. A task holds its block, the mapped
#: compressed chunk and the kernel's temporaries (a sparse sketch's pattern, a finiteness mask:
#: ~2.5x the block), and a worker's imports take ~100 MiB of its limit: blocks of 1/8 of a
#: 160 MiB limit killed the workers of ``tests/test_lstsq_cluster.py``. 1/32 gives 128 MiB
#: blocks from 4 GiB workers, 5 MiB at 160 MiB.
BLOCK_MEMORY_FRACTION = 1 / 32

#: ... and leaves at least this many blocks (when the store has that many chunks)
MIN_BLOCKS = 8


def block_rows(z, block_bytes="auto") -> int:
    """Rows of the row blocks distsketch reads a 2-D Zarr array in: whole store chunks, grouped.

    One task a store chunk made each pass a scheduler round a chunk on the cores the kernels
    use: on the 2-core benchmark machine, the q = 2 block Krylov SVD of a 200,000 x 1,000 store
    in 4,194-row chunks (33.5 MB) took 7.41 s with a task a chunk, 6.41 s with two chunks a task
    and 5.72 s with four (this function's choice there), medians of 4 interleaved in one run
    (``scripts/bench/lowrank_ab.py --compare blocks``). So neighbouring chunks are read
    into one block (decoded straight into it, no copy) of up to ``block_bytes``: ``"auto"`` is
    Dask's ``array.chunk-size`` (128 MiB by default), at most :data:`BLOCK_MEMORY_FRACTION` (1/32) of
    the smallest worker memory limit of the active Client, and at least :data:`MIN_BLOCKS`
    blocks; ``None`` keeps the store's chunks. Chunks that do not span every column (the backend
    regroups those itself) and 1-D arrays keep the store's chunks.

    The blocks depend on the store, Dask's ``array.chunk-size`` and the workers' memory limits
    only (not on their number): the same store on the same kind of cluster gives the same blocks,
    hence bit-identical results.
    """
    r = int(z.chunks[0])
    if block_bytes is None or z.ndim != 2 or int(z.chunks[1]) < int(z.shape[1]) or r >= z.shape[0]:
        return r
    if block_bytes == "auto":
        import dask
        from dask.utils import parse_bytes

        try:
            target = parse_bytes(dask.config.get("array.chunk-size", "128MiB"))
        except (TypeError, ValueError):  # a setting parse_bytes cannot read: Dask's default
            target = 128 * 2**20
        from .cluster import worker_memory_limits

        limits = worker_memory_limits()
        if limits:
            target = min(target, int(min(limits) * BLOCK_MEMORY_FRACTION))
    else:
        target = int(block_bytes)
    chunk_bytes = r * int(z.shape[1]) * np.dtype(z.dtype).itemsize
    nchunks = -(-int(z.shape[0]) // r)
    g = max(1, min(target // max(chunk_bytes, 1), -(-nchunks // MIN_BLOCKS)))
    return r * g


def open_array(A, *, allow_missing_chunks: bool = False, block_bytes="auto"):
    """Open a Zarr array (path, URL or ``zarr.Array``) as a dask array with verified reads.

    Every function of distsketch that takes a path calls this with the default; call it
    yourself to accept missing chunks::

        distsketch.lstsq(distsketch.open_array("p.zarr/A", allow_missing_chunks=True), b)

    Parameters
    ----------
    A : str, path or zarr.Array
    allow_missing_chunks : bool
        ``False`` (default) refuses a store that lacks chunks; ``True`` reads them as the
        fill value, as Zarr does (zeros unless the writer chose another fill value; stores
        written by distsketch use NaN, so their missing chunks are then reported as
        non-finite data naming the rows).
    block_bytes : "auto", int or None
        Row chunks of the result: whole store chunks grouped up to this many bytes (see
        :func:`block_rows`; ``"auto"``: Dask's ``array.chunk-size``, at most 1/32 of the
        smallest worker memory limit of the active Client); ``None``: the store's chunks.

    Returns
    -------
    dask.array.Array
        Row chunks of whole store chunks; a chunk that fails to decode raises
        :class:`~distsketch.errors.CorruptChunkError` naming the store and its key.

    Raises
    ------
    ArrayNotFoundError, MissingChunkError
    """
    import dask.array as da
    from dask.base import tokenize

    z = open_zarr_array(A, allow_missing_chunks=allow_missing_chunks)
    source = os.fspath(A) if isinstance(A, (str, os.PathLike)) else _describe(z)
    chunks = (block_rows(z, block_bytes),) + tuple(z.chunks[1:])
    name = "from-zarr-" + tokenize(_describe(z), z.metadata.to_dict() if hasattr(z.metadata, "to_dict") else None,
                                   z.chunks, chunks)
    return da.from_array(_VerifiedZarr(z, source), chunks=chunks, name=name, meta=np.empty((0,) * z.ndim, z.dtype))


def is_lazy(A) -> bool:
    import dask.array as da

    return isinstance(A, da.Array)


def as_matrix(A, name: str = "A", *, ndim=(2,), allow_missing_chunks: bool = False):
    """Return ``A`` as a numpy array or a dask array of a floating dtype.

    Paths and zarr arrays become dask arrays chunked like the store, with verified reads
    (see :func:`open_array`). Raises before any data is read.
    """
    import dask.array as da

    if isinstance(A, (str, os.PathLike)) or type(A).__module__.startswith("zarr"):
        A = open_array(A, allow_missing_chunks=allow_missing_chunks)
    if isinstance(A, da.Array):
        pass
    elif isinstance(A, np.ma.MaskedArray):
        nmask = int(np.ma.count_masked(A))
        if nmask:
            raise InputTypeError(
                f"{name} is a masked array with {nmask} masked entr{'y' if nmask == 1 else 'ies'}; distsketch needs "
                f"every entry: fill them ({name}.filled(value)) or drop the rows that hold them")
        A = np.asarray(A.data)  # nothing masked: the data itself
    elif type(A).__module__.startswith("scipy.sparse"):
        raise InputTypeError(f"{name} is a scipy sparse matrix ({type(A).__name__}); distsketch works on dense "
                             f"arrays: pass {name}.toarray() (or a dask array) instead")
    elif isinstance(A, np.ndarray) or hasattr(A, "__array__") or isinstance(A, (list, tuple)):
        try:
            A = np.asarray(A)
        except ValueError as exc:  # ragged nested lists
            raise ShapeError(f"{name} is a ragged sequence (rows of different lengths): {exc}; pass a rectangular "
                             "array") from None
    else:
        raise InputTypeError(
            f"{name} must be a numpy array, a dask array, a zarr array or the path of a Zarr array; "
            f"got {type(A).__name__}"
        )
    if A.ndim not in ndim:
        want = " or ".join(f"{k}-D" for k in ndim)
        raise ShapeError(f"{name} must be {want}; got an array with shape {A.shape}")
    try:
        dt = float_dtype(A.dtype)
    except InputTypeError:
        hint = ("complex data is not supported: pass the real part (A.real) if the imaginary part is zero, or "
                "solve real and imaginary parts as a real problem twice the size" if A.dtype.kind == "c"
                else "convert it to numbers first (A.astype(float))")
        raise InputTypeError(f"{name} has dtype {A.dtype}; distsketch needs real floating-point, integer or boolean "
                             f"data: {hint}") from None
    if A.dtype != dt:
        A = A.astype(dt)
    return A
