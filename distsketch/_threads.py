"""BLAS-thread policy: the one place that decides how many BLAS threads a piece of work may use.

The rule: **workers x BLAS threads <= cores**. Whoever runs work in parallel (threads over
row blocks, layers in flight, MPI ranks on a node, Dask workers) gives each worker
``cores // workers`` BLAS threads (at least one), through threadpoolctl, so the machine is
never oversubscribed (measured here: two ranks on two cores with two BLAS threads each ran
3x slower than one rank). Worker processes started by a batch system get one BLAS thread
through the environment (:func:`worker_environment`), as dask's nanny does for LocalCluster.

What is deliberately not set: ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` (the machine's
own detection stands; the benchmarks record them).
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["available_cores", "threads_per_worker", "blas_limit", "current_blas_threads", "ranks_on_node",
           "rank_blas_threads", "dask_local_blas_threads", "other_blas_single_threaded", "worker_environment",
           "between_passes", "SMALL_DENSE_FLOPS"]

#: environment of worker processes a batch system starts (one worker process per core)
_WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, *, cores: int | None = None) -> int:
    """BLAS threads for each of ``workers`` parallel workers: ``cores // workers``, at least 1."""
    cores = available_cores() if cores is None else int(cores)
    return max(1, cores // max(1, int(workers)))


def blas_limit(threads: int | None):
    """Context manager limiting every BLAS library to ``threads`` threads (None: no limit)."""
    if not threads:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(int(threads))


def current_blas_threads() -> int:
    """How many BLAS threads this process may use now (threadpoolctl's view), at least 1."""
    from threadpoolctl import threadpool_info

    n = [int(i.get("num_threads") or 1) for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(n) if n else 1


def ranks_on_node(comm) -> int:
    """How many ranks of ``comm`` share this node (1 where the communicator cannot tell)."""
    try:
        from mpi4py import MPI

        return comm.Split_type(MPI.COMM_TYPE_SHARED).size
    except Exception:  # pragma: no cover - a communicator without shared-memory split
        return 1


def rank_blas_threads(comm) -> int:
    """BLAS threads of this MPI rank: the cores it is bound to, if the launcher bound it to some;
    unbound, the node's cores shared between the ranks on it."""
    allowed = available_cores()
    if allowed < (os.cpu_count() or 1):  # bound (srun --cpu-bind, mpiexec --bind-to): those cores are ours
        return allowed
    return threads_per_worker(ranks_on_node(comm), cores=allowed)


def dask_local_blas_threads(client) -> int | None:
    """BLAS threads per task when every worker of ``client`` runs on this machine: its cores
    shared between all worker threads; None for remote workers (their cores are unknown here)."""
    from .cluster import runs_here

    nthreads = client.nthreads()
    if not all(runs_here(a) for a in nthreads):
        return None
    return threads_per_worker(sum(nthreads.values()), cores=os.cpu_count() or 1)


def other_blas_single_threaded():
    """Keep BLAS libraries other than numpy's (scipy's own OpenBLAS copy) on one thread while
    numpy's may use several: after each call an OpenBLAS pool spins for a while, and two pools
    alternating on few cores steal them from each other (measured: 2.4 s became 6-9 s for a
    BERT-sized model's spectra)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    import numpy as np

    ctl = ThreadpoolController()
    npdir = os.path.dirname(np.__file__)
    blas = [lc.filepath for lc in ctl.lib_controllers if lc.user_api == "blas"]
    mine = [f for f in blas if f.startswith(npdir) or "numpy.libs" in f]
    others = [f for f in blas if f not in mine]
    if not mine or not others:
        return contextlib.nullcontext()
    return ctl.select(filepath=others).limit(limits=1)


#: largest dense computation (flops) of a caller's step between passes that runs on one BLAS thread
#: while the workers of its passes occupy this machine's cores (:func:`between_passes`). After a
#: multi-threaded call an OpenBLAS pool spins ~0.1 s of a core before its threads sleep (measured on the
#: 2-core reference machine: 0.11 s of CPU in the 0.5 s after one 2-thread GEMM, whatever the limit is
#: set to afterwards), which is taken from the pass that follows; a second thread saves at most half of a
#: call's time, which outweighs that spin only above ~1e10 flops
SMALL_DENSE_FLOPS = 1e9


def between_passes(busy_cores: int, flops: float | None):
    """BLAS threads for a caller's own dense work between its passes (factoring a sketch, the small
    SVDs of a low-rank method) while the pass workers occupy ``busy_cores`` of this machine's cores.

    The rule of this module counts the caller too: with ``busy_cores`` taken, its BLAS calls get the
    remaining cores (at least one thread, never more than it has now) when its largest dense step,
    ``flops``, is at most :data:`SMALL_DENSE_FLOPS`. Larger work (or ``flops`` None: unknown) keeps the
    caller's threads (the pass workers wait for it then). ``busy_cores`` 0 (passes on other machines,
    or run with the caller's own BLAS threads): no change. Measured on a 2-worker LocalCluster on 2 cores, the
    block Krylov SVD of ``scripts/bench/lowrank.py`` (``lowrank_ab.py --compare client-threads``):
    q = 1, 4.40 s with one client BLAS thread against 4.63 s with two (medians of 10 interleaved
    runs, paired median -0.27 s), q = 2, 5.52 s against 6.07 s (8 runs, -0.52 s); the client
    process's CPU time about halved (1.26 s to 0.64 s a run at q = 1).
    """
    if busy_cores <= 0 or flops is None or flops > SMALL_DENSE_FLOPS:
        return contextlib.nullcontext()
    have = current_blas_threads()
    threads = min(have, max(1, available_cores() - int(busy_cores)))
    return blas_limit(threads) if threads < have else contextlib.nullcontext()


def worker_environment() -> dict:
    """Environment variables for worker processes a batch system starts, one per core."""
    return dict(_WORKER_ENV)
