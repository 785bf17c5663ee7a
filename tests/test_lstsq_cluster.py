"""lstsq on a real LocalCluster: a worker killed mid-solve changes nothing, bit for bit; and
a Zarr problem larger than a worker's memory is solved without a worker restart."""

import logging
import os
import signal
import threading
import time

import numpy as np
import pytest

import distsketch
from distsketch.backends import DaskRowData
from distsketch.problems import generate_problem

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    path = tmp_path_factory.mktemp("kill") / "p.zarr"
    return generate_problem(path, 120_000, 20, cond=1e6, frac_in_range=0.9, chunks=8000, seed=3)


def test_worker_killed_mid_solve_gives_identical_x(problem):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client:
        clean = distsketch.lstsq(problem.dask("A"), problem.dask("b"), method="sketch_precondition",
                                 atol=1e-14, btol=1e-14, seed=8)
        assert clean.iterations >= 15
        pids = client.run(os.getpid)
        data = DaskRowData(problem.dask("A"))
        killed = {}

        def killer():
            while data.passes < 8:
                time.sleep(0.005)
            addr, pid = sorted(pids.items())[0]
            os.kill(pid, signal.SIGKILL)
            killed["at_pass"] = data.passes

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        hit = distsketch.lstsq(data, problem.dask("b"), method="sketch_precondition", atol=1e-14, btol=1e-14, seed=8)
        t.join(timeout=60)
        assert killed.get("at_pass", 0) >= 8, "the worker was not killed during the solve"
        assert set(client.run(os.getpid).values()) != set(pids.values())  # a worker really died
        np.testing.assert_array_equal(hit.x, clean.x)
        assert hit.passes == clean.passes and hit.iterations == clean.iterations


def test_solve_larger_than_worker_memory(tmp_path):
    """auto on a Zarr problem 4x a worker's memory limit: full accuracy, <= 4 passes, no restart."""
    from distributed import Client, LocalCluster

    limit = 160 * 2**20
    p = generate_problem(tmp_path / "big.zarr", 1_800_000, 48, cond=1e4, frac_in_range=0.95, chunks=16384, seed=2)
    assert p.shape[0] * p.shape[1] * 8 >= 4 * limit
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=limit,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        before = set(client.scheduler_info(n_workers=-1)["workers"])
        res = distsketch.lstsq(f"{p.path}/A", p.dask("b"), seed=0)
        assert set(client.scheduler_info(n_workers=-1)["workers"]) == before
    assert res.method in ("normal_cholqr", "cholqr") and res.passes <= 4 and res.converged
    # reference: the generator's known minimum-norm solution and optimal residual
    assert abs(res.normr / p.norm_r - 1) <= 1e-10
    nx = np.linalg.norm(p.x)
    theory = np.finfo(float).eps * p.cond * (1 + p.cond * p.norm_r / (p.s[0] * nx))
    assert np.linalg.norm(res.x - p.x) <= 100 * theory * nx
