"""Dask on Slurm from a notebook: a dask-jobqueue ``SLURMCluster`` configured for distsketch.

    from distsketch.slurm import slurm_cluster
    cluster = slurm_cluster(jobs=4, memory="8GB", queue="compute")
    client = distributed.Client(cluster)

Each Slurm job is one single-threaded worker process per core (``processes == cores``), so
Dask's threads and BLAS threads never oversubscribe; BLAS is pinned to one thread in the
workers' environment. Needs the ``slurm`` extra (``pip install distsketch[slurm]``).
"""

from __future__ import annotations

from ._threads import worker_environment

__all__ = ["slurm_cluster"]


def slurm_cluster(*, jobs: int = 1, cores: int = 1, memory: str = "2GB", queue: str | None = None,
                  walltime: str = "01:00:00", interface: str | None = None, scale: bool = True, **kwargs):
    """Return a started ``dask_jobqueue.SLURMCluster`` with ``jobs`` jobs of ``cores`` workers each.

    Parameters
    ----------
    jobs : int
        Slurm jobs to submit (``cluster.scale(jobs=jobs)``); 0 or ``scale=False`` submits none.
    cores, memory, queue, walltime
        Per job: cores (= worker processes, one thread each), memory, partition, time limit.
    interface : str, optional
        Network interface of scheduler and workers (``"lo"`` on a single node).
    **kwargs
        Passed to ``SLURMCluster`` (``account``, ``job_extra_directives``, ``local_directory``...).
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError("slurm_cluster needs dask-jobqueue: pip install 'distsketch[slurm]'") from exc
    env = [f"export {k}={v}" for k, v in worker_environment().items()]  # one BLAS thread per worker process
    opts = dict(cores=cores, processes=cores, memory=memory, walltime=walltime,
                job_script_prologue=env + list(kwargs.pop("job_script_prologue", [])))
    if queue:
        opts["queue"] = queue
    if interface:
        opts["interface"] = interface
    cluster = SLURMCluster(**opts, **kwargs)
    if scale and jobs:
        cluster.scale(jobs=jobs)
    return cluster
