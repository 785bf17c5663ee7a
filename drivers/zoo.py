#!/usr/bin/env python
"""MPI driver for spectral analysis of model zoos (WeightWatcher-compatible metrics).

    mpiexec -n P python drivers/zoo.py MODELS... --out DIR [--mp-fit] [--randomize] [--detX]
        [--fix-fingers clip_xmax] [--seed S] [--large-layers randomized] [--topk K] [--retry-failed]

The same per-model work and output layout as ``distsketch zoo`` (``DIR/layers/<model>.parquet``,
``DIR/summaries/<model>.parquet``, each written atomically; a rerun skips recorded models; a model
that fails is recorded with its error and the run goes on). Models are dealt to ranks by size,
largest first, each to the rank with the fewest bytes so far (decided on rank 0); each rank uses
the cores it is bound to, or, unbound, ``cores / ranks on its node`` BLAS threads. Rank 0 prints one JSON line when every rank is done;
the exit code is 0 when every model is ok, 1 when some were recorded with an error, 2 for bad
arguments (raised on every rank before any work).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from distsketch import mpi


def parse(argv=None):
    p = argparse.ArgumentParser(description="distsketch spectral analysis of model zoos under MPI")
    p.add_argument("models", nargs="+", help="model files or folders (.safetensors, .npz, .pt/.bin/.pth)")
    p.add_argument("--out", required=True, help="output folder (layers/ and summaries/ Parquet files per model)")
    mpi.zoo_arguments(p)
    p.add_argument("--retry-failed", action="store_true", help="rerun models recorded with an error")
    return p.parse_args(argv)


def deal(sizes, ranks):
    """Indices of the items each rank gets: largest first, each to the least loaded rank."""
    load = [0] * ranks
    parts = [[] for _ in range(ranks)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(ranks), key=lambda r: (load[r], r))
        parts[r].append(i)
        load[r] += sizes[i]
    return parts


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def body(comm, args):
    mpi.require_model_paths(args.models)
    seed = mpi.shared_seed(comm, args.seed)
    options = mpi.zoo_options(args, seed=seed)
    # rank 0 checks the arguments and lists the work, so every rank sees the same plan
    plan = None
    if comm.rank == 0:
        try:
            todo, options = mpi.plan_zoo(args.models, args.out, retry_failed=args.retry_failed, options=options)
            plan = (todo, options, deal([_size(src) for _, src, _ in todo], comm.size))
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            plan = e
    plan = comm.bcast(plan, root=0)
    if isinstance(plan, Exception):
        raise plan
    todo, options, parts = plan
    threads = mpi.rank_blas_threads(comm)  # the cores it is bound to, or its share of the node's
    mpi.log(comm, f"zoo: {len(todo)} of {len(args.models)} model(s) to analyse on {comm.size} rank(s), "
              f"{threads} BLAS thread(s) each")
    t0 = time.perf_counter()
    mine = []
    for i in parts[comm.rank]:
        key, src, name = todo[i]
        row = mpi.run_model(key, src, args.out, options, threads, name=name)
        mine.append(row["status"])
        print(f"[rank {comm.rank}] {name}: {row['status']} ({row['seconds']:.1f} s)"
              + (f" {row['error']}" if row["status"] != "ok" else ""), file=sys.stderr, flush=True)
    statuses = comm.gather(mine, root=0)
    code = 0
    if comm.rank == 0:
        _, summaries = mpi.read_zoo(args.out)
        ok = int((summaries["status"] == "ok").sum()) if len(summaries) else 0
        mpi.emit(comm, {"out": args.out, "models": len(summaries), "ok": ok, "errors": len(summaries) - ok,
                     "analysed_now": sum(len(s) for s in statuses), "ranks": comm.size,
                     "seconds": round(time.perf_counter() - t0, 3)})
        code = 0 if ok == len(summaries) else 1
    return comm.bcast(code, root=0)


def main(argv=None):
    args = parse(argv)
    return mpi.run_guarded("distsketch zoo", lambda comm: body(comm, args))


if __name__ == "__main__":
    sys.exit(main())
