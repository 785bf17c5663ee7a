"""Fault injection over real (small) Zarr stores: nothing wrong is ever returned as an answer.

Missing and corrupted chunks, data changed under a checkpoint, a killed solve resumed with
``seed=None``, a corrupt checkpoint file; and the data fingerprint (a checksum of every byte)
checked against an independent pure-Python computation and across backends and chunkings.
"""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest
import zarr

import distsketch
from distsketch import passes as P
from distsketch.backends import DaskRowData, NumpyRowData
from distsketch.backends._protocol import block_checksum
from distsketch.cli import main
from distsketch.errors import (CheckpointError, CorruptChunkError, DataChangedError, MissingChunkError,
                               NonFiniteError, ParameterError)
from distsketch.problems import generate_problem

M, N, CH = 3000, 8, 500  # six row chunks: keys c/0/0 ... c/5/0


def _gen(path, seed=0, overwrite=False):
    return generate_problem(path, M, N, cond=1e4, frac_in_range=0.9, chunks=CH, seed=seed, overwrite=overwrite)


@pytest.fixture
def prob(tmp_path):
    return _gen(tmp_path / "p.zarr")


def foreign_store(path, A, chunks=CH):
    """A store written by someone else: plain zarr, default fill value 0."""
    z = zarr.create_array(str(path), shape=A.shape, chunks=(chunks, A.shape[1]), dtype=A.dtype)
    z[...] = A
    return str(path)


def lsqr_interrupted(monkeypatch, after):
    """Make the ``after``-th LSQR step raise KeyboardInterrupt (a job killed mid-solve)."""
    real = P.lsqr_step_tiled
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == after:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(P, "lsqr_step_tiled", flaky)
    return lambda: monkeypatch.setattr(P, "lsqr_step_tiled", real)


OPTS = dict(method="sketch_precondition", atol=1e-14, btol=1e-14)


# --- missing chunks ------------------------------------------------------------------------------
def test_missing_chunk_is_refused_naming_store_and_key(prob):
    os.remove(os.path.join(prob.path, "A", "c", "3", "0"))
    A = os.path.join(prob.path, "A")
    with pytest.raises(MissingChunkError, match=r"lacks 1 of its 6 chunks \(c/3/0\).*allow_missing_chunks=True"):
        distsketch.lstsq(A, os.path.join(prob.path, "b"), seed=0)
    with pytest.raises(FileNotFoundError, match=r"p\.zarr/A"):  # also a builtin
        distsketch.svd(A, 2, seed=0)
    with pytest.raises(MissingChunkError, match=r"lacks 1 of its 6 chunks"):
        prob.numpy("A")


def test_many_missing_chunks_are_counted(tmp_path):
    A = np.arange(40.0 * 3).reshape(40, 3) + 1
    path = foreign_store(tmp_path / "f.zarr", A, chunks=4)
    for i in range(1, 9):
        os.remove(os.path.join(path, "c", str(i), "0"))
    with pytest.raises(MissingChunkError, match=r"lacks 8 of its 10 chunks \(c/1/0, c/2/0, c/3/0, c/4/0, c/5/0, "
                                                r"\.\.\. \(3 more\)\)"):
        distsketch.open_array(path)


