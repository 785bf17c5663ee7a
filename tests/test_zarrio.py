"""The direct chunk reader (distsketch._zarrio): Zarr's values bit for bit, or Zarr itself.

Every configuration the direct path claims is written with zarr and read back both ways; the
ones it does not claim must fall back (``ChunkReader.for_array`` is ``None``, or a selection
is not whole row chunks) and still give Zarr's values through ``open_array``.
"""

from __future__ import annotations

import os
import pickle

import numcodecs
import numpy as np
import pytest
import zarr

import distsketch
from distsketch._inputs import open_zarr_array, read_rows
from distsketch._zarrio import ChunkReader
from distsketch.errors import CorruptChunkError

M, N, CH = 1037, 9, 100  # an edge chunk of 37 rows


def _data(dtype=np.float64, shape=(M, N)):
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape) * 10).astype(dtype)


def _write(path, A, **kw):
    chunks = kw.pop("chunks", (CH,) + A.shape[1:])
    z = zarr.create_array(str(path), shape=A.shape, chunks=chunks, dtype=A.dtype, **kw)
    z[...] = A
    return str(path)


DIRECT = {
    "zstd-default": dict(),
    "zstd-checksum": dict(compressors=zarr.codecs.ZstdCodec(level=3, checksum=True)),
    "blosc-shuffle": dict(compressors=zarr.codecs.BloscCodec(cname="lz4", shuffle="shuffle")),
    "blosc-bitshuffle": dict(compressors=zarr.codecs.BloscCodec(cname="zstd", shuffle="bitshuffle")),
    "uncompressed": dict(compressors=None),
    "v2-zstd": dict(zarr_format=2, compressors=numcodecs.Zstd(level=1)),
    "v2-blosc": dict(zarr_format=2, compressors=numcodecs.Blosc()),
    "v2-none": dict(zarr_format=2, compressors=None),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
@pytest.mark.parametrize("config", sorted(DIRECT))
def test_direct_reads_equal_zarr(tmp_path, config, dtype):
    A = _data(dtype)
    path = _write(tmp_path / "a.zarr", A, **DIRECT[config])
    z = zarr.open_array(path, mode="r")
    r = ChunkReader.for_array(z)
    assert r is not None, config
    for r0, r1 in [(0, CH), (3 * CH, 5 * CH), (10 * CH, M), (0, M)]:
        got = r.read(r0, r1, path)
        np.testing.assert_array_equal(got, A[r0:r1])
        assert got.dtype == A.dtype and got.flags.c_contiguous and got.ctypes.data % 64 == 0
    # the dask route: every block through the direct path, equal to zarr's own read
    np.testing.assert_array_equal(distsketch.open_array(path).compute(), z[...])
    # and the MPI backend's read of a rank's rows
    np.testing.assert_array_equal(read_rows(open_zarr_array(path), 2 * CH, M, path), A[2 * CH:])


def test_one_dimensional_arrays(tmp_path):
    b = _data(shape=(M,))
    path = _write(tmp_path / "b.zarr", b)
    r = ChunkReader.for_array(zarr.open_array(path, mode="r"))
    np.testing.assert_array_equal(r.read(CH, M, path), b[CH:])
    np.testing.assert_array_equal(distsketch.open_array(path).compute(), b)


@pytest.mark.parametrize("why", ["gzip", "two column chunks", "sharded", "big endian", "filters", "memory store"])
def test_what_the_direct_path_does_not_claim_falls_back_to_zarr(tmp_path, why):
    A = _data()
    kw = {"gzip": dict(compressors=zarr.codecs.GzipCodec()),
          "two column chunks": dict(chunks=(CH, 5)),
          "sharded": dict(chunks=(50, N), shards=(CH, N)),
          "big endian": dict(serializer=zarr.codecs.BytesCodec(endian="big")),
          "filters": dict(zarr_format=2, filters=[numcodecs.Delta(dtype="f8")], compressors=None),
          "memory store": {}}[why]
    if why == "memory store":
        z = zarr.create_array(zarr.storage.MemoryStore(), shape=A.shape, chunks=(CH, N), dtype=A.dtype)
        z[...] = A
    else:
        z = zarr.open_array(_write(tmp_path / "a.zarr", A, **kw), mode="r")
    assert ChunkReader.for_array(z) is None
    np.testing.assert_array_equal(distsketch.open_array(z).compute(), z[...])  # (Delta rounds: Zarr's values)


def test_selections_that_are_not_whole_row_chunks_go_to_zarr(tmp_path):
    A = _data()
    path = _write(tmp_path / "a.zarr", A)
    r = ChunkReader.for_array(zarr.open_array(path, mode="r"))
    assert r.rows_of((slice(0, CH), slice(0, N))) == (0, CH)
    assert r.rows_of((slice(10 * CH, M),)) == (10 * CH, M)
    for sel in [(slice(5, CH),), (slice(0, 150),), (slice(0, CH), slice(0, 4)), (slice(0, CH, 2),), (3,),
                (slice(0, CH), 1)]:
        assert r.rows_of(sel) is None, sel
    # dask chunks that split the store's chunks still read Zarr's values
    A2 = distsketch.open_array(path).rechunk((60, 4))
    np.testing.assert_array_equal(A2.compute(), A)


def test_env_switch_turns_the_direct_path_off(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.zarr", _data())
    monkeypatch.setenv("DISTSKETCH_DIRECT_ZARR", "0")
    assert ChunkReader.for_array(zarr.open_array(path, mode="r")) is None


def test_reader_pickles_for_the_workers(tmp_path):
    A = _data()
    path = _write(tmp_path / "a.zarr", A)
    r = pickle.loads(pickle.dumps(ChunkReader.for_array(zarr.open_array(path, mode="r"))))
    np.testing.assert_array_equal(r.read(0, 2 * CH, path), A[:2 * CH])


@pytest.mark.parametrize("config", ["zstd-default", "zstd-checksum", "blosc-shuffle", "uncompressed"])
@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "longer"])
def test_damaged_chunks_raise_naming_the_key(tmp_path, config, damage):
    A = _data()
    path = _write(tmp_path / "a.zarr", A, **DIRECT[config])
    key = os.path.join(path, "c", "3", "0")
    raw = bytearray(open(key, "rb").read())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "flipped":
        raw[len(raw) // 2] ^= 0xFF
    elif damage == "empty":
        raw = bytearray()
    else:
        raw += b"\0" * 16
    open(key, "wb").write(bytes(raw))
    z = zarr.open_array(path, mode="r")
    r = ChunkReader.for_array(z)
    # damage that may go unseen, as Zarr does not see it: a flipped byte in a store without a checksum
    # (the values Zarr reads), bytes after a complete frame (the frame's values); or it raises
    unseen = {"flipped": config in ("zstd-default", "blosc-shuffle", "uncompressed"),
              "longer": config != "uncompressed"}.get(damage, False)
    if unseen:
        try:
            got = r.read(3 * CH, 4 * CH, path)
        except CorruptChunkError:
            return
        want = z[3 * CH:4 * CH] if damage == "flipped" else A[3 * CH:4 * CH]
        np.testing.assert_array_equal(got, want)
        return
    with pytest.raises(CorruptChunkError, match=r"cannot decode chunk c/3/0 of the Zarr array at '.*a\.zarr'"):
        r.read(0, M, path)
    with pytest.raises(CorruptChunkError, match=r"chunk c/3/0"):
        distsketch.open_array(path).compute()
    np.testing.assert_array_equal(r.read(0, 3 * CH, path), A[:3 * CH])  # the others still read


def test_missing_chunks_read_the_fill_value_as_zarr_does(tmp_path):
    A = _data()
    path = _write(tmp_path / "a.zarr", A, fill_value=np.nan)
    os.remove(os.path.join(path, "c", "2", "0"))
    z = open_zarr_array(path, allow_missing_chunks=True)
    r = ChunkReader.for_array(z)
    got = r.read(0, M, path)
    np.testing.assert_array_equal(got, z[...])
    assert np.isnan(got[2 * CH:3 * CH]).all() and np.isfinite(got[3 * CH:]).all()


def test_chunks_equal_to_the_fill_value_are_not_written_and_still_read(tmp_path):
    A = _data()
    A[CH:2 * CH] = 0.0
    path = _write(tmp_path / "a.zarr", A)  # zarr skips writing an all-fill chunk
    assert not os.path.exists(os.path.join(path, "c", "1", "0"))
    r = ChunkReader.for_array(open_zarr_array(path, allow_missing_chunks=True))
    np.testing.assert_array_equal(r.read(0, M, path), A)


def test_row_blocks_group_whole_store_chunks(tmp_path, monkeypatch):
    """A 2-D store is read in blocks of whole neighbouring chunks (one task each), every value
    zarr's own; block_bytes caps a block, the smallest worker memory limit caps it at 1/32, at
    least MIN_BLOCKS blocks stay, and what the grouping does not apply to keeps the store's chunks."""
    import dask

    from distsketch import cluster
    from distsketch._inputs import block_rows

    A = _data(shape=(4_037, N))  # 100-row chunks of 7,200 bytes: 41 chunks, the last of 37 rows
    path = _write(tmp_path / "a.zarr", A)
    z = zarr.open_array(path, mode="r")
    monkeypatch.setattr(cluster, "worker_memory_limits", lambda: None)
    assert block_rows(z, None) == CH
    assert block_rows(z, 3 * 7_200) == 3 * CH
    assert block_rows(z, 3 * 7_200 - 1) == 2 * CH  # whole chunks only
    assert block_rows(z, 10**9) == 6 * CH  # at least MIN_BLOCKS = 8 blocks of the 41 chunks
    with dask.config.set({"array.chunk-size": "not a size"}):
        assert block_rows(z) == 6 * CH  # an unreadable setting: Dask's default, 128 MiB
    with dask.config.set({"array.chunk-size": "16KiB"}):
        assert block_rows(z) == 2 * CH  # "auto": Dask's chunk size, 16,384 // 7,200 = 2 chunks
        monkeypatch.setattr(cluster, "worker_memory_limits", lambda: [32 * 7_200, 64 * 7_200])
        assert block_rows(z) == CH  # 1/32 of the workers' limit: one chunk
    for rows in (CH, 2 * CH, 3 * CH):
        X = distsketch.open_array(path, block_bytes=rows // CH * 7_200)
        assert X.chunks[0][:-1] == (rows,) * (len(X.chunks[0]) - 1) and sum(X.chunks[0]) == A.shape[0]
        np.testing.assert_array_equal(X.compute(), z[...])
    # different blocks, different graph names; the same blocks, the same name
    assert distsketch.open_array(path, block_bytes=None).name != distsketch.open_array(path, block_bytes=14_400).name
    assert distsketch.open_array(path, block_bytes=14_400).name == distsketch.open_array(path, block_bytes=14_400).name
    # not grouped: chunks that split the columns, 1-D arrays
    split = _write(tmp_path / "split.zarr", A, chunks=(CH, 4))
    assert block_rows(zarr.open_array(split, mode="r"), 10**9) == CH
    vec = _write(tmp_path / "v.zarr", A[:, 0], chunks=(CH,))
    assert block_rows(zarr.open_array(vec, mode="r"), 10**9) == CH
