"""distsketch.spectral._zoo: failures recorded, runs resumed (also after SIGKILL), a LocalCluster and the CLI."""

import json
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from distsketch.errors import ParameterError  # noqa: E402
from distsketch.spectral import analyze, analyze_zoo  # noqa: E402


def _zoo_models(folder, n):
    """n small models as safetensors files, written with our own writer (float32)."""
    rng = np.random.default_rng(5)
    paths = []
    for i in range(n):
        ten = {f"l{j}.weight": (rng.standard_t(3, (90 + 10 * i, 40)) / 7).astype(np.float32) for j in range(3)}
        header, blobs, off = {}, [], 0
        for k, a in ten.items():
            header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
            blobs.append(a.tobytes())
            off += a.nbytes
        h = json.dumps(header).encode()
        p = folder / f"m{i:02d}.safetensors"
        p.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
        paths.append(p)
    return paths


def test_zoo_records_failures_and_resumes(tmp_path):
    src = tmp_path / "models"
    src.mkdir()
    paths = _zoo_models(src, 4)
    cut = src / "cut.safetensors"
    cut.write_bytes(paths[0].read_bytes()[:5000])
    nan_model = src / "nan.npz"
    W = np.ones((50, 30), np.float32)
    W[0, 0] = np.nan
    np.savez(nan_model, **{"a.weight": W})
    only_norm = src / "norms.npz"
    np.savez(only_norm, **{"ln.weight": np.ones(64, np.float32), "conv.weight": np.ones((4, 4, 3), np.float32)})
    out = tmp_path / "out"
    sources = [paths[0], paths[1], cut, nan_model, only_norm]
    layers, summ = analyze_zoo(sources, out, progress=False)
    st = summ.set_index("model")
    assert list(st.loc[["m00", "m01"], "status"]) == ["ok", "ok"]
    assert "truncated" in st.loc["cut", "error"]
    assert "non-finite" in st.loc["nan", "error"]
    assert "no layer" in st.loc["norms", "error"] and "not analysed" in st.loc["norms", "error"]
    # each finished model equals analyze() on it alone
    one = analyze(paths[1])
    np.testing.assert_allclose(layers[layers.model == "m01"]["alpha"], one["alpha"], rtol=1e-12)
    mtimes = {f: os.stat(out / "summaries" / f).st_mtime_ns for f in os.listdir(out / "summaries")}
    (out / "layers" / "_deadbeef.tmp").write_bytes(b"half a file")  # what a killed writer leaves
    layers2, summ2 = analyze_zoo(paths, out, progress=False)   # the rerun: only m02, m03 are new
    for f, t in mtimes.items():
        assert os.stat(out / "summaries" / f).st_mtime_ns == t, f"{f} was recomputed"
    assert sorted(summ2.model) == ["cut", "m00", "m01", "m02", "m03", "nan", "norms"]
    assert len(layers2) == 4 * 3
    with pytest.raises(ParameterError, match="unique"):
        analyze_zoo([paths[0], paths[0]], out, progress=False)


def test_zoo_interrupted_process_resumes(tmp_path):
    """Kill a zoo run part-way (SIGKILL), rerun: finished models are kept as they are, the
    rest are done, and the union equals an uninterrupted run."""
    src = tmp_path / "models"
    src.mkdir()
    paths = _zoo_models(src, 8)
    out = tmp_path / "out"
    code = ("import sys, time; from distsketch.spectral import _zoo, analyze_zoo\n"
            "orig = _zoo.run_model\n"
            "def slow(*a, **k):\n    r = orig(*a, **k); time.sleep(0.4); return r\n"
            "_zoo.run_model = slow\n"
            f"analyze_zoo({[str(p) for p in paths]!r}, {str(out)!r}, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [f for f in os.listdir(out / "summaries")] if (out / "summaries").exists() else []
        if len([f for f in done if f.endswith(".parquet")]) >= 3:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    first = {f: os.stat(out / "summaries" / f).st_mtime_ns for f in os.listdir(out / "summaries")
             if f.endswith(".parquet")}
    assert 3 <= len(first) < 8
    layers, summ = analyze_zoo(paths, out, progress=False)
    for f, t in first.items():
        assert os.stat(out / "summaries" / f).st_mtime_ns == t
    fresh_layers, _ = analyze_zoo(paths, tmp_path / "fresh", progress=False)
    cols = ["model", "layer_id", "alpha", "log_norm", "entropy"]
    pd.testing.assert_frame_equal(layers[cols].sort_values(["model", "layer_id"]).reset_index(drop=True),
                                  fresh_layers[cols].sort_values(["model", "layer_id"]).reset_index(drop=True))


@pytest.mark.cluster
def test_zoo_on_local_cluster_and_cli(tmp_path):
    from distributed import Client, LocalCluster

    src = tmp_path / "models"
    src.mkdir()
    paths = _zoo_models(src, 4)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cl, Client(cl) as client:
        layers, summ = analyze_zoo(paths, tmp_path / "out", client=client, progress=False, mp_fit=True)
    assert (summ.status == "ok").all() and len(layers) == 12
    ref = analyze(paths[2], mp_fit=True)
    np.testing.assert_allclose(layers[layers.model == "m02"]["sigma_mp"], ref["sigma_mp"], rtol=1e-12)
    r = subprocess.run([sys.executable, "-m", "distsketch.cli", "zoo", *map(str, paths), "--out", str(tmp_path / "cli"),
                        "--workers", "1", "--plots", "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["ok"] == 4 and info["layers"] == 12
    assert (tmp_path / "cli" / "plots" / "m00.alpha.png").stat().st_size > 1000
    r = subprocess.run([sys.executable, "-m", "distsketch.cli", "zoo", str(tmp_path / "nope.safetensors"), "--out",
                        str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such model file" in r.stderr
