"""Every code block of README.md runs, in README order, in one temporary folder (a reader following along).

* ``python`` blocks are executed as written (each creates the small files it reads).
* ``bash`` blocks run line by line in ``bash`` with this tree first on ``PYTHONPATH`` and the running
  interpreter's folder first on ``PATH`` (``python``, ``distsketch``, ``mpiexec`` of this environment);
  ``drivers/`` is linked into the folder. Three kinds of line are not run, and are checked instead:
  ``pip install`` (no network, and it would change the environment under test): the path is this
  project and every extra it names is declared in pyproject.toml; ``pytest`` (this suite itself): its
  test folder exists; ``distsketch demo`` runs with a small ``--m 20000 --n 20 --workers 1`` appended
  (the documented default writes 800 MB). Lines with ``mpiexec`` are skipped where it is not installed.
* ``text`` blocks are synopses: every ``distsketch`` subcommand and ``--option`` in them must exist.

A block that needs the files of an earlier one says so in a comment (the zoo command line uses the
toy zoo of the Python block above it).
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _blocks():
    text = README.read_text()
    return [(m.group(1), m.group(2), text[:m.start()].count("\n") + 1) for m in FENCE.finditer(text)]


BLOCKS = _blocks()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    (d / "drivers").symlink_to(ROOT / "drivers")
    return d


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _check_pip(cmd):
    words = shlex.split(cmd)
    i = words.index("-e")
    spec = words[i + 1]
    path, _, extras = spec.partition("[")
    assert (ROOT / path / "pyproject.toml").exists(), cmd
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in filter(None, extras.rstrip("]").split(",")):
        assert extra in declared, f"README installs extra {extra!r}, which pyproject.toml does not declare"


def _commands(block):
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            yield from (c.strip() for c in line.split("&&"))


def test_readme_has_no_unfenced_code():
    """Indented code blocks would escape this test: every code block is fenced."""
    lines, fenced = README.read_text().splitlines(), False
    for i, line in enumerate(lines):
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("    ") and i and not lines[i - 1].strip():
            raise AssertionError(f"README.md:{i + 1}: an indented code block; fence it")
    assert {lang for lang, _, _ in BLOCKS} <= {"python", "bash", "text"}


@pytest.mark.parametrize("lang, code, line", BLOCKS, ids=[f"{lang}-line{line}" for lang, _, line in BLOCKS])
def test_block_runs(lang, code, line, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    if lang == "python":
        # a fresh interpreter, as a reader's: no Dask client or state left by other tests
        proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=_env(), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"README.md:{line} failed:\n{proc.stderr[-4000:]}"
    elif lang == "bash":
        ran = 0
        for cmd in _commands(code):
            if cmd.startswith("python3 -m pip install"):
                _check_pip(cmd)
                continue
            if cmd.startswith("python3 -m pytest"):
                assert (ROOT / shlex.split(cmd)[-1]).is_dir(), cmd
                continue
            if cmd.startswith("mpiexec") and (shutil.which("mpiexec", path=_env()["PATH"]) is None
                                              or pytest.importorskip("mpi4py") is None):
                pytest.skip("mpiexec is not installed")
            if cmd.startswith("distsketch demo"):
                cmd += " --m 20000 --n 20 --workers 1"
            proc = subprocess.run(["bash", "-c", cmd], cwd=workdir, env=_env(), capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 0, f"README.md:{line}: {cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            ran += 1
        assert ran or "pip install" in code
    else:
        from distsketch.cli import build_parser

        parser = build_parser()
        sub = next(a for a in parser._actions if a.choices and "lstsq" in a.choices).choices
        for syn in code.splitlines():
            words = syn.split()
            assert words[0] == "distsketch" and words[1] in sub, syn
            known = {o for a in sub[words[1]]._actions for o in a.option_strings}
            for opt in re.findall(r"--[\w-]+", syn):
                assert opt in known, f"README.md:{line}: `distsketch {words[1]}` has no option {opt}"


def test_import_distsketch_gives_the_readme_modules():
    """The README uses distsketch.problems and distsketch.slurm after `import distsketch` alone."""
    code = "import distsketch; distsketch.problems.generate_problem; distsketch.slurm.slurm_cluster"
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), timeout=120)
