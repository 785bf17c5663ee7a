"""MPI drivers under `mpiexec -n 2` (pip's mpich): the same sketch, solution and SVD as the numpy
path for the same seed, and clean failure on every rank for bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

import distsketch
from distsketch.problems import generate_problem

pytest.importorskip("mpi4py")
pytestmark = pytest.mark.mpi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def mpirun(script, *args, n=2, timeout=180, check=True):
    cmd = [MPIEXEC, "-n", str(n), sys.executable, os.path.join(ROOT, "drivers", script), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def prob(tmp_path_factory):
    path = tmp_path_factory.mktemp("mpi") / "p.zarr"
    return generate_problem(path, 40_000, 24, cond=10, frac_in_range=0.9, chunks=3000, seed=5)


def rel(a, b):
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b)


@pytest.mark.parametrize("kind", ["sparse_sign", "srct", "gaussian"])
def test_sketch_matches_numpy(prob, tmp_path, kind):
    out = tmp_path / "s.zarr"
    meta = json.loads(mpirun("sketch.py", f"{prob.path}/A", "--d", 96, "--kind", kind, "--seed", 4,
                             "--out", out).stdout)
    assert meta["passes"] == 1
    S = zarr.open_array(str(out / "S"), mode="r")[...]
    ref = distsketch.sketch(prob.numpy("A"), 96, kind=kind, seed=4)
    assert rel(S, ref) <= 1e-12


@pytest.mark.parametrize("method", ["cholqr", "sketch_precondition", "sketch_solve"])
def test_lstsq_matches_numpy(prob, tmp_path, method):
    out = tmp_path / "x.zarr"
    meta = json.loads(mpirun("lstsq.py", f"{prob.path}/A", f"{prob.path}/b", "--out", out, "--method", method,
                             "--seed", 7).stdout)
    x = zarr.open_array(str(out / "x"), mode="r")[...]
    ref = distsketch.lstsq(prob.numpy("A"), prob.numpy("b"), method=method, seed=7)
    assert meta["method"] == method and meta["passes"] == ref.passes and meta["ranks"] == 2
    assert rel(x, ref.x) <= 1e-12
    if method != "sketch_solve":
        assert rel(x, prob.x) <= 1e-10  # and both are the true solution


def test_svd_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    m, n = 30_000, 40
    A = (np.linalg.qr(rng.standard_normal((m, n)))[0] * 0.6 ** np.arange(n)) @ np.linalg.qr(
        rng.standard_normal((n, n)))[0].T
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=A.shape, chunks=(4000, n), dtype="f8")
    z[...] = A
    meta = json.loads(mpirun("svd.py", tmp_path / "a.zarr", "--rank", 8, "--out", tmp_path / "svd.zarr",
                             "--seed", 3, "--method", "rsvd").stdout)
    g = zarr.open_group(str(tmp_path / "svd.zarr"), mode="r")
    ref = distsketch.svd(A, 8, method="rsvd", seed=3)
    assert meta["passes"] == ref.passes
    np.testing.assert_allclose(g["s"][...], ref.s, rtol=1e-12)
    U, Vt = g["U"][...], g["Vt"][...]
    # singular vectors agree up to sign
    signs = np.sign(np.sum(U * ref.U, axis=0))
    assert rel(U * signs, ref.U) <= 1e-10 and rel(Vt * signs[:, None], ref.Vt) <= 1e-10


@pytest.mark.parametrize("case", ["missing A", "b of the wrong length", "d too large"])
def test_bad_input_fails_fast_on_every_rank(prob, tmp_path, case):
    if case == "missing A":
        args = ("lstsq.py", tmp_path / "nope.zarr", f"{prob.path}/b", "--out", tmp_path / "x.zarr")
        msg = "no Zarr array at"
    elif case == "b of the wrong length":
        args = ("lstsq.py", f"{prob.path}/A", f"{prob.path}/x", "--out", tmp_path / "x.zarr")
        msg = "b must have m=40000 entries"
    else:
        args = ("sketch.py", f"{prob.path}/A", "--d", 50_000, "--kind", "srct", "--out", tmp_path / "s.zarr")
        msg = "d must be <= m"
    p = mpirun(*args, check=False, timeout=60)  # a rank left waiting would time out here
    assert p.returncode != 0
    assert msg in p.stderr and "[rank " in p.stderr
    assert not os.path.exists(tmp_path / "x.zarr") and not os.path.exists(tmp_path / "s.zarr")


def test_overwrite_replaces_only_distsketch_outputs(prob, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "paper.tex").write_text("keep me")
    p = mpirun("svd.py", f"{prob.path}/A", "--rank", 4, "--out", folder, "--overwrite", check=False, timeout=60)
    assert p.returncode != 0 and "not a Zarr group written by distsketch" in p.stderr
    assert os.listdir(folder) == ["paper.tex"]
    out = tmp_path / "s.zarr"
    mpirun("svd.py", f"{prob.path}/A", "--rank", 4, "--seed", 1, "--out", out)
    mpirun("svd.py", f"{prob.path}/A", "--rank", 4, "--seed", 1, "--out", out, "--overwrite")  # ours: replaced
    assert zarr.open_group(str(out), mode="r").attrs["distsketch"] == {"output": True}


def test_zoo_driver_matches_in_process_and_resumes(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from distsketch.spectral import analyze

    data = os.path.join(ROOT, "tests", "data", "ww")
    rng = np.random.default_rng(3)
    models = [os.path.join(data, "mixed.safetensors"), os.path.join(data, "traps.safetensors")]
    for i in range(3):
        p = tmp_path / f"m{i}.npz"
        np.savez(p, **{f"l{j}.weight": rng.standard_normal((120 + 10 * j, 60)) for j in range(3)})
        models.append(str(p))
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(open(models[0], "rb").read()[:5000])  # truncated
    models.append(str(bad))
    out = tmp_path / "zoo"
    p = mpirun("zoo.py", *models, "--out", out, "--randomize", "--seed", 5, check=False)
    assert p.returncode == 1, p.stderr  # one model recorded with an error
    meta = json.loads(p.stdout)
    assert meta == {**meta, "models": 6, "ok": 5, "errors": 1, "analysed_now": 6, "ranks": 2}
    from distsketch.spectral._zoo import model_key  # name + content fingerprint

    summ = pd.read_parquet(out / "summaries" / f"{model_key(str(bad))}.parquet")
    assert summ["status"].iloc[0] == "error" and "broken.safetensors" in summ["error"].iloc[0]
    assert summ["model"].iloc[0] == "broken"
    for m in models[:-1]:
        key = model_key(m)
        got = pd.read_parquet(out / "layers" / f"{key}.parquet")
        ref = analyze(m, randomize=True, seed=5)
        for c in ("alpha", "D", "log_norm", "stable_rank", "max_rand_eval", "rand_distance"):
            np.testing.assert_allclose(got[c], ref[c], rtol=1e-10, err_msg=f"{key}: {c}")
    mtimes = {f: os.path.getmtime(out / "layers" / f) for f in os.listdir(out / "layers")}
    p = mpirun("zoo.py", *models, "--out", out, "--randomize", "--seed", 5, check=False)
    again = json.loads(p.stdout)  # the failed model stays recorded (no --retry-failed): exit code 1 again
    assert p.returncode == 1 and again["analysed_now"] == 0 and again["ok"] == 5
    assert mtimes == {f: os.path.getmtime(out / "layers" / f) for f in os.listdir(out / "layers")}


def test_drivers_import_only_public_names():
    """drivers/ import distsketch's public modules and names only, without touching sys.path."""
    import ast

    for f in sorted(os.listdir(os.path.join(ROOT, "drivers"))):
        if not f.endswith(".py"):
            continue
        src = open(os.path.join(ROOT, "drivers", f)).read()
        assert "sys.path" not in src, f
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                assert node.level == 0, f"{f}: relative import"
                if mod.startswith("distsketch"):
                    assert not any(p.startswith("_") for p in mod.split(".")), f"{f}: from {mod}"
                    assert not any(a.name.startswith("_") for a in node.names), f"{f}: private name from {mod}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    assert not any(p.startswith("_") for p in a.name.split(".")), f"{f}: import {a.name}"
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "mpi":
                assert not node.attr.startswith("_"), f"{f}: mpi.{node.attr}"


