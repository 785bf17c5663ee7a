"""distsketch._atomic, the one writer: content, no temporary files left on success or after a
failure, the old output kept when writing fails; and the writers that use it."""

import json
import os

import numpy as np
import pytest

from distsketch import _atomic


def listing(folder):
    return sorted(os.listdir(folder))


def test_write_json_and_bytes(tmp_path):
    p = tmp_path / "sub" / "r.json"  # the folder is created
    _atomic.write_json(p, {"a": [1, 2.5], "b": np.float64(3.0)}, default=float)
    assert json.loads(p.read_text()) == {"a": [1, 2.5], "b": 3.0}
    _atomic.write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01" and listing(p.parent) == ["r.json"]


def test_failed_file_write_keeps_old_content_and_leaves_nothing(tmp_path):
    p = tmp_path / "r.json"
    _atomic.write_json(p, {"v": 1})
    with pytest.raises(TypeError, match="not JSON serializable"):
        _atomic.write_json(p, {"v": object()})  # fails before the file is touched
    with pytest.raises(RuntimeError, match="disk full"):
        with _atomic.atomic_file(p, "w") as f:
            f.write('{"v": 2, "trunc')
            raise RuntimeError("disk full")  # a failure half-way through the write
    assert json.loads(p.read_text()) == {"v": 1} and listing(tmp_path) == ["r.json"]


def test_atomic_path_for_named_writers(tmp_path):
    p = tmp_path / "t.parquet"
    with _atomic.atomic_path(p) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and not tmp.endswith(".parquet")
        open(tmp, "w").write("new")
    assert p.read_text() == "new"
    with pytest.raises(OSError):
        with _atomic.atomic_path(p, suffix=".png") as tmp:
            assert tmp.endswith(".png")
            open(tmp, "w").write("half")
            raise OSError("writer failed")
    assert p.read_text() == "new" and listing(tmp_path) == ["t.parquet"]


def test_folder_publish_replaces_old_and_cleans_up(tmp_path):
    out = tmp_path / "o.zarr"
    with _atomic.atomic_folder(out) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "a"), "w").write("1")
    assert listing(out) == ["a"]
    with _atomic.atomic_folder(out) as tmp:  # replaces: the old folder's files are gone
        os.makedirs(os.path.join(tmp, "sub"))
        open(os.path.join(tmp, "sub", "b"), "w").write("2")
    assert listing(out) == ["sub"] and (out / "sub" / "b").read_text() == "2"
    assert listing(tmp_path) == ["o.zarr"]  # neither the temporary nor the old folder is left


def test_folder_failure_keeps_old_output(tmp_path):
    out = tmp_path / "o.zarr"
    with _atomic.atomic_folder(out) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "a"), "w").write("old")
    with pytest.raises(ValueError, match="failed half-way"):
        with _atomic.atomic_folder(out) as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "a"), "w").write("new, half")
            raise ValueError("failed half-way")
    assert (out / "a").read_text() == "old" and listing(tmp_path) == ["o.zarr"]


def test_folder_rename_failure_restores_old(tmp_path, monkeypatch):
    """The second rename (new folder in) fails: the old output is renamed back, nothing else is left."""
    out = tmp_path / "o.zarr"
    with _atomic.atomic_folder(out) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "a"), "w").write("old")
    real = os.rename

    def rename(src, dst):
        if ".tmp-" in os.path.basename(src):
            raise OSError("injected: rename of the new folder failed")
        return real(src, dst)

    monkeypatch.setattr(_atomic.os, "rename", rename)
    with pytest.raises(OSError, match="injected"):
        with _atomic.atomic_folder(out) as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "a"), "w").write("new")
    monkeypatch.undo()
    assert (out / "a").read_text() == "old" and listing(tmp_path) == ["o.zarr"]


def test_refused_replacement_keeps_result(tmp_path):
    """may_replace says no (e.g. a foreign folder appeared during the run): FileExistsError, the
    foreign folder untouched, the new result left where the message says."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "paper.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"may not be replaced; the new result is left in") as info:
        with _atomic.atomic_folder(out, may_replace=lambda p: False) as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "x"), "w").write("result")
    assert listing(out) == ["paper.tex"]
    kept = str(info.value).rsplit("left in ", 1)[1].strip("'")
    assert open(os.path.join(kept, "x")).read() == "result"


def test_zarr_output_writer(tmp_path):
    """The command line's Zarr writer: values read back equal, marker set, a failed write keeps the old group."""
    zarr = pytest.importorskip("zarr")
    from distsketch._outputs import MARKER, is_our_output, write_zarr_group

    out = str(tmp_path / "x.zarr")
    write_zarr_group(out, {"x": np.arange(5.0), "k": np.arange(6, dtype=np.int64).reshape(2, 3)}, {"passes": 2})
    g = zarr.open_group(out, mode="r")
    np.testing.assert_array_equal(g["x"][...], np.arange(5.0))
    np.testing.assert_array_equal(g["k"][...], np.arange(6).reshape(2, 3))
    assert g.attrs["passes"] == 2 and g.attrs[MARKER] == {"output": True} and is_our_output(out)

    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("cannot convert")

    with pytest.raises(RuntimeError, match="cannot convert"):
        write_zarr_group(out, {"x": np.zeros(2), "y": Boom()}, {"passes": 3})
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["x"][...], np.arange(5.0))
    assert listing(tmp_path) == ["x.zarr"]


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    """A checkpoint whose save fails keeps the previous checkpoint and leaves no temporary file."""
    from distsketch.solve._checkpoint import Checkpoint

    ck = Checkpoint(str(tmp_path / "ck.npz"), {"method": "x", "seed": 1})
    ck.save(it=np.array(1))
    before = (tmp_path / "ck.npz").read_bytes()

    def savez(f, **arrays):
        f.write(b"PK partial")
        raise OSError("injected: disk full")

    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(OSError, match="disk full"):
        ck.save(it=np.array(2))
    assert (tmp_path / "ck.npz").read_bytes() == before and listing(tmp_path) == ["ck.npz"]


def test_one_writer_in_the_package():
    """Only _atomic.py renames files into place or fsyncs: every other module goes through it."""
    import distsketch

    pkg = os.path.dirname(distsketch.__file__)
    users = []
    for folder, _, files in os.walk(pkg):
        for f in files:
            if f.endswith(".py") and f != "_atomic.py":
                src = open(os.path.join(folder, f)).read()
                users += [f"{f}: {w}" for w in ("os.replace(", "os.rename(", "fsync(", "mkstemp(") if w in src]
    assert users == []


def test_bad_mode_and_foreign_output_refused(tmp_path):
    zarr = pytest.importorskip("zarr")
    from distsketch._outputs import publish_output
    from distsketch.errors import ParameterError

    with pytest.raises(ParameterError, match=r"mode must write \('w' or 'wb'\); got 'a'"):
        with _atomic.atomic_file(tmp_path / "f", "a"):
            pass
    foreign = tmp_path / "out"
    foreign.mkdir()
    (foreign / "paper.tex").write_text("keep me")
    tmp = _atomic.temporary_name(str(foreign))
    zarr.open_group(tmp, mode="w").attrs["passes"] = 1
    with pytest.raises(FileExistsError, match=r"appeared during the run and is not a distsketch output; "
                                              r"the result is left in"):
        publish_output(tmp, str(foreign))
    assert listing(foreign) == ["paper.tex"] and zarr.open_group(tmp, mode="r").attrs["passes"] == 1
