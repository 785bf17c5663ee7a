"""The command line: generate a problem, sketch it on an embedded LocalCluster, check the output."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from distsketch.operators import make_operator

CLI = [sys.executable, "-m", "distsketch.cli"]


def run(*args, check=True):
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(p.stderr)
    return p


@pytest.mark.cluster
def test_generate_then_sketch(tmp_path):
    out = run("generate", str(tmp_path / "p.zarr"), "--m", "20000", "--n", "16", "--cond", "1e3",
              "--chunks", "3000", "--seed", "4", "--quiet")
    info = json.loads(out.stdout)
    assert info["shape"] == [20000, 16] and info["cond"] == pytest.approx(1e3)
    res = run("sketch", str(tmp_path / "p.zarr/A"), "--d", "64", "--kind", "srct", "--seed", "9",
              "--out", str(tmp_path / "s.zarr"), "--workers", "2", "--quiet")
    meta = json.loads(res.stdout)
    assert meta["passes"] == 1 and meta["operator"]["kind"] == "srct"
    S = zarr.open_array(str(tmp_path / "s.zarr/S"), mode="r")[...]
    A = zarr.open_array(str(tmp_path / "p.zarr/A"), mode="r")[...]
    op = make_operator("srct", 64, 20000, seed=9)
    np.testing.assert_allclose(S, op.toarray() @ A, rtol=1e-12, atol=1e-12 * np.abs(S).max())
    assert sorted(os.listdir(tmp_path)) == ["p.zarr", "s.zarr"]  # no temporary left beside the output


def test_cli_errors_are_clear(tmp_path):
    p = run("sketch", str(tmp_path / "none.zarr"), "--d", "4", "--out", str(tmp_path / "o.zarr"), check=False)
    assert p.returncode == 2 and "no Zarr array at" in p.stderr
    run("generate", str(tmp_path / "q.zarr"), "--m", "100", "--n", "4", "--quiet")
    p = run("generate", str(tmp_path / "q.zarr"), "--m", "100", "--n", "4", "--quiet", check=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    p = run("generate", str(tmp_path / "r.zarr"), "--m", "100", "--n", "4", "--rank", "9", "--quiet", check=False)
    assert p.returncode == 2 and "rank must be between 1 and n=4" in p.stderr


@pytest.mark.cluster
def test_lstsq_command(tmp_path):
    import scipy.linalg

    run("generate", str(tmp_path / "p.zarr"), "--m", "30000", "--n", "12", "--cond", "1e5",
        "--frac-in-range", "0.9", "--chunks", "4000", "--seed", "2", "--quiet")
    out = run("lstsq", str(tmp_path / "p.zarr/A"), str(tmp_path / "p.zarr/b"), "--out", str(tmp_path / "x.zarr"),
              "--workers", "2", "--seed", "1", "--quiet")
    meta = json.loads(out.stdout)
    assert meta["method"] in ("normal_cholqr", "cholqr") and meta["passes"] <= 4 and meta["istop"] in (1, 2, 5)
    x = zarr.open_array(str(tmp_path / "x.zarr/x"), mode="r")[...]
    A = zarr.open_array(str(tmp_path / "p.zarr/A"), mode="r")[...]
    b = zarr.open_array(str(tmp_path / "p.zarr/b"), mode="r")[...]
    xg = scipy.linalg.lstsq(A, b, lapack_driver="gelsd")[0]
    assert np.linalg.norm(x - xg) <= 1e-8 * np.linalg.norm(xg)
    assert zarr.open_group(str(tmp_path / "x.zarr"), mode="r").attrs["passes"] == meta["passes"]
    p = run("lstsq", str(tmp_path / "p.zarr/A"), str(tmp_path / "p.zarr/b"), "--out", str(tmp_path / "x.zarr"),
            "--quiet", check=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    p = run("lstsq", str(tmp_path / "p.zarr/A"), str(tmp_path / "p.zarr/x"), "--out", str(tmp_path / "y.zarr"),
            "--quiet", check=False)
    assert p.returncode == 2 and "b must have m=30000 entries" in p.stderr


@pytest.mark.cluster
def test_svd_command(tmp_path):
    import scipy.linalg

    run("generate", str(tmp_path / "p.zarr"), "--m", "20000", "--n", "60", "--decay", "poly", "--power", "1",
        "--chunks", "3000", "--seed", "2", "--quiet")
    out = run("svd", str(tmp_path / "p.zarr/A"), "--rank", "10", "--out", str(tmp_path / "s.zarr"),
              "--workers", "2", "--seed", "1", "--quiet")
    meta = json.loads(out.stdout)
    assert meta["rank"] == 10 and meta["passes"] >= 1
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    U, s, Vt = g["U"][...], g["s"][...], g["Vt"][...]
    A = zarr.open_array(str(tmp_path / "p.zarr/A"), mode="r")[...]
    sref = scipy.linalg.svd(A, compute_uv=False)
    assert np.linalg.norm(A - (U * s) @ Vt) <= 1.1 * np.sqrt(np.sum(sref[10:] ** 2))
    p = run("svd", str(tmp_path / "p.zarr/A"), "--out", str(tmp_path / "t.zarr"), "--quiet", check=False)
    assert p.returncode == 2 and "exactly one of --rank and --tol" in p.stderr


@pytest.mark.cluster
def test_results_on_stdout_progress_on_stderr(tmp_path):
    """`distsketch lstsq A.zarr b.zarr --out x.zarr > out.json` (and sketch, svd) with progress bars on:
    the file holds exactly one valid JSON document, the bars went to stderr (main printed dask's bars
    into the JSON), and the results match LAPACK."""
    import scipy.linalg

    run("generate", str(tmp_path / "p.zarr"), "--m", "6000", "--n", "8", "--chunks", "1500", "--seed", "1",
        "--quiet")
    A = zarr.open_array(str(tmp_path / "p.zarr/A"), mode="r")[...]
    b = zarr.open_array(str(tmp_path / "p.zarr/b"), mode="r")[...]
    commands = {
        "lstsq": ["lstsq", f"{tmp_path}/p.zarr/A", f"{tmp_path}/p.zarr/b", "--out", f"{tmp_path}/x.zarr"],
        "sketch": ["sketch", f"{tmp_path}/p.zarr/A", "--d", "40", "--out", f"{tmp_path}/s.zarr"],
        "svd": ["svd", f"{tmp_path}/p.zarr/A", "--rank", "3", "--out", f"{tmp_path}/u.zarr"],
    }
    for name, args in commands.items():
        out = tmp_path / f"{name}.json"
        with open(out, "w") as f:  # the shell's `> out.json`
            p = subprocess.run([*CLI, *args, "--workers", "1", "--seed", "3"], stdout=f, stderr=subprocess.PIPE,
                               text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        meta = json.loads(out.read_text())  # one valid JSON document, nothing else
        assert meta["out"].endswith(".zarr"), name
        assert "% Completed" in p.stderr, f"{name}: no progress bar on stderr"
    x = zarr.open_array(str(tmp_path / "x.zarr/x"), mode="r")[...]
    ref = scipy.linalg.lstsq(A, b)[0]
    assert np.linalg.norm(x - ref) <= 1e-10 * np.linalg.norm(ref)
    s = zarr.open_array(str(tmp_path / "u.zarr/s"), mode="r")[...]
    np.testing.assert_allclose(s, scipy.linalg.svd(A, compute_uv=False)[:3], rtol=1e-8)


def test_every_option_has_help():
    import argparse

    from distsketch.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{cmd} {act.option_strings or act.dest}" for cmd, sp in sub.choices.items() for act in sp._actions
               if not isinstance(act, argparse._HelpAction) and not act.help]
    assert missing == []


def test_lstsq_method_choices_are_the_solvers_methods():
    """`distsketch lstsq --method` and the MPI driver offer exactly what distsketch.lstsq accepts (one tuple)."""
    import argparse

    import distsketch
    from distsketch.cli import build_parser
    from distsketch.solve import METHODS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    act = next(a for a in sub.choices["lstsq"]._actions if "--method" in a.option_strings)
    assert tuple(act.choices) == METHODS and "normal_cholqr" in METHODS
    args = build_parser().parse_args(["lstsq", "A.zarr", "b.zarr", "--out", "x.zarr", "--method", "normal_cholqr",
                                      "--kind", "gaussian", "--d", "50"])
    assert (args.method, args.kind, args.d) == ("normal_cholqr", "gaussian", 50)  # the sketch named as for sketch
    # every listed method is one lstsq runs (and an unlisted one is refused by both)
    rng = np.random.default_rng(0)
    A, b = rng.standard_normal((400, 5)), rng.standard_normal(400)
    ref = np.linalg.lstsq(A, b, rcond=None)[0]
    rmin = np.linalg.norm(A @ ref - b)
    for meth in METHODS:
        res = distsketch.lstsq(A, b, method=meth, seed=1)
        if meth == "sketch_solve":  # its documented bound on the residual
            assert np.linalg.norm(A @ res.x - b) <= (1 + res.eps_sketch) / (1 - res.eps_sketch) * rmin
        else:
            assert np.linalg.norm(res.x - ref) <= 1e-10 * np.linalg.norm(ref)
    with pytest.raises(ValueError, match="unknown method 'qr'"):
        distsketch.lstsq(A, b, method="qr")
    p = run("lstsq", "A.zarr", "b.zarr", "--out", "x.zarr", "--method", "qr", check=False)
    assert p.returncode == 2 and "invalid choice: 'qr'" in p.stderr


@pytest.mark.cluster
def test_demo_prints_its_report_alone_on_stdout(tmp_path):
    """`distsketch demo > report.json`: the log line and the bars go to stderr, the report to stdout."""
    out = tmp_path / "demo.json"
    with open(out, "w") as f:
        p = subprocess.run([*CLI, "demo", "--m", "20000", "--n", "10", "--workers", "1", "--workdir", str(tmp_path)],
                           stdout=f, stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    report = json.loads(out.read_text())
    # the stopping test (atol = 1e-12) bounds the forward error by about cond(A) x atol
    assert report["shape"] == [20000, 10] and report["forward_error"] <= 1e-12 * report["cond_A"]
    assert "[demo] A is 20,000 x 10" in p.stderr
