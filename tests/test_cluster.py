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


def _mmapped_bytes_of_temporary(nbytes=8 << 20):
    """Bytes glibc serves by a fresh mmap (mallinfo2's ``hblkhd``: pages the kernel faults in and
    zeroes anew) for one ``nbytes`` temporary made in a new thread, as a worker's task makes it."""
    import ctypes
    import threading

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    box = []

    def work():
        before = mallinfo2().hblkhd
        a = np.empty(nbytes // 8)
        a[:] = 1.0
        box.append(mallinfo2().hblkhd - before)
        del a

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return box[0]


def _malloc_environ():
    import os

    return {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}


def _on_the_worker(client, fn):
    """``fn()`` run on the cluster's one worker."""
    (out,) = client.run(fn).values()
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_embedded_cluster_workers_reuse_freed_buffers():
    """dask_client's workers start with the settings, and an 8 MB temporary comes from malloc's
    heap instead of a fresh mmap: against a LocalCluster with Dask's own worker environment,
    started before and after (a first nanny writes Dask's trim default into this process's
    environment)."""
    import ctypes
    import logging

    from distributed import Client, LocalCluster

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("glibc < 2.33: no mallinfo2")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as lc, Client(lc) as client:
        first = _on_the_worker(client, _mmapped_bytes_of_temporary)
    before = _malloc_environ()
    with cluster.dask_client(n_workers=1, memory_limit="2GB") as client:
        env = _on_the_worker(client, _malloc_environ)
        assert env == {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(int(2e9) // 8)}
        assert _malloc_environ() == before  # not left in this process's environment
        ours = _on_the_worker(client, _mmapped_bytes_of_temporary)
    assert _malloc_environ() == before
    # a cluster started afterwards gets Dask's own environment, not ours
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as lc, Client(lc) as client:
        env = _on_the_worker(client, _malloc_environ)
        assert env["MALLOC_MMAP_THRESHOLD_"] == before["MALLOC_MMAP_THRESHOLD_"]
        dasks = _on_the_worker(client, _mmapped_bytes_of_temporary)
    assert ours == 0 and first >= 8 << 20 and dasks >= 8 << 20, (ours, first, dasks)
