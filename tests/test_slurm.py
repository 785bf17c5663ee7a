"""The slurm/ templates and the SLURMCluster helper against a real single-node Slurm
(../shared/slurm-local/start.sh): each template is submitted, runs, and its output is checked
against the numpy path; an MPI solve killed mid-way is resubmitted and resumes from its checkpoint."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

import distsketch
from distsketch.problems import generate_problem

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM_LOCAL = os.path.join(ROOT, "..", "shared", "slurm-local")


@pytest.fixture(scope="module")
def slurm_env():
    start = os.path.join(SLURM_LOCAL, "start.sh")
    if not os.path.exists(start):
        pytest.skip("../shared/slurm-local is not beside this checkout")
    stop = os.path.join(SLURM_LOCAL, "stop.sh")
    # start.sh sizes the node with `nproc`, which obeys OMP_NUM_THREADS (dask sets it to 1 in this
    # process once a LocalCluster has run): hide the OMP_* variables so the node gets every core
    env0 = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    subprocess.run(["bash", stop], capture_output=True, timeout=60, env=env0)  # a clean start
    p = subprocess.run(["bash", start], capture_output=True, text=True, timeout=600, env=env0)
    assert p.returncode == 0, p.stderr[-2000:]
    conf = os.path.join(os.environ.get("TMPDIR", "/tmp"), "distsketch-slurm", "slurm.conf")
    env = {**os.environ, "SLURM_CONF": conf, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, env=env).stdout.strip()
    assert cpus and int(cpus) >= 2, f"the local Slurm node has {cpus} CPU(s); the templates ask for 2 tasks"
    yield env
    subprocess.run(["bash", stop], capture_output=True, timeout=60, env=env0)


def submit(env, script, cwd, *, export, options=()):
    exp = ",".join(["ALL"] + [f"{k}={v}" for k, v in export.items()])
    p = subprocess.run(["sbatch", "--parsable", f"--chdir={cwd}", f"--export={exp}", *options,
                        os.path.join(ROOT, "slurm", script)], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().split(";")[0]


def wait(env, job, timeout=240):
    t = time.time()
    while time.time() - t < timeout:
        q = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=env)
        if not q.stdout.strip():
            break
        if "PartitionConfig" in subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], capture_output=True,
                                               text=True, env=env).stdout:
            subprocess.run(["scancel", job], env=env)
            raise AssertionError(f"job {job} can never start on this partition (squeue reason PartitionConfig)")
        time.sleep(0.3)
    else:
        subprocess.run(["scancel", job], env=env)
        raise AssertionError(f"job {job} did not finish in {timeout} s")
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=env).stdout
    state = info.split("JobState=")[1].split()[0] if "JobState=" in info else "UNKNOWN"
    return state


def output(cwd, pattern_prefix, job):
    path = os.path.join(cwd, f"{pattern_prefix}-{job}.out")
    return open(path).read() if os.path.exists(path) else ""


@pytest.fixture(scope="module")
def prob(tmp_path_factory):
    path = tmp_path_factory.mktemp("slurm") / "p.zarr"
    return generate_problem(path, 60_000, 20, cond=10, frac_in_range=0.9, chunks=5000, seed=2)


def common(prob, tmp_path, **kw):
    return {"A": f"{prob.path}/A", "B": f"{prob.path}/b", "PYTHON": sys.executable, "DISTSKETCH": ROOT, **kw}


def test_lstsq_template(slurm_env, prob, tmp_path):
    out = tmp_path / "x.zarr"
    job = submit(slurm_env, "lstsq.sbatch", tmp_path, export=common(prob, tmp_path, OUT=out, METHOD="cholqr", SEED=3))
    state = wait(slurm_env, job)
    log = output(tmp_path, "distsketch-lstsq", job)
    assert state == "COMPLETED", log
    x = zarr.open_array(str(out / "x"), mode="r")[...]
    ref = distsketch.lstsq(prob.numpy("A"), prob.numpy("b"), method="cholqr", seed=3)
    assert np.linalg.norm(x - ref.x) <= 1e-12 * np.linalg.norm(ref.x)
    assert zarr.open_group(str(out), mode="r").attrs["ranks"] == 2


def test_svd_template(slurm_env, prob, tmp_path):
    out = tmp_path / "svd.zarr"
    job = submit(slurm_env, "svd.sbatch", tmp_path, export=common(prob, tmp_path, OUT=out, RANK=5, METHOD="rsvd",
                                                                  SEED=1))
    state = wait(slurm_env, job)
    assert state == "COMPLETED", output(tmp_path, "distsketch-svd", job)
    s = zarr.open_array(str(out / "s"), mode="r")[...]
    np.testing.assert_allclose(s, distsketch.svd(prob.numpy("A"), 5, method="rsvd", seed=1).s, rtol=1e-12)
    np.testing.assert_allclose(s, prob.s[:5], rtol=1e-4)  # randomized: close to the exact values


def test_dask_cluster_template(slurm_env, prob, tmp_path):
    out = tmp_path / "x.zarr"
    client = (f"{sys.executable} -m distsketch.cli lstsq {prob.path}/A {prob.path}/b --out {out} --seed 5 "
              "--quiet --scheduler $DASK_SCHEDULER_ADDRESS")
    job = submit(slurm_env, "dask-cluster.sbatch", tmp_path,
                 export={"CLIENT": client, "PYTHON": sys.executable, "INTERFACE": "lo",
                         "WORKER_MEMORY": "1GB"})
    state = wait(slurm_env, job)
    log = output(tmp_path, "distsketch-dask", job)
    assert state == "COMPLETED", log
    assert "dask cluster up" in log and "with 2 worker(s)" in log
    x = zarr.open_array(str(out / "x"), mode="r")[...]
    assert np.linalg.norm(x - prob.x) <= 1e-10 * np.linalg.norm(prob.x)


def test_slurm_cluster_helper(slurm_env, prob, monkeypatch, tmp_path):
    from distributed import Client

    from distsketch.slurm import slurm_cluster

    for k, v in slurm_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)  # the jobs' slurm-*.out files land here, not in the checkout
    with slurm_cluster(jobs=2, memory="1GB", queue="debug", interface="lo", walltime="00:10:00",
                       python=sys.executable, log_directory=str(tmp_path)) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        assert len(client.scheduler_info()["workers"]) == 2
        S = distsketch.sketch(prob.dask("A"), 80, seed=9).compute()
    ref = distsketch.sketch(prob.numpy("A"), 80, seed=9)
    assert np.abs(S - ref).max() <= 1e-13 * np.abs(ref).max()


def test_killed_job_resumes_from_checkpoint(slurm_env, prob, tmp_path):
    """A job killed mid-solve (every rank exits hard after pass 12, as at a time limit) is submitted
    again with the same arguments: it resumes from its checkpoint and ends with the x of an
    uninterrupted run, bit for bit."""
    base = common(prob, tmp_path, METHOD="sketch_precondition", SEED=4, EXTRA_ARGS="--atol 1e-14 --btol 1e-14")
    ck = tmp_path / "ck"
    job = submit(slurm_env, "lstsq.sbatch", tmp_path, export={**base, "OUT": tmp_path / "clean.zarr"})
    assert wait(slurm_env, job) == "COMPLETED", output(tmp_path, "distsketch-lstsq", job)
    hook = tmp_path / "python-stop-after-12"  # PYTHON for the template: the driver under the test hook
    hook.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{os.path.join(ROOT, "tests", "stop_after_passes.py")}" 12 "$@"\n')
    hook.chmod(0o755)
    killed = submit(slurm_env, "lstsq.sbatch", tmp_path,
                    export={**base, "OUT": tmp_path / "x.zarr", "CHECKPOINT": ck, "PYTHON": hook})
    assert wait(slurm_env, killed) != "COMPLETED"
    assert "stopping after pass 12" in output(tmp_path, "distsketch-lstsq", killed)
    assert not (tmp_path / "x.zarr").exists() and sorted(os.listdir(ck)) == ["lstsq.rank0.npz", "lstsq.rank1.npz"]
    again = submit(slurm_env, "lstsq.sbatch", tmp_path, export={**base, "OUT": tmp_path / "x.zarr", "CHECKPOINT": ck})
    assert wait(slurm_env, again) == "COMPLETED", output(tmp_path, "distsketch-lstsq", again)
    x = zarr.open_array(str(tmp_path / "x.zarr" / "x"), mode="r")[...]
    clean = zarr.open_array(str(tmp_path / "clean.zarr" / "x"), mode="r")[...]
    np.testing.assert_array_equal(x, clean)
    g, c = zarr.open_group(str(tmp_path / "x.zarr"), mode="r"), zarr.open_group(str(tmp_path / "clean.zarr"), mode="r")
    assert g.attrs["passes"] == c.attrs["passes"] and g.attrs["iterations"] == c.attrs["iterations"]
    assert os.listdir(ck) == []  # removed once the solve finished