def test_sharded_store_missing_and_corrupt_shards(tmp_path):
    """Sharded arrays store one object per shard: the listing and the error name shard keys."""
    A = np.random.default_rng(0).standard_normal((400, 6))
    z = zarr.create_array(str(tmp_path / "s.zarr"), shape=A.shape, chunks=(50, 6), shards=(100, 6), dtype="f8")
    z[...] = A
    path = str(tmp_path / "s.zarr")
    np.testing.assert_array_equal(distsketch.open_array(path).compute(), A)
    key = os.path.join(path, "c", "2", "0")
    raw = open(key, "rb").read()
    open(key, "wb").write(raw[: len(raw) // 3])
    with pytest.raises(CorruptChunkError, match=r"cannot decode chunk c/2/0 of the Zarr array at '.*s\.zarr'"):
        distsketch.open_array(path).compute()
    os.remove(key)
    with pytest.raises(MissingChunkError, match=r"lacks 1 of its 4 shards \(c/2/0\)"):
        distsketch.open_array(path)


def test_missing_chunk_allowed_reads_the_fill_value(tmp_path, prob):
    """allow_missing_chunks=True: a foreign store's hole is zeros, and the answer is LAPACK's on that
    zero-filled matrix; a store distsketch wrote fills holes with NaN, reported by rows."""
    A, b = prob.numpy("A"), prob.numpy("b")
    path = foreign_store(tmp_path / "f.zarr", A)
    os.remove(os.path.join(path, "c", "2", "0"))
    A0 = A.copy()
    A0[2 * CH:3 * CH] = 0.0
    res = distsketch.lstsq(distsketch.open_array(path, allow_missing_chunks=True), b, seed=0, **OPTS)
    ref = np.linalg.lstsq(A0, b, rcond=None)[0]
    assert res.converged
    np.testing.assert_allclose(res.x, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    assert not np.allclose(ref, np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-3)  # the hole matters

    os.remove(os.path.join(prob.path, "A", "c", "4", "0"))
    nan_filled = distsketch.open_array(os.path.join(prob.path, "A"), allow_missing_chunks=True)
    with pytest.raises(NonFiniteError, match=r"rows 2000:2500.*the chunk is probably missing"):
        distsketch.lstsq(nan_filled, b, seed=0)


def test_cli_refuses_missing_chunk_and_accepts_it_with_the_flag(tmp_path, prob, capsys):
    A, b = prob.numpy("A"), prob.numpy("b")
    path = foreign_store(tmp_path / "f.zarr", A)
    os.remove(os.path.join(path, "c", "5", "0"))
    out = str(tmp_path / "x.zarr")
    rc = main(["lstsq", path, os.path.join(prob.path, "b"), "--out", out, "--seed", "1", "--quiet"])
    assert rc == 2 and "lacks 1 of its 6 chunks (c/5/0)" in capsys.readouterr().err
    assert not os.path.exists(out)
    for cmd in (["sketch", path, "--d", "20", "--out", out], ["svd", path, "--rank", "2", "--out", out]):
        assert main(cmd + ["--quiet"]) == 2 and "--allow-missing-chunks" in capsys.readouterr().err


@pytest.mark.cluster
def test_cli_allow_missing_chunks_solves_the_zero_filled_matrix(tmp_path, prob):
    A, b = prob.numpy("A"), prob.numpy("b")
    path = foreign_store(tmp_path / "f.zarr", A)
    os.remove(os.path.join(path, "c", "5", "0"))
    out = str(tmp_path / "x.zarr")
    rc = main(["lstsq", path, os.path.join(prob.path, "b"), "--out", out, "--seed", "1", "--quiet", "--workers", "1",
               "--allow-missing-chunks", "--method", "sketch_precondition", "--atol", "1e-14", "--btol", "1e-14"])
    A[5 * CH:] = 0.0
    ref = np.linalg.lstsq(A, b, rcond=None)[0]
    assert rc == 0
    x = zarr.open_array(os.path.join(out, "x"), mode="r")[...]
    np.testing.assert_allclose(x, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


# --- corrupted chunks ----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_chunk_names_store_and_key(prob, damage):
    key = os.path.join(prob.path, "A", "c", "1", "0")
    raw = bytearray(open(key, "rb").read())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF
    open(key, "wb").write(bytes(raw))
    A = os.path.join(prob.path, "A")
    with pytest.raises(CorruptChunkError, match=r"cannot decode chunk c/1/0 of the Zarr array at '.*p\.zarr/A'"):
        distsketch.lstsq(A, prob.numpy("b"), seed=0)
    with pytest.raises(ValueError, match=r"chunk c/1/0 .*restore the chunk"):  # also a builtin
        prob.numpy("A")
    # the MPI backend's read of a rank's rows goes through the same check
    from distsketch._inputs import open_zarr_array, read_rows

    with pytest.raises(CorruptChunkError, match=r"chunk c/1/0 of the Zarr array at 'mine'"):
        read_rows(open_zarr_array(A), 0, 1200, "mine")
    np.testing.assert_array_equal(read_rows(open_zarr_array(A), 1000, 1500, "mine"),
                                  zarr.open_array(A, mode="r")[1000:1500])  # other chunks still read


# --- the data fingerprint ------------------------------------------------------------------------
def _splitmix_ref(x: int) -> int:
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) | 1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_checksum_matches_a_pure_python_reference(dtype):
    """sum_r a(r) (sum_j b(j) word_rj mod 2**32) mod 2**64 over the little-endian 32-bit words of each row."""
    A = np.random.default_rng(3).standard_normal((7, 3)).astype(dtype)
    ref = 0
    for i in range(7):
        raw = A[i].tobytes()
        words = [int.from_bytes(raw[k:k + 4], "little") for k in range(0, len(raw), 4)]
        row = sum((_splitmix_ref(j + (1 << 62)) & 0xFFFFFFFF) * w for j, w in enumerate(words)) % (1 << 32)
        ref += _splitmix_ref(i + 40) * row
    assert int(block_checksum(A, 40)[0]) == ref % (1 << 64)
    assert int(block_checksum(np.asfortranarray(A), 40)[0]) == ref % (1 << 64)  # any memory layout


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fingerprint_is_the_same_for_any_backend_chunking_and_workers(dtype):
    A = np.random.default_rng(1).standard_normal((5000, 6)).astype(dtype)
    datas = [NumpyRowData(A, workers=1), NumpyRowData(A, block_rows=700, workers=3),
             DaskRowData(da.from_array(A, chunks=(611, 6))), DaskRowData(da.from_array(A, chunks=(2500, 4)))]
    fps = set()
    for d in datas:
        assert d.fingerprint is None
        P.col_norms(d)
        fps.add(d.fingerprint)
    assert len(fps) == 1 and fps.pop().startswith(f"{np.dtype(dtype).name}[5000x6]:")
    B = A.copy()
    B[4321, 5] = np.nextafter(B[4321, 5], np.inf)  # one ulp of one entry
    d = NumpyRowData(B)
    P.col_norms(d)
    assert d.fingerprint != datas[0].fingerprint


# --- checkpoints ---------------------------------------------------------------------------------
def test_data_changed_under_a_checkpoint_is_refused(tmp_path, monkeypatch):
    """Regenerate the store with another seed after an interrupted solve: the resumed solve refuses it,
    naming both fingerprints and the checkpoint, and the checkpoint is kept for the original data."""
    p = _gen(tmp_path / "p.zarr")
    A, b = os.path.join(p.path, "A"), os.path.join(p.path, "b")
    ck = tmp_path / "ck.npz"
    restore = lsqr_interrupted(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        distsketch.lstsq(A, b, seed=3, checkpoint=ck, **OPTS)
    restore()
    saved = ck.read_bytes()
    b_old = p.numpy("b")
    _gen(tmp_path / "p.zarr", seed=1, overwrite=True)
    # the same b: only A differs (b enters the call's fingerprint by its own checksum)
    zarr.open_array(b, mode="r+")[...] = b_old
    with pytest.raises(DataChangedError, match=r"checkpoint '.*ck\.npz' was written for: its fingerprint is "
                                               r"float64\[3000x8\]:[0-9a-f]{16}, the checkpoint's is "
                                               r"float64\[3000x8\]:[0-9a-f]{16}") as ei:
        distsketch.lstsq(A, b, seed=3, checkpoint=ck, **OPTS)
    fp_new, fp_old = __import__("re").findall(r"float64\[3000x8\]:[0-9a-f]{16}", str(ei.value))
    assert fp_new != fp_old
    assert ck.read_bytes() == saved  # nothing written over the checkpoint


def test_changed_matrix_same_b_numpy_input(tmp_path, monkeypatch, prob):
    """Only A changes (one entry), b is the same: the call's arguments match, the data does not."""
    A, b = prob.numpy("A"), prob.numpy("b")
    ck = tmp_path / "ck.npz"
    restore = lsqr_interrupted(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        distsketch.lstsq(A, b, seed=3, checkpoint=ck, **OPTS)
    restore()
    A2 = A.copy()
    A2[1234, 5] *= 1 + 1e-15
    with pytest.raises(DataChangedError, match="delete the checkpoint to solve the new data from the start"):
        distsketch.lstsq(A2, b, seed=3, checkpoint=ck, **OPTS)
    assert ck.exists()
    # the original data still resumes, to the uninterrupted answer
    full = distsketch.lstsq(A, b, seed=3, **OPTS)
    res = distsketch.lstsq(A, b, seed=3, checkpoint=ck, **OPTS)
    np.testing.assert_array_equal(res.x, full.x)
    assert not ck.exists()


@pytest.mark.cluster
def test_killed_solve_resumes_bit_for_bit_on_a_distributed_client(tmp_path, monkeypatch, prob, local_cluster_client):
    """The resumed solve reads its sketch back from the checkpoint, at another address than the pass
    produced it; BLAS rounds by alignment, so the factor is computed at a 64-byte boundary (under a
    2-worker client the resumed x once differed from the uninterrupted one by 1e-10)."""
    A, b = prob.dask("A"), prob.dask("b")
    ck = tmp_path / "ck.npz"
    restore = lsqr_interrupted(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        distsketch.lstsq(A, b, seed=5, checkpoint=ck, **OPTS)
    restore()
    res = distsketch.lstsq(A, b, seed=5, checkpoint=ck, **OPTS)
    full = distsketch.lstsq(A, b, seed=5, **OPTS)
    assert res.passes == full.passes and res.iterations == full.iterations
    np.testing.assert_array_equal(res.x, full.x)


@pytest.mark.parametrize("method", ["sketch_precondition", "cholqr"])
def test_killed_solve_resumes_with_seed_none(tmp_path, monkeypatch, prob, method):
    A, b = prob.dask("A"), prob.dask("b")
    ck = tmp_path / "ck.npz"
    restore = lsqr_interrupted(monkeypatch, 5 if method == "sketch_precondition" else 1)
    with pytest.raises(KeyboardInterrupt):
        distsketch.lstsq(A, b, method=method, atol=1e-14, btol=1e-14, seed=None, checkpoint=ck)
    restore()
    assert ck.exists()
    res = distsketch.lstsq(A, b, method=method, atol=1e-14, btol=1e-14, seed=None, checkpoint=ck)
    full = distsketch.lstsq(A, b, method=method, atol=1e-14, btol=1e-14, seed=res.seed)  # never interrupted
    assert res.passes == full.passes and res.iterations == full.iterations
    np.testing.assert_array_equal(res.x, full.x)
    assert not ck.exists()
    ref = np.linalg.lstsq(prob.numpy("A"), prob.numpy("b"), rcond=None)[0]  # LAPACK, cond(A) = 1e4
    assert np.linalg.norm(res.x - ref) <= 1e-9 * np.linalg.norm(ref)


def test_explicit_other_seed_is_still_refused(tmp_path, monkeypatch, prob):
    A, b = prob.numpy("A"), prob.numpy("b")
    ck = tmp_path / "ck.npz"
    restore = lsqr_interrupted(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        distsketch.lstsq(A, b, seed=None, checkpoint=ck, **OPTS)
    restore()
    with pytest.raises(ParameterError, match="written by a solve with different arguments"):
        distsketch.lstsq(A, b, seed=12345, checkpoint=ck, **OPTS)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_file_names_it(tmp_path, monkeypatch, prob, damage):
    A, b = prob.numpy("A"), prob.numpy("b")
    ck = tmp_path / "ck.npz"
    restore = lsqr_interrupted(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        distsketch.lstsq(A, b, seed=2, checkpoint=ck, **OPTS)
    restore()
    raw = ck.read_bytes()
    ck.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    for seed in (2, None):  # also when the seed is read from the file
        with pytest.raises(CheckpointError, match=r"cannot read the checkpoint '.*ck\.npz'.*delete it"):
            distsketch.lstsq(A, b, seed=seed, checkpoint=ck, **OPTS)
    assert ck.exists()  # the user decides what to do with it


def test_checkpoint_without_a_data_fingerprint_is_refused(tmp_path, monkeypatch, prob):
    """A checkpoint that matches the call but records no fingerprint of A cannot be verified: refused."""
    A, b = prob.numpy("A"), prob.numpy("b")
    ck = tmp_path / "ck.npz"
    restore = lsqr_interrupted(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        distsketch.lstsq(A, b, seed=2, checkpoint=ck, **OPTS)
    restore()
    with np.load(ck) as f:
        state = {k: f[k] for k in f.files if k != "__data__"}
    np.savez(ck, **state)
    with pytest.raises(CheckpointError, match=r"checkpoint '.*ck\.npz' records no fingerprint of its data"):
        distsketch.lstsq(A, b, seed=2, checkpoint=ck, **OPTS)


@pytest.mark.cluster
def test_cli_refuses_changed_data_and_resumes_with_its_seed(tmp_path, monkeypatch, capsys):
    """The command line (seed=None by default): a checkpoint of an interrupted run resumes with its seed
    and gives the uninterrupted x; after the store is regenerated the same command is refused."""
    p = _gen(tmp_path / "p.zarr")
    A, b = os.path.join(p.path, "A"), os.path.join(p.path, "b")
    ck = tmp_path / "ck.npz"
    restore = lsqr_interrupted(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):  # what `distsketch lstsq A b --checkpoint ck` leaves when killed
        distsketch.lstsq(A, b, method="sketch_precondition", checkpoint=ck)
    restore()
    saved = ck.read_bytes()
    args = ["lstsq", A, b, "--checkpoint", str(ck), "--method", "sketch_precondition", "--quiet", "--workers", "1"]
    assert main(args + ["--out", str(tmp_path / "x.zarr")]) == 0
    g = zarr.open_group(str(tmp_path / "x.zarr"), mode="r")
    full = distsketch.lstsq(A, b, method="sketch_precondition", seed=g.attrs["seed"])  # never interrupted
    np.testing.assert_array_equal(g["x"][...], full.x)
    assert g.attrs["passes"] == full.passes
    capsys.readouterr()

    ck.write_bytes(saved)
    b_old = p.numpy("b")
    _gen(tmp_path / "p.zarr", seed=1, overwrite=True)
    zarr.open_array(b, mode="r+")[...] = b_old  # only A changed
    assert main(args + ["--out", str(tmp_path / "y.zarr")]) == 2
    err = capsys.readouterr().err
    assert "the data is not the data checkpoint" in err and "its fingerprint is float64[3000x8]:" in err
    assert ck.read_bytes() == saved and not os.path.exists(tmp_path / "y.zarr")


@pytest.mark.mpi
def test_mpi_driver_resumes_with_its_seed_and_refuses_changed_data(tmp_path):
    """drivers/lstsq.py under mpiexec -n 2 without --seed: killed after 3 passes, resumed to the x (bit for
    bit) of an uninterrupted run with the seed it drew;
    after A is regenerated the resumed job is refused on every rank."""
    import json
    import subprocess
    import sys

    pytest.importorskip("mpi4py")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")

    def mpirun(*args, stop_after=None):
        driver = [os.path.join(root, "drivers", "lstsq.py")]
        if stop_after is not None:  # the test hook wraps the driver: every rank exits hard after that pass
            driver = [os.path.join(root, "tests", "stop_after_passes.py"), str(stop_after), *driver]
        cmd = [mpiexec, "-n", "2", sys.executable, *driver, *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180)

    p = _gen(tmp_path / "p.zarr")
    A, b, ck = f"{p.path}/A", f"{p.path}/b", tmp_path / "ck"
    common = ("--checkpoint", ck, "--method", "sketch_precondition")
    killed = mpirun(A, b, "--out", tmp_path / "x.zarr", *common, stop_after=3)
    assert killed.returncode != 0 and len(os.listdir(ck)) == 2
    saved = {f: (ck / f).read_bytes() for f in os.listdir(ck)}
    done = mpirun(A, b, "--out", tmp_path / "x.zarr", *common)
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout)
    x = zarr.open_array(str(tmp_path / "x.zarr/x"), mode="r")[...]
    whole = mpirun(A, b, "--out", tmp_path / "z.zarr", "--method", "sketch_precondition", "--seed", meta["seed"])
    assert whole.returncode == 0, whole.stderr  # never interrupted, with the seed the first job drew
    assert json.loads(whole.stdout)["passes"] == meta["passes"]
    np.testing.assert_array_equal(x, zarr.open_array(str(tmp_path / "z.zarr/x"), mode="r")[...])
    ref = np.linalg.lstsq(p.numpy("A"), p.numpy("b"), rcond=None)[0]  # LAPACK, cond(A) = 1e4
    # forward error <= ~cond(A) x atol = 1e4 x 1e-12; the drawn seed varies per run (3.4e-9 seen over 40 seeds)
    assert np.linalg.norm(x - ref) <= 1e-7 * np.linalg.norm(ref)

    for f, raw in saved.items():  # the killed job's checkpoint, then A regenerated (b kept)
        (ck / f).write_bytes(raw)
    b_old = p.numpy("b")
    _gen(tmp_path / "p.zarr", seed=1, overwrite=True)
    zarr.open_array(b, mode="r+")[...] = b_old
    refused = mpirun(A, b, "--out", tmp_path / "y.zarr", *common)
    assert refused.returncode != 0 and not os.path.exists(tmp_path / "y.zarr")
    assert "the data is not the data checkpoint" in refused.stderr
    assert "its fingerprint is float64[3000x8]:" in refused.stderr

    # one rank's checkpoint file damaged: every rank stops with the file's name (none waits forever)
    (ck / "lstsq.rank1.npz").write_bytes(b"garbage")
    broken = mpirun(A, b, "--out", tmp_path / "y.zarr", *common)
    assert broken.returncode != 0 and not os.path.exists(tmp_path / "y.zarr")
    assert "cannot read the checkpoint" in broken.stderr and "lstsq.rank1.npz" in broken.stderr
