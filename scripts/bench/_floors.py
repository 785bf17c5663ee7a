"""Floors a benchmark is up against, measured in the same run: a bare read of the store and the
GEMM rate of one BLAS thread per worker. A method's floor is what its algorithm must at least
cost on this machine: max(reads x read time, flops / aggregate GEMM rate)."""

from __future__ import annotations

import time

import numpy as np


def bare_read(path, repeats, route="dask"):
    """Seconds to read every chunk of the Zarr array at ``path`` once on the current client (medians).

    ``route``: ``"dask"`` reads through ``da.from_zarr`` (Zarr's codec pipeline, what a dask user
    runs); ``"distsketch"`` through :func:`distsketch.open_array` (direct chunk decoding where it
    applies, see ``distsketch/_zarrio.py``), the route distsketch's own reads take.
    """
    import dask.array as da

    import distsketch
    from _common import median

    ts = []
    for _ in range(repeats):
        Az = da.from_zarr(path) if route == "dask" else distsketch.open_array(path)
        t = time.perf_counter()
        Az.map_blocks(lambda x: np.atleast_2d(x.sum()), chunks=(1, 1), dtype=float).sum().compute()
        ts.append(time.perf_counter() - t)
    return {"seconds": ts, "median_s": median(ts)}


def _gemm_rate(shape_a, shape_b, seconds=1.0):
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    A = rng.standard_normal(shape_a)
    B = rng.standard_normal(shape_b)
    flops = 2.0 * shape_a[0] * shape_a[1] * shape_b[1]
    with threadpool_limits(1):
        A @ B  # warm up
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            A @ B
            reps += 1
        return reps * flops / (time.perf_counter() - t0)


def gemm_rate(client, shape_a, shape_b, seconds=1.0):
    """GFLOP/s of ``(shape_a) @ (shape_b)`` on one BLAS thread, on every worker at once.

    Returns per-worker rates and their sum (the aggregate rate the pass engine can reach).
    """
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    futs = [client.submit(_gemm_rate, shape_a, shape_b, seconds, workers=[w], pure=False, allow_other_workers=False)
            for w in workers]
    rates = [r / 1e9 for r in client.gather(futs)]
    return {"shape": [list(shape_a), list(shape_b)], "per_worker_GFLOPs": rates, "aggregate_GFLOPs": float(sum(rates))}


def floor(reads, flops, read_s, agg_gflops):
    """The floor of a method: ``max(reads x read_s, flops / rate)`` and which term dominates.

    ``no_overlap_floor_s`` is ``reads x read_s + flops / rate``: where the read is CPU work on the
    cores the kernels use (a compressed store decoded on every core, as here), the two cannot
    overlap and this sum is the floor the engine is really up against."""
    t_read = reads * read_s
    t_flop = flops / (agg_gflops * 1e9)
    return {"reads": reads, "GFLOP": flops / 1e9, "read_floor_s": t_read, "flop_floor_s": t_flop,
            "floor_s": max(t_read, t_flop), "bound": "reads" if t_read >= t_flop else "flops",
            "no_overlap_floor_s": t_read + t_flop}
