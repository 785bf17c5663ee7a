"""Interleaved A/B of the embedded cluster's worker malloc settings on the block Krylov SVD (rank 50).

Two 2-worker LocalClusters, one thread each, side by side: Dask's own worker environment
(``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap threshold at 128 KiB) and the
one ``distsketch.cluster.dask_client`` starts its workers with
(``cluster.worker_malloc_environ``: freed buffers up to 64 MiB kept for reuse). The runs take turns,
each computes ``U``; recorded per run: wall time, the workers' user and system CPU, their RSS after
the run, and workers lost. The first round is a warm-up (not counted).

    PYTHONPATH=. python scripts/bench/cluster_malloc_ab.py --q 2 --out scripts/bench/results/cluster_malloc_ab_q2_s10.json
    PYTHONPATH=. python scripts/bench/cluster_malloc_ab.py --q 1 --memory-limit 0.4x --out scripts/bench/results/cluster_malloc_ab_limited_q1_s10.json

The matrix is ``scripts/bench/lowrank.py``'s store (200,000 x 1,000 float64, zstd).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, median, write_json  # noqa: E402


def _malloc_exec_env():
    """The MALLOC_* variables this worker process was started with (its exec environment)."""
    with open(f"/proc/{os.getpid()}/environ", "rb") as f:
        pairs = [kv.decode().split("=", 1) for kv in f.read().split(b"\0") if b"=" in kv]
    return {k: v for k, v in pairs if k.startswith("MALLOC_")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", default="bench-data/lowrank-200000x1000.zarr/A")
    ap.add_argument("--q", type=int, default=2)
    ap.add_argument("--rank", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memory-limit", default="auto", help="per worker: 'auto', bytes/'640MB', or '<f>x' of the matrix")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    import dask
    import psutil
    import zarr
    from distributed import Client, LocalCluster

    import distsketch
    from distsketch.cluster import _per_worker_bytes, worker_environ, worker_malloc_environ

    z = zarr.open(a.path, mode="r")
    limit = a.memory_limit
    if limit.endswith("x"):
        limit = int(float(limit[:-1]) * z.nbytes)
    per_worker = _per_worker_bytes(limit, 2, 1)
    envs = {"dask_default": dict(dask.config.get("distributed.nanny.pre-spawn-environ")),
            "distsketch": worker_malloc_environ(per_worker)}
    clusters = {}
    try:
        def start():
            return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                silence_logs=logging.ERROR, memory_limit=limit)

        clusters["dask_default"] = start()  # first: nothing of ours in this process's environment yet
        with worker_environ(per_worker):  # as distsketch.cluster.dask_client starts its workers
            clusters["distsketch"] = start()
        runs = {k: [] for k in envs}
        started_with = {}
        for rep in range(a.repeats + 1):
            for name, cl in clusters.items():
                with Client(cl) as client:
                    before = set(client.scheduler_info(n_workers=-1)["workers"])
                    if not rep and os.path.exists("/proc/self/environ"):
                        started_with[name] = list(client.run(_malloc_exec_env).values())
                    procs = [psutil.Process(p) for p in client.run(os.getpid).values()]
                    c0 = [p.cpu_times() for p in procs]
                    t = time.perf_counter()
                    res = distsketch.svd(a.path, a.rank, method="block_krylov", n_power_iter=a.q, seed=rep)
                    dt = time.perf_counter() - t
                    c1 = [p.cpu_times() for p in procs]
                    lost = len(before - set(client.scheduler_info(n_workers=-1)["workers"]))
                    row = {"seconds": dt, "workers_system_cpu_s": sum(b.system - x.system for x, b in zip(c0, c1)),
                           "workers_user_cpu_s": sum(b.user - x.user for x, b in zip(c0, c1)),
                           "workers_rss_mb": [p.memory_info().rss / 1e6 for p in procs], "workers_lost": lost,
                           "passes": res.passes}
                    print(name, rep, {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
                    if rep:
                        runs[name].append(row)
    finally:
        for cl in clusters.values():
            cl.close()
    summary = {k: {"median_s": median([r["seconds"] for r in v]),
                   "median_workers_system_cpu_s": median([r["workers_system_cpu_s"] for r in v]),
                   "median_workers_user_cpu_s": median([r["workers_user_cpu_s"] for r in v]),
                   "max_workers_rss_mb": max(max(r["workers_rss_mb"]) for r in v),
                   "workers_lost": sum(r["workers_lost"] for r in v)} for k, v in runs.items()}
    diffs = [b["seconds"] - x["seconds"] for x, b in zip(runs["dask_default"], runs["distsketch"])]
    out = {"benchmark": "cluster_malloc_ab", "path": a.path, "n_power_iter": a.q, "rank": a.rank,
           "worker_memory_limit": limit, "environments": {k: {kk: str(vv) for kk, vv in v.items()} for k, v in envs.items()},
           "workers_started_with": started_with,
           "runs": runs, "summary": summary, "paired_difference_s": diffs, "paired_median_difference_s": median(diffs),
           "faster_pairs": sum(d < 0 for d in diffs), "environment": environment(),
           "command": " ".join(["scripts/bench/cluster_malloc_ab.py"] + (argv if argv is not None else sys.argv[1:]))}
    write_json(a.out, out)
    print({k: {kk: round(vv, 2) for kk, vv in v.items()} for k, v in summary.items()},
          "paired median", round(median(diffs), 2), flush=True)


if __name__ == "__main__":
    main()
