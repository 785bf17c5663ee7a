#!/usr/bin/env python
"""MPI sketching driver: S @ A (or A @ Omega) of a Zarr array with the library's seeded operators.

    mpiexec -n P python drivers/sketch.py A.zarr --d D --out SA.zarr [--kind K] [--seed S]

The sketch equals the numpy and Dask paths' for the same seed, to rounding.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import check_out, dumps, integrity_arguments, publish, run_guarded, shared_seed, tmp_path  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description="distsketch left sketch under MPI")
    p.add_argument("A")
    p.add_argument("--d", type=int, required=True)
    p.add_argument("--kind", default="sparse_sign", choices=["sparse_sign", "gaussian", "srct", "uniform"])
    p.add_argument("--nnz", type=int, default=8)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    integrity_arguments(p)
    return p.parse_args(argv)


def body(comm, args):
    import zarr

    from distsketch import passes
    from distsketch.backends.mpi import MPIRowData
    from distsketch.operators import make_operator

    check_out(comm, args.out, args.overwrite)
    seed = shared_seed(comm, args.seed)
    data = MPIRowData.from_zarr(args.A, comm, allow_missing_chunks=args.allow_missing_chunks)
    op = make_operator(args.kind, args.d, data.shape[0], seed=seed, nnz=args.nnz)  # validated before reading
    (SA,) = passes.left_sketch(data, op)
    tmp = tmp_path(args.out, comm)
    if comm.rank == 0:
        g = zarr.open_group(tmp, mode="w")
        g.create_array("S", shape=SA.shape, dtype=SA.dtype, chunks=SA.shape)[...] = SA
        g.attrs.update({"operator": op.describe(), "passes": data.passes, "ranks": comm.size})
    publish(comm, tmp, args.out)
    if comm.rank == 0:
        print(dumps({"out": args.out, "operator": op.describe(), "passes": data.passes}), flush=True)
    return 0


def main(argv=None):
    args = parse(argv)
    return run_guarded("distsketch sketch", lambda comm: body(comm, args))


if __name__ == "__main__":
    sys.exit(main())
