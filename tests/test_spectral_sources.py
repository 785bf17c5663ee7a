"""distsketch.spectral._sources: bf16 safetensors, folders of shards, and their failures."""

import json
import struct

import numpy as np
import pytest
import scipy.linalg as sla

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from distsketch.errors import ParameterError  # noqa: E402
from distsketch.spectral import SourceError, analyze  # noqa: E402


def _write_bf16_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k, a in tensors.items():
        bits = (np.asarray(a, np.float32).view(np.uint32) >> 16).astype("<u2")
        header[k] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + bits.nbytes]}
        blobs.append(bits.tobytes())
        off += bits.nbytes
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_sources_bf16_folder_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((64, 32)).astype(np.float32)
    Wb = ((W.view(np.uint32) >> 16) << 16).view(np.float32)  # W rounded down to bf16
    d = tmp_path / "sharded"
    d.mkdir()
    _write_bf16_safetensors(d / "model-00001-of-00002.safetensors", {"a.weight": W})
    _write_bf16_safetensors(d / "model-00002-of-00002.safetensors", {"b.weight": W.T.copy()})
    df = analyze(d)
    ref = np.sort(sla.svd(Wb.astype(np.float64), compute_uv=False)) ** 2
    np.testing.assert_allclose(df["lambda_max"], [ref[-1]] * 2, rtol=1e-12)
    np.testing.assert_allclose(df["log_norm"], [np.log10(ref.sum())] * 2, rtol=1e-12)
    # truncated, corrupt, missing, wrong kind
    good = (d / "model-00001-of-00002.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[:-100])
    with pytest.raises(SourceError, match="truncated"):
        analyze(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(SourceError, match="corrupt"):
        analyze(tmp_path / "junk.safetensors")
    with pytest.raises(SourceError, match="no such file"):
        analyze(tmp_path / "absent.safetensors")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(SourceError, match="unknown model format"):
        analyze(tmp_path / "w.txt")
    with pytest.raises(TypeError, match="source must be"):
        analyze(42)
    bad = W.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ParameterError, match="non-finite"):
        analyze({"a.weight": bad})
    with pytest.raises(ParameterError, match="fix_fingers"):
        analyze({"a.weight": W}, fix_fingers="xmin_peak")
    with pytest.raises(ParameterError, match="layers"):
        analyze({"a.weight": W}, layers=[1, -2])
