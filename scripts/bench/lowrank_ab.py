"""Interleaved A/B runs of the block Krylov SVD (rank 50) on one 2-worker LocalCluster, one thread each.

Each variant changes one piece of distsketch for the length of its runs; the variants take turns,
and every run computes ``U``. ``--compare``:

- ``tail``: the SVD taken in the well-conditioned Krylov basis itself (one pass over the basis
  storing ``U_0`` and its Gram, CholeskyQR on the ``k`` kept columns) against the basis
  orthonormalised first (CholeskyQR2 over every column, ``U`` a chain over the whole basis), forced
  by allowing no condition number for the first. Same reads of ``A`` either way.
- ``outputs``: the Dask backend's distributed outputs built as one task a block
  (``DaskRowData._outputs``) against a ``da.from_delayed`` piece a block joined by
  ``da.concatenate`` (two more tasks a block and output).
- ``tree``: the tree sum of each pass's reduced parts in groups of 8 (``fan_in_for`` at this
  matrix's n = 1,000), 4 and 2 (a pairwise tree).
- ``blocks``: the row blocks ``open_array`` reads the store in: whole store chunks grouped as
  ``block_rows`` chooses (``"auto"``: 4 chunks of 33.5 MB here with default worker memory, one
  under ``--memory-limit 0.4x``), 4 and 2 chunks a block, and one task a store chunk
  (``block_bytes=None``, as before the grouping).
- ``client-threads``: the client's dense work between passes on the cores the local workers leave
  (``_threads.between_passes``: one BLAS thread here) against the client's default BLAS threads
  (two here), whose pools spin ~0.1 s of a core after each call while the next pass runs.

Usage (from the repository root; the matrix is ``scripts/bench/lowrank.py``'s store):

    PYTHONPATH=. python scripts/bench/lowrank_ab.py --compare tail --q 2 --out scripts/bench/results/lowrank_tail_ab_s7.json
    PYTHONPATH=. python scripts/bench/lowrank_ab.py --compare outputs --out scripts/bench/results/dask_graph_ab_s7.json
    PYTHONPATH=. python scripts/bench/lowrank_ab.py --compare tree --out scripts/bench/results/dask_tree_ab_s7.json
    PYTHONPATH=. python scripts/bench/lowrank_ab.py --compare blocks --q 1 --out scripts/bench/results/lowrank_blocks_ab_q1_s8.json
    PYTHONPATH=. python scripts/bench/lowrank_ab.py --compare client-threads --q 1 --repeats 10 --out scripts/bench/results/lowrank_client_threads_ab_q1_s9.json
    PYTHONPATH=. python scripts/bench/lowrank_ab.py --compare client-threads --q 1 --repeats 8 --in-memory --out scripts/bench/results/lowrank_client_threads_ab_memory_q1_s9.json
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
    """The distributed outputs as the Dask backend built them before ``_outputs``."""
    import dask
    import dask.array as da

    outs = []
    for k, (ncols, dtype) in enumerate(dist_out):
        pieces = [da.from_delayed(dask.delayed(getitem, pure=True)(p[0], k), shape=(rows, ncols), dtype=dtype)
                  for p, rows in zip(parts, self.row_chunks)]
        outs.append(da.concatenate(pieces, axis=0))
    return outs


def variants(compare):
    """``{name: set-up}`` for the comparison, and a function that restores distsketch."""
    import distsketch.backends.dask as backend
    from distsketch import _inputs, _threads
    from distsketch.backends.dask import DaskRowData
    from distsketch.lowrank import _svd

    saved = _svd._KAPPA_RITZ, DaskRowData._outputs, backend.fan_in_for, _inputs.block_rows, _threads.SMALL_DENSE_FLOPS

    def restore():
        (_svd._KAPPA_RITZ, DaskRowData._outputs, backend.fan_in_for, _inputs.block_rows,
         _threads.SMALL_DENSE_FLOPS) = saved

    def setter(obj, attr, value):
        return lambda: setattr(obj, attr, value)

    if compare == "tail":
        out = {"ritz_in_basis": setter(_svd, "_KAPPA_RITZ", saved[0]), "cholqr2_tail": setter(_svd, "_KAPPA_RITZ", 0.0)}
    elif compare == "outputs":
        out = {"one_task_a_block": setter(DaskRowData, "_outputs", saved[1]),
               "from_delayed_concatenate": setter(DaskRowData, "_outputs", _from_delayed_concatenate)}
    elif compare == "blocks":
        def chunks_a_block(g):
            def rows(z, block_bytes="auto"):
                return saved[3](z, g * int(z.chunks[0]) * int(z.shape[1]) * z.dtype.itemsize)
            return rows
        out = {"blocks_auto": setter(_inputs, "block_rows", saved[3]),
               "four_chunks_a_block": setter(_inputs, "block_rows", chunks_a_block(4)),
               "two_chunks_a_block": setter(_inputs, "block_rows", chunks_a_block(2)),
               "one_chunk_a_block": setter(_inputs, "block_rows", chunks_a_block(1))}
    elif compare == "client-threads":
        out = {"client_threads_between_passes": setter(_threads, "SMALL_DENSE_FLOPS", saved[4]),
               "client_default_threads": setter(_threads, "SMALL_DENSE_FLOPS", -1.0)}
    else:
        out = {f"fan_in_{k}": setter(backend, "fan_in_for", (lambda k: lambda n, d=0: k)(k)) for k in (8, 4, 2)}
    return out, restore


def _in_memory(a):
    """The variants on the numpy backend: the store read into memory once, the same SVD."""
    import zarr

    import distsketch

    A = zarr.open(a.path, mode="r")[:]
    setups, restore = variants(a.compare)
    ts = {k: [] for k in setups}
    cpu = {k: [] for k in setups}
    distsketch.svd(A, a.rank, method="block_krylov", n_power_iter=a.q, seed=99)  # warm-up
    try:
        for rep in range(a.repeats):
            for name, use in setups.items():
                use()
                t, c = time.perf_counter(), time.process_time()
                distsketch.svd(A, a.rank, method="block_krylov", n_power_iter=a.q, seed=rep)
                ts[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
                print(f"{name}: {ts[name][-1]:.2f} s (process CPU {cpu[name][-1]:.2f} s)", flush=True)
    finally:
        restore()
    out = {"benchmark": f"lowrank_ab --compare {a.compare} --in-memory", "path": a.path, "n_power_iter": a.q,
           "rank": a.rank, "environment": environment(), "loadavg_at_end": list(os.getloadavg()),
           **{k: {"seconds": v, "median_s": median(v), "process_cpu_s": cpu[k]} for k, v in ts.items()}}
    _paired(out, ts)
    print("medians: " + ", ".join(f"{k} {out[k]['median_s']:.2f} s" for k in ts))
    write_json(a.out, out)


def _paired(out, ts):
    if len(ts) == 2:  # the variants alternate: paired differences take out the machine's drift between pairs
        (a_name, a_t), (b_name, b_t) = ts.items()
        out["paired_difference_s"] = {"of": f"{a_name} - {b_name}", "each": [x - y for x, y in zip(a_t, b_t)],
                                      "median": median([x - y for x, y in zip(a_t, b_t)])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", choices=("tail", "outputs", "tree", "blocks", "client-threads"), required=True)
    ap.add_argument("--path", default="bench-data/lowrank-200000x1000.zarr/A",
                    help="the Zarr matrix (scripts/bench/lowrank.py generates it)")
    ap.add_argument("--q", type=int, default=2)
    ap.add_argument("--rank", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--memory-limit", default="auto",
                    help="each worker's memory limit (bytes, or a fraction of the matrix like 0.4x)")
    ap.add_argument("--in-memory", action="store_true",
                    help="the matrix loaded into memory (numpy backend, the pass threads of this process) "
                         "instead of the 2-worker LocalCluster")
    ap.add_argument("--out", default="bench-results/lowrank_ab.json")
    a = ap.parse_args(argv)
    if a.in_memory:
        return _in_memory(a)

    from distributed import Client, LocalCluster, get_task_stream

    import distsketch

    def run(seed):
        res = distsketch.svd(a.path, a.rank, method="block_krylov", n_power_iter=a.q, seed=seed)
        res.U.compute()
        return res

    setups, restore = variants(a.compare)
    ts = {k: [] for k in setups}
    cpu = {k: [] for k in setups}  # CPU seconds of this process (the client, and the LocalCluster's scheduler)
    tasks = {k: [] for k in setups}
    limit = a.memory_limit
    if limit.endswith("x"):
        import zarr

        z = zarr.open(a.path, mode="r")
        limit = int(float(limit[:-1]) * z.nbytes)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR, memory_limit=limit) as cl, Client(cl) as client:
        workers_at_start = set(client.scheduler_info(n_workers=-1)["workers"])
        run(99)  # warm-up
        try:
            for rep in range(a.repeats):
                for name, use in setups.items():
                    use()
                    with get_task_stream(client) as stream:
                        t, c = time.perf_counter(), time.process_time()
                        res = run(rep)
                        ts[name].append(time.perf_counter() - t)
                        cpu[name].append(time.process_time() - c)
                    tasks[name].append(len(stream.data))
                    print(f"{name}: {ts[name][-1]:.2f} s (client process CPU {cpu[name][-1]:.2f} s), {res.passes} reads, "
                          f"{tasks[name][-1]} tasks", flush=True)
        finally:
            restore()
        workers_lost = len(workers_at_start - set(client.scheduler_info(n_workers=-1)["workers"]))
    out = {"benchmark": f"lowrank_ab --compare {a.compare}", "path": a.path, "n_power_iter": a.q, "rank": a.rank,
           "worker_memory_limit": limit, "workers_lost": workers_lost,
           "environment": environment(), "loadavg_at_end": list(os.getloadavg()),
           **{k: {"seconds": v, "median_s": median(v), "client_process_cpu_s": cpu[k],
                  "median_client_process_cpu_s": median(cpu[k]), "tasks": tasks[k]} for k, v in ts.items()}}
    _paired(out, ts)
    print("medians: " + ", ".join(f"{k} {out[k]['median_s']:.2f} s" for k in ts))
    write_json(a.out, out)


if __name__ == "__main__":
    main()
