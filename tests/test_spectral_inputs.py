"""Model sources and zoo outputs that must not give a wrong answer with status ok (issue 11 item 7):
folders of separate models, models keyed by content, hidden Parquet names, corrupt safetensors
offsets, complex and masked weights, output folders and --overwrite."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from distsketch.cli import _write_zarr_atomic, check_output_path  # noqa: E402
from distsketch.errors import InputTypeError, ParameterError  # noqa: E402
from distsketch.spectral import SourceError, analyze, analyze_zoo  # noqa: E402
from distsketch.spectral._sources import fingerprint  # noqa: E402


def write_safetensors(path, tensors, offsets=None):
    """A float32 safetensors file; ``offsets`` overrides the data_offsets of named tensors."""
    header, blobs, off = {}, [], 0
    for k, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(np.shape(a)), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    for k, o in (offsets or {}).items():
        header[k]["data_offsets"] = list(o)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def _model(seed, n=3):
    rng = np.random.default_rng(seed)
    return {f"l{i}.weight": rng.standard_normal((60 + 10 * i, 40)).astype(np.float32) for i in range(n)}


def test_folder_of_separate_models_is_refused(tmp_path):
    d = tmp_path / "zoo"
    d.mkdir()
    write_safetensors(d / "a.safetensors", _model(0))
    write_safetensors(d / "b.safetensors", _model(1))  # same tensor names: two models, not two shards
    with pytest.raises(SourceError, match="'l0.weight' is in both a.safetensors and b.safetensors"):
        analyze(str(d))
    # true shards (distinct names) are still one model
    s = tmp_path / "shards"
    s.mkdir()
    m = _model(2, 4)
    write_safetensors(s / "part1.safetensors", dict(list(m.items())[:2]))
    write_safetensors(s / "part2.safetensors", dict(list(m.items())[2:]))
    np.testing.assert_allclose(analyze(str(s))["alpha"], analyze(m)["alpha"], rtol=1e-12)


@pytest.mark.parametrize("offsets, match", [
    ({"l0.weight": (-9600, 0)}, "non-negative integers"),           # before the data section: header bytes
    ({"l1.weight": (9000, 9000 + 280 * 40)}, "overlap"),            # shares bytes with l0
    ({"l0.weight": (0, 100)}, r"9600 bytes\) takes bytes 0..100"),  # size does not match dtype x shape
    ({"l0.weight": (0.0, 9600.0)}, "non-negative integers"),
    ({"l2.weight": (10**6, 10**6 + 320 * 40)}, "truncated or corrupt"),
])
def test_safetensors_offsets_are_validated(tmp_path, offsets, match):
    m = {"l0.weight": np.ones((60, 40)), "l1.weight": np.ones((70, 40)), "l2.weight": np.ones((80, 40))}
    p = tmp_path / "bad.safetensors"
    write_safetensors(p, m, offsets)
    with pytest.raises(SourceError, match=match):
        analyze(str(p))


def test_complex_and_masked_weights():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((50, 30))
    with pytest.raises(InputTypeError, match="complex"):
        analyze({"c.weight": W + 1j * W})
    masked = np.ma.masked_array(W, mask=np.zeros_like(W, bool))
    masked.mask[0, 0] = True
    with pytest.raises(InputTypeError, match="masked array with 1 masked entries"):
        analyze({"m.weight": masked})
    # no entry masked: the data is the weight
    clean = np.ma.masked_array(W, mask=False)
    np.testing.assert_allclose(analyze({"m.weight": clean})["alpha"], analyze({"m.weight": W})["alpha"], rtol=1e-12)
    with pytest.raises(InputTypeError, match="dtype object"):
        analyze({"o.weight": np.array([[1, "a"] * 5] * 20, dtype=object)})


def test_zoo_keys_by_content_and_keeps_names(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    v1, v2 = tmp_path / "v1" / "bert.npz", tmp_path / "v2" / "bert.npz"
    np.savez(v1, **_model(4))
    np.savez(v2, **_model(5))
    u1, u2 = tmp_path / "модель.npz", tmp_path / "模型.npz"  # once both mapped to "__"
    np.savez(u1, **_model(6))
    np.savez(u2, **_model(7))
    hidden, dot = tmp_path / "_hidden.npz", tmp_path / ".dot.npz"  # pyarrow hides _x and .x files
    np.savez(hidden, **_model(8))
    np.savez(dot, **_model(9))
    out = tmp_path / "out"
    analyze_zoo([v1], out, progress=False)
    layers, summ = analyze_zoo([v1, v2, u1, u2, hidden, dot], out, progress=False)  # v2 too, not skipped
    assert sorted(summ["model"]) == sorted(["bert", "bert", "модель", "模型", "_hidden", ".dot"])
    assert (summ["status"] == "ok").all() and summ["model_key"].nunique() == 6
    for p in (v1, v2, u1):
        got = layers[layers["model_key"] == summ.set_index("source").loc[str(p), "model_key"]]
        np.testing.assert_allclose(got["alpha"].to_numpy(), analyze(str(p))["alpha"].to_numpy(), rtol=1e-12)
    assert len(pd.read_parquet(out / "layers")) == 6 * 3  # nothing hidden from Parquet readers
    assert not any(f.startswith(("_", ".")) for f in os.listdir(out / "layers"))
    # a changed file under the same name is analysed again; an unchanged one is not
    before = {f: os.stat(out / "summaries" / f).st_mtime_ns for f in os.listdir(out / "summaries")}
    np.savez(v2, **_model(10))
    _, summ2 = analyze_zoo([v1, v2], out, progress=False)
    after = set(os.listdir(out / "summaries"))
    assert len(after) == 7 and all(os.stat(out / "summaries" / f).st_mtime_ns == t for f, t in before.items())
    # the fingerprint is of content only: a copy elsewhere has the same
    copy = tmp_path / "copy.npz"
    copy.write_bytes(v1.read_bytes())
    assert fingerprint(copy) == fingerprint(v1) != fingerprint(v2)
    with pytest.raises(ParameterError, match="unique"):
        analyze_zoo([v1, tmp_path / "v1" / ".." / "v1" / "bert.npz"], out, progress=False)


def test_zoo_output_folder_is_checked_before_work(tmp_path):
    m = tmp_path / "m.npz"
    np.savez(m, **_model(11))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="is a file"):
        analyze_zoo([m], tmp_path / "file", progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ParameterError, match="did not write"):
        analyze_zoo([m], foreign, progress=False)
    with pytest.raises(ParameterError, match="also a model source"):
        analyze_zoo([tmp_path / "mine"], tmp_path / "mine", progress=False)
    assert os.listdir(foreign) == ["notes.txt"]
    _, summ = analyze_zoo([m], tmp_path / "ok", progress=False)
    assert (tmp_path / "ok" / "distsketch-zoo.json").exists() and summ["status"].tolist() == ["ok"]


def test_output_paths_checked_and_only_our_outputs_replaced(tmp_path):
    import zarr

    ours = str(tmp_path / "x.zarr")
    _write_zarr_atomic(ours, {"x": np.arange(3.0)}, {"passes": 1})
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output_path(ours, False)
    check_output_path(ours, True)  # ours: may be replaced
    _write_zarr_atomic(ours, {"x": np.arange(4.0)}, {"passes": 2})
    np.testing.assert_array_equal(zarr.open_array(ours + "/x", mode="r")[...], np.arange(4.0))
    store = tmp_path / "p.zarr"
    zarr.open_group(str(store), mode="w").create_array("A", shape=(4, 2), dtype="f8")[...] = 1.0  # every chunk stored
    with pytest.raises(ParameterError, match="overlaps the input"):
        check_output_path(str(store), True, (str(store / "A"),))
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "paper.tex").write_text("x")
    with pytest.raises(ParameterError, match="not a Zarr group written by distsketch"):
        check_output_path(str(folder), True)
    with pytest.raises(ParameterError, match="not a Zarr group written by distsketch"):
        check_output_path(str(store), True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ParameterError, match="not a writable folder"):
        check_output_path(str(tmp_path / "f" / "out.zarr"), False)
    # the command line refuses before any cluster starts; the input store is untouched
    r = subprocess.run([sys.executable, "-m", "distsketch.cli", "svd", str(store / "A"), "--rank", "1", "--out",
                        str(store), "--overwrite", "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "overlaps the input" in r.stderr
    assert zarr.open_array(str(store / "A"), mode="r").shape == (4, 2)
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
