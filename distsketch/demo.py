"""``distsketch demo``: the main job end to end on an embedded local Dask cluster.

Generates a least-squares problem in Zarr that is larger than one worker's memory
limit, starts a LocalCluster with that limit, solves it from the Zarr store, and prints
accuracy against the known solution, passes over the data and time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import numpy as np

__all__ = ["run_demo"]


def _parse_bytes(s) -> int:
    from dask.utils import parse_bytes

    return int(parse_bytes(s)) if isinstance(s, str) else int(s)


def run_demo(*, m: int = 1_000_000, n: int = 100, workdir=None, worker_memory="400MB", workers=None,
             scheduler=None, seed: int = 0, keep: bool = False, quiet: bool = False) -> int:
    """Run the demo; progress and log lines go to stderr (none with ``quiet``), the JSON report
    to stdout. Returns the exit code (0: no worker was restarted)."""
    import sys

    from .backends import DaskRowData
    from .cluster import dask_client, worker_restarts
    from .problems import generate_problem
    from .solve import lstsq

    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="distsketch-demo-")
    path = os.path.join(workdir, f"problem-{m}x{n}.zarr")
    limit = _parse_bytes(worker_memory)
    nbytes = m * n * 8
    if not quiet:
        print(f"[demo] A is {m:,} x {n:,} float64 = {nbytes / 2**20:,.0f} MiB; worker memory limit "
              f"{limit / 2**20:,.0f} MiB ({nbytes / limit:.1f}x)", file=sys.stderr, flush=True)
    try:
        t = time.perf_counter()
        p = generate_problem(path, m, n, cond=1e6, frac_in_range=0.95, chunks=max(4096, m // 64), seed=seed,
                             overwrite=True, progress=not quiet)
        t_gen = time.perf_counter() - t
        with dask_client(scheduler, n_workers=workers, memory_limit=limit) as client:
            before = set(client.scheduler_info(n_workers=-1)["workers"])
            data = DaskRowData(p.dask("A"), progress=not quiet)
            t = time.perf_counter()
            res = lstsq(data, p.dask("b"), seed=seed)
            t_solve = time.perf_counter() - t
            restarts = worker_restarts(client, before)
        x = res.x
        fwd = float(np.linalg.norm(x - p.x) / np.linalg.norm(p.x))
        report = {
            "shape": [m, n], "matrix_MiB": round(nbytes / 2**20, 1), "worker_memory_MiB": round(limit / 2**20, 1),
            "method": res.method, "istop": res.istop, "message": res.message, "passes": res.passes,
            "iterations": res.iterations, "cond_A": p.cond, "cond_estimate": res.cond,
            "forward_error": fwd, "residual_norm": res.normr, "optimal_residual_norm": p.norm_r,
            "residual_excess": res.normr / p.norm_r - 1.0, "seconds_generate": round(t_gen, 2),
            "seconds_solve": round(t_solve, 2), "worker_restarts": restarts, "seed": res.seed,
        }
        print(json.dumps(report, indent=2), flush=True)
        return 0 if restarts == 0 else 1
    finally:
        if own and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