def test_mpi_module_writes_results_on_comm_self(tmp_path, prob):
    """distsketch.mpi in-process on COMM_SELF: the row range is the whole matrix, a result group is
    published atomically (marked as ours, nothing staged left), output checks refuse foreign folders."""
    from mpi4py import MPI

    from distsketch import mpi
    from distsketch.errors import ParameterError

    comm = MPI.COMM_SELF
    data = mpi.open_rows(f"{prob.path}/A", comm)
    assert data.local_rows == (0, prob.shape[0])
    (SA,) = distsketch.passes.left_sketch(data, distsketch.make_operator("gaussian", 48, prob.shape[0], seed=1))
    ref = distsketch.sketch(prob.numpy("A"), 48, kind="gaussian", seed=1)
    assert rel(SA, ref) <= 1e-12
    out = tmp_path / "s.zarr"
    mpi.check_out(comm, str(out), False)
    mpi.write_result(comm, str(out), {"S": SA}, {"passes": data.passes})
    g = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(g["S"][...], SA)
    assert g.attrs["passes"] == 1 and g.attrs["distsketch"] == {"output": True}
    assert os.listdir(tmp_path) == ["s.zarr"]
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        mpi.check_out(comm, str(out), False)
    mpi.write_result(comm, str(out), {"S": 2 * SA}, {"passes": 2})  # ours: replaced
    np.testing.assert_array_equal(zarr.open_array(str(out / "S"), mode="r")[...], 2 * SA)
    (tmp_path / "notes").mkdir()
    with pytest.raises(ParameterError, match="not a Zarr group written by distsketch"):
        mpi.check_out(comm, str(tmp_path / "notes"), True)
    assert mpi.shared_seed(comm, 5) == 5
