"""Execution defaults: an embedded Dask LocalCluster, or a scheduler given by address.

Library calls on dask arrays use whatever scheduler is active (a ``Client`` the caller
made, or dask's threaded scheduler). The command line and the demo use
:func:`dask_client`, which connects to ``--scheduler ADDRESS`` when given and otherwise
starts a ``LocalCluster`` sized to the machine: one single-threaded worker process per
core (dask's nanny also pins BLAS to one thread per worker, so workers do not
oversubscribe the cores), memory split evenly. Its workers' glibc malloc keeps freed
medium-sized buffers for reuse (:func:`worker_malloc_environ`).
"""

from __future__ import annotations

import contextlib
import functools
import os

__all__ = ["dask_client", "worker_memory_limits", "worker_restarts", "local_worker_threads", "worker_malloc_environ",
           "worker_environ"]

# glibc malloc in the embedded cluster's worker processes. Dask starts workers with
# MALLOC_TRIM_THRESHOLD_=65536, which hands freed memory back to the kernel at once and, being set,
# also freezes malloc's mmap threshold at 128 KiB: every temporary above that (a kernel's 8 MB
# product, a decoded block) is a fresh mmap whose pages fault in again, zeroed, on every task.
# Measured (`scripts/bench/cluster_malloc_ab.py`): the workers' system time of a rank-50 SVD of
# 200,000 x 1,000 down by a third (default memory) to more than half (0.4x-matrix limit). Buffers
# up to MMAP_THRESHOLD now come from malloc's heaps, and up to TRIM_MAX (an eighth of a worker's
# memory limit, if smaller: a worker near its limit must not be pushed past Dask's thresholds by
# what it keeps) of freed memory stays for reuse.
MMAP_THRESHOLD = 64 << 20
TRIM_MAX = 256 << 20
_DASK_TRIM_DEFAULT = 65536


def _active_client():
    """The active distributed Client, or None (no Client: dask's threaded scheduler)."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def worker_memory_limits() -> list[int] | None:
    """The memory limit of each worker of the active distributed Client, in bytes; None when no
    Client is active (dask's threaded scheduler) or a worker has no limit."""
    client = _active_client()
    if client is None:
        return None
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info(n_workers=-1)["workers"].values()]
    return limits if limits and all(limits) else None


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@functools.lru_cache(maxsize=1)
def _this_machine() -> frozenset[str]:
    """This machine's host name and its address (resolved once: a slow resolver is asked at most once)."""
    import socket

    try:
        host = socket.gethostname()
        return frozenset({host, socket.gethostbyname(host)})
    except OSError:  # pragma: no cover - a host without a resolvable name
        return frozenset()


def local_worker_threads() -> int:
    """Threads of the active distributed Client's workers that run on this machine in other
    processes (the cores their tasks take from this process); 0 when no Client is active (dask's
    threaded scheduler) or every worker is elsewhere. Workers of a threads LocalCluster
    (``inproc://``) run in this process, under its own BLAS limits, and are not counted."""
    client = _active_client()
    if client is None:
        return 0
    return sum(int(k) for addr, k in client.nthreads().items()
               if not str(addr).startswith("inproc://") and runs_here(addr))


def runs_here(address: str) -> bool:
    """Whether a worker at ``address`` (``tcp://host:port``, ``inproc://...``) runs on this machine."""
    scheme, _, rest = str(address).partition("://")
    host = rest.rsplit(":", 1)[0].strip("[]")
    return scheme == "inproc" or host in _LOOPBACK or host in _this_machine()


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, *, n_workers: int | None = None, threads_per_worker: int = 1,
                memory_limit="auto", quiet: bool = True):
    """Yield a ``distributed.Client``: to ``scheduler`` if given, else to a new LocalCluster.

    The cluster is closed on exit; a client to an external scheduler only disconnects.
    """
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    n = n_workers or max(1, os.cpu_count() or 1)
    kwargs = dict(n_workers=n, threads_per_worker=threads_per_worker, memory_limit=memory_limit,
                  processes=True, dashboard_address=None)
    if quiet:
        kwargs["silence_logs"] = logging.ERROR
    limit = _per_worker_bytes(memory_limit, n, threads_per_worker)
    with worker_environ(limit) as restore:
        cluster = LocalCluster(**kwargs)  # the nannies read the settings here
    try:
        with cluster, Client(cluster) as client:
            yield client
    finally:
        restore()  # a restarted worker's nanny writes them into this process's environment again


@contextlib.contextmanager
def worker_environ(memory_limit: int | None = None):
    """A context in which a new LocalCluster's nannies start their workers with
    :func:`worker_malloc_environ`'s settings; yields a function that puts this process's
    environment back as it was (also called on exit). Dask's nanny takes a variable from this
    process's environment before its own setting, and writes its setting into it (where every
    process started later would inherit it): so the variables are set here for the duration and
    then restored."""
    import dask

    environ = worker_malloc_environ(memory_limit)
    keys = [k for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_") if k in environ]
    saved = {k: os.environ.get(k) for k in keys}

    def restore():
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    try:
        os.environ.update({k: str(environ[k]) for k in keys})
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            yield restore
    finally:
        restore()


def _per_worker_bytes(memory_limit, n_workers: int, threads_per_worker: int) -> int | None:
    import logging

    from distributed.worker_memory import parse_memory_limit

    try:
        return parse_memory_limit(memory_limit, threads_per_worker, total_cores=n_workers * threads_per_worker,
                                  logger=logging.getLogger(__name__))
    except (ValueError, TypeError):
        return None  # LocalCluster reports a bad limit itself


def worker_malloc_environ(memory_limit: int | None = None, base: dict | None = None) -> dict:
    """Dask's ``distributed.nanny.pre-spawn-environ`` (or ``base``) with glibc malloc settings for
    worker processes that keep freed buffers: ``MALLOC_MMAP_THRESHOLD_`` (``MMAP_THRESHOLD``) and
    ``MALLOC_TRIM_THRESHOLD_`` (``TRIM_MAX``, at most an eighth of ``memory_limit`` bytes, at
    least Dask's 64 KiB). A value the user gave is left as it is: in this process's environment
    (which Dask's nanny reads first) or in Dask's setting, the trim threshold when it is anything
    but Dask's default (which an earlier nanny may have written into the environment). Only Linux
    (glibc) gets them."""
    import sys

    import dask
    import distributed  # noqa: F401  (loads Dask's defaults for the nanny's settings)

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) if base is None else base)
    if not sys.platform.startswith("linux"):
        return env
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        env["MALLOC_MMAP_THRESHOLD_"] = os.environ["MALLOC_MMAP_THRESHOLD_"]
    env.setdefault("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD)
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_", env.get("MALLOC_TRIM_THRESHOLD_"))
    if trim is not None:
        env["MALLOC_TRIM_THRESHOLD_"] = trim
    if trim is None or str(trim) == str(_DASK_TRIM_DEFAULT):
        keep = TRIM_MAX if not memory_limit else min(TRIM_MAX, int(memory_limit) // 8)
        env["MALLOC_TRIM_THRESHOLD_"] = max(_DASK_TRIM_DEFAULT, keep)
    return env


def worker_restarts(client, before: set[str]) -> int:
    """How many of the workers in ``before`` (addresses) are gone: restarted or lost."""
    now = set(client.scheduler_info(n_workers=-1)["workers"])
    return len(before - now)
