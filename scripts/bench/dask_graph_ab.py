"""A/B of the Dask backend's graph for the distributed outputs of a pass, interleaved in one run.

``one_task_a_block``: block ``i`` of each distributed output is one task picking it from block
``i``'s result (``DaskRowData._outputs``); ``from_delayed_concatenate``: the construction it
replaced, a ``da.from_delayed`` piece per block joined by ``da.concatenate`` (two more tasks a
block and output). With ``--tree``: the tree sum of each pass's reduced parts in groups of 8
(``fan_in_for``, this matrix's n = 1,000), 4 and 2 (the pairwise tree it replaced). Measured on the
rank-50 block Krylov SVD (q = 2) of ``scripts/bench/lowrank.py``'s
200,000 x 1,000 store, 2 workers with one thread each, U computed. Usage (from the repository root):

    PYTHONPATH=. python scripts/bench/dask_graph_ab.py --out scripts/bench/results/dask_graph_ab_s7.json
    PYTHONPATH=. python scripts/bench/dask_graph_ab.py --tree --out scripts/bench/results/dask_tree_ab_s7.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from operator import getitem

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, median, write_json  # noqa: E402


def _from_delayed_concatenate(self, parts, dist_out, prefix):
    import dask
    import dask.array as da

    outs = []
    for k, (ncols, dtype) in enumerate(dist_out):
        pieces = [da.from_delayed(dask.delayed(getitem, pure=True)(p[0], k), shape=(rows, ncols), dtype=dtype)
                  for p, rows in zip(parts, self.row_chunks)]
        outs.append(da.concatenate(pieces, axis=0))
    return outs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", default="bench-data/lowrank-200000x1000.zarr/A",
                    help="the Zarr matrix (scripts/bench/lowrank.py generates it)")
    ap.add_argument("--q", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--tree", action="store_true", help="compare tree-sum fan-ins 8, 4, 2 instead")
    ap.add_argument("--out", default="bench-results/dask_graph_ab.json")
    a = ap.parse_args(argv)

    from distributed import Client, LocalCluster, get_task_stream

    import distsketch
    from distsketch.backends.dask import DaskRowData

    import distsketch.backends.dask as backend

    current, fan_in_for = DaskRowData._outputs, backend.fan_in_for
    if a.tree:
        variants = {f"fan_in_{k}": (lambda k: lambda: setattr(backend, "fan_in_for", lambda n: k))(k)
                    for k in (8, 4, 2)}
    else:
        variants = {"one_task_a_block": lambda: setattr(DaskRowData, "_outputs", current),
                    "from_delayed_concatenate": lambda: setattr(DaskRowData, "_outputs", _from_delayed_concatenate)}
    ts = {k: [] for k in variants}
    tasks = {k: [] for k in variants}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cl, Client(cl) as client:
        distsketch.svd(a.path, 50, method="block_krylov", n_power_iter=a.q, seed=99).U.compute()  # warm-up
        try:
            for rep in range(a.repeats):
                for name, use in variants.items():
                    use()
                    with get_task_stream(client) as stream:
                        t = time.perf_counter()
                        res = distsketch.svd(a.path, 50, method="block_krylov", n_power_iter=a.q, seed=rep)
                        res.U.compute()
                        ts[name].append(time.perf_counter() - t)
                    tasks[name].append(len(stream.data))
                    print(f"{name}: {ts[name][-1]:.2f} s, {tasks[name][-1]} tasks", flush=True)
        finally:
            DaskRowData._outputs, backend.fan_in_for = current, fan_in_for
    out = {"benchmark": "dask_graph_ab", "path": a.path, "n_power_iter": a.q, "environment": environment(),
           "loadavg_at_end": list(os.getloadavg()),
           **{k: {"seconds": v, "median_s": median(v), "tasks": tasks[k]} for k, v in ts.items()}}
    print("medians: " + ", ".join(f"{k} {out[k]['median_s']:.2f} s" for k in ts))
    write_json(a.out, out)


if __name__ == "__main__":
    main()
