"""distsketch.cluster: the embedded LocalCluster's worker environment (glibc malloc settings)."""

import sys

import numpy as np
import pytest

pytest.importorskip("distributed")

from distsketch import cluster  # noqa: E402


def test_worker_malloc_environ_keeps_buffers_and_respects_the_users_setting(monkeypatch):
    import dask

    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(k, raising=False)
    env = cluster.worker_malloc_environ()
    if not sys.platform.startswith("linux"):
        assert "MALLOC_MMAP_THRESHOLD_" not in env
        return
    assert env["MALLOC_MMAP_THRESHOLD_"] == cluster.MMAP_THRESHOLD == 64 << 20
    assert env["MALLOC_TRIM_THRESHOLD_"] == cluster.TRIM_MAX
    assert env["OPENBLAS_NUM_THREADS"] == 1  # Dask's own settings kept
    assert cluster.worker_malloc_environ(640 << 20)["MALLOC_TRIM_THRESHOLD_"] == 80 << 20  # an eighth of the limit
    assert cluster.worker_malloc_environ(4 << 30)["MALLOC_TRIM_THRESHOLD_"] == cluster.TRIM_MAX
    assert cluster.worker_malloc_environ(1000)["MALLOC_TRIM_THRESHOLD_"] == 65536  # never below Dask's
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": 1000,
                                                                   "MALLOC_MMAP_THRESHOLD_": 4096}}):
        mine = cluster.worker_malloc_environ()
    assert mine["MALLOC_TRIM_THRESHOLD_"] == 1000 and mine["MALLOC_MMAP_THRESHOLD_"] == 4096
    # this process's environment comes first (Dask's nanny reads it first), except Dask's own
    # trim default, which an earlier nanny writes there
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "8192")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    env = cluster.worker_malloc_environ()
    assert env["MALLOC_MMAP_THRESHOLD_"] == "8192" and env["MALLOC_TRIM_THRESHOLD_"] == cluster.TRIM_MAX
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")
    assert cluster.worker_malloc_environ()["MALLOC_TRIM_THRESHOLD_"] == "12345"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert "MALLOC_MMAP_THRESHOLD_" not in cluster.worker_malloc_environ()


def _faults_of_temporaries(n=100, nbytes=8 << 20):
    """System CPU seconds a new thread spends on ``n`` fresh ``nbytes`` temporaries it writes
    (page faults: the kernel zeroing fresh pages, whether 4 KiB or transparent huge pages)."""
    import resource
    import threading

    box = []

    def work():
        r0 = resource.getrusage(resource.RUSAGE_THREAD).ru_stime
        for _ in range(n):
            a = np.empty(nbytes // 8)
            a[:] = 1.0
            del a
        box.append(resource.getrusage(resource.RUSAGE_THREAD).ru_stime - r0)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return box[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_embedded_cluster_workers_reuse_freed_buffers():
    """dask_client's workers start with the settings, and their temporaries stop faulting in
    fresh pages: against a LocalCluster with Dask's own worker environment, started before and
    after (a first nanny writes Dask's trim default into this process's environment)."""
    import logging
    import os

    from distributed import Client, LocalCluster

    keys = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as lc, Client(lc) as client:
        first = next(iter(client.run(_faults_of_temporaries).values()))
    before = {k: os.environ.get(k) for k in keys}
    with cluster.dask_client(n_workers=1, memory_limit="2GB") as client:
        env = next(iter(client.run(lambda: {k: os.environ.get(k) for k in keys}).values()))
        assert env == {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(int(2e9) // 8)}
        assert {k: os.environ.get(k) for k in keys} == before  # not left in this process's environment
        ours = next(iter(client.run(_faults_of_temporaries).values()))
    assert {k: os.environ.get(k) for k in keys} == before
    # a cluster started afterwards gets Dask's own environment, not ours
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as lc, Client(lc) as client:
        env = next(iter(client.run(lambda: {k: os.environ.get(k) for k in keys}).values()))
        assert env["MALLOC_MMAP_THRESHOLD_"] == before["MALLOC_MMAP_THRESHOLD_"]
        dasks = next(iter(client.run(_faults_of_temporaries).values()))
    assert min(first, dasks) > 0.01 and ours * 4 < min(first, dasks), (ours, first, dasks)
