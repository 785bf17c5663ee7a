"""Execution defaults: an embedded Dask LocalCluster, or a scheduler given by address.

Library calls on dask arrays use whatever scheduler is active (a ``Client`` the caller
made, or dask's threaded scheduler). The command line and the demo use
:func:`dask_client`, which connects to ``--scheduler ADDRESS`` when given and otherwise
starts a ``LocalCluster`` sized to the machine: one single-threaded worker process per
core (dask's nanny also pins BLAS to one thread per worker, so workers do not
oversubscribe the cores), memory split evenly.
"""

from __future__ import annotations

import contextlib
import functools
import os

__all__ = ["dask_client", "worker_memory_limits", "worker_restarts", "local_worker_threads"]


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
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        yield client


def worker_restarts(client, before: set[str]) -> int:
    """How many of the workers in ``before`` (addresses) are gone: restarted or lost."""
    now = set(client.scheduler_info(n_workers=-1)["workers"])
    return len(before - now)
