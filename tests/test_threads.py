"""distsketch._threads, the one BLAS-thread policy: workers x BLAS threads <= cores, applied by the
numpy backend, the layer pool of the spectral analysis and the MPI ranks; worker processes of a
batch system get one BLAS thread through their environment."""

import os

import numpy as np
import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")
from distsketch import _threads  # noqa: E402


@pytest.mark.parametrize("workers, cores, expected", [
    (1, 8, 8),   # one worker: every core
    (2, 8, 4),
    (3, 8, 2),   # rounded down: 3 x 2 <= 8
    (8, 8, 1),
    (16, 8, 1),  # more workers than cores: never below one thread
    (0, 4, 4),   # no workers given: treated as one
])
def test_threads_per_worker(workers, cores, expected):
    got = _threads.threads_per_worker(workers, cores=cores)
    assert got == expected and (got * max(1, workers) <= cores or got == 1)


def test_available_cores_is_the_affinity():
    ref = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert _threads.available_cores() == ref


def blas_threads_now():
    return max(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")


def test_blas_limit_sets_and_restores():
    before = blas_threads_now()
    with _threads.blas_limit(1):
        assert blas_threads_now() == 1 and _threads.current_blas_threads() == 1
    assert blas_threads_now() == before
    with _threads.blas_limit(None):  # no limit: unchanged
        assert blas_threads_now() == before


def test_numpy_backend_workers_share_the_cores(monkeypatch):
    """Inside a pass, each of the backend's block threads runs with cores // workers BLAS threads."""
    from distsketch.backends import NumpyRowData

    seen = []

    def kernel(r0, dist):
        (A_blk,) = dist
        seen.append(blas_threads_now())
        return (), (A_blk.T @ A_blk,)

    A = np.random.default_rng(0).standard_normal((4000, 5))
    cores = _threads.available_cores()
    for workers in (2, 4):
        seen.clear()
        data = NumpyRowData(A, workers=workers, block_rows=500)
        _, (G,) = data.dist_pass(kernel, dist=(A,))
        np.testing.assert_allclose(G, A.T @ A, rtol=1e-12)
        assert seen and set(seen) == {max(1, cores // workers)}


def test_mpi_rank_threads_share_the_node():
    """COMM_SELF: one rank on the node gets every core it may run on."""
    pytest.importorskip("mpi4py")
    from mpi4py import MPI

    assert _threads.ranks_on_node(MPI.COMM_SELF) == 1
    assert _threads.rank_blas_threads(MPI.COMM_SELF) == _threads.available_cores()


def test_worker_environment_and_slurm_prologue():
    env = _threads.worker_environment()
    assert env == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env


def test_no_other_module_talks_to_threadpoolctl():
    """The policy is decided in one place: no other module of the package imports threadpoolctl."""
    import distsketch

    pkg = os.path.dirname(distsketch.__file__)
    users = []
    for folder, _, files in os.walk(pkg):
        for f in files:
            if f.endswith(".py") and f != "_threads.py" and "threadpoolctl" in open(os.path.join(folder, f)).read():
                users.append(f)
    assert users == []


def test_between_passes_leaves_the_busy_cores_to_the_workers():
    """The caller's small dense steps get the cores the pass workers leave (at least one thread);
    large steps, unknown sizes and passes that keep no core busy keep the caller's threads."""
    cores = _threads.available_cores()
    small, large = 1e6, 10 * _threads.SMALL_DENSE_FLOPS
    with _threads.blas_limit(2):
        with _threads.between_passes(cores, small):
            assert blas_threads_now() == 1
        assert blas_threads_now() == 2  # restored
        for busy, flops in ((cores, large), (cores, None), (0, small)):
            with _threads.between_passes(busy, flops):
                assert blas_threads_now() == 2
    with _threads.blas_limit(1):  # never raised above what the caller has
        with _threads.between_passes(1, small):
            assert blas_threads_now() == 1


def test_local_worker_threads_counts_the_workers_on_this_machine():
    from distributed import Client, LocalCluster

    from distsketch.cluster import local_worker_threads

    assert local_worker_threads() == 0  # no Client: dask's threaded scheduler
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster):
        assert local_worker_threads() == 2
    # worker threads in this process are under its own BLAS limits: not counted
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster):
        assert local_worker_threads() == 0


@pytest.fixture
def ritz_threads(monkeypatch):
    """The BLAS threads the SVD's Rayleigh-Ritz step (client-side dense work between passes) runs with,
    one entry a call."""
    from distsketch.lowrank import _svd

    seen = []
    ritz = _svd._ritz_in_basis

    def spy_ritz(*a, **k):
        seen.append(blas_threads_now())
        return ritz(*a, **k)

    monkeypatch.setattr(_svd, "_ritz_in_basis", spy_ritz)
    return seen


def test_low_rank_drivers_run_their_small_dense_work_on_one_thread_beside_local_workers(ritz_threads):
    """svd on a Dask array with a LocalCluster of worker processes on this machine taking every
    core: the client's QRs and SVDs between passes run on one BLAS thread; the result is still an
    SVD to rounding (checked against LAPACK)."""
    import dask.array as da
    from distributed import Client, LocalCluster

    import distsketch

    rng = np.random.default_rng(3)
    A = rng.standard_normal((2000, 60)) * 0.7 ** np.arange(60)
    cores = _threads.available_cores()
    with _threads.blas_limit(2), LocalCluster(n_workers=1, threads_per_worker=cores, processes=True,
                                              dashboard_address=None) as cluster, Client(cluster):
        r = distsketch.svd(da.from_array(A, chunks=(500, 60)), 5, n_power_iter=1, seed=0)
        after = blas_threads_now()
    assert ritz_threads == [1] and after == 2
    np.testing.assert_allclose(r.s, np.linalg.svd(A, compute_uv=False)[:5], rtol=1e-6)


def test_runs_here_tells_local_worker_addresses():
    import socket

    from distsketch.cluster import runs_here

    assert runs_here("tcp://127.0.0.1:40653") and runs_here("tcp://[::1]:8786") and runs_here("tls://localhost:1")
    assert runs_here("inproc://10.1.2.3/4567/1")  # a worker thread of this process
    assert runs_here(f"tcp://{socket.gethostname()}:8786")
    assert not runs_here("tcp://node-that-is-not-here.invalid:8786")


def test_numpy_passes_on_several_threads_leave_the_driver_one_blas_thread(ritz_threads):
    """In memory, blocks run on several threads with BLAS limits of their own: the low-rank
    driver's small calls between passes run on one thread (a multi-threaded call would leave a
    pool thread spinning beside the pass threads); one worker runs the blocks with the caller's
    threads, and nothing changes."""
    import distsketch
    from distsketch.backends import NumpyRowData

    rng = np.random.default_rng(4)
    A = rng.standard_normal((3000, 80)) * 0.8 ** np.arange(80)
    assert NumpyRowData(A, workers=1).busy_cores_here() == 0
    assert NumpyRowData(A, workers=2).busy_cores_here() == 2 * _threads.threads_per_worker(2)
    s_ref = np.linalg.svd(A, compute_uv=False)[:6]
    with _threads.blas_limit(2):
        # two pass threads take 2 x (cores // 2) cores: the driver keeps one thread; one worker: the caller's threads
        for workers, expected in ((2, 1), (1, 2)):
            r = distsketch.svd(NumpyRowData(A, workers=workers), 6, n_power_iter=1, seed=0)
            np.testing.assert_allclose(r.s, s_ref, rtol=1e-6)
            assert ritz_threads[-1] == expected and blas_threads_now() == 2
