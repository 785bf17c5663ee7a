#!/usr/bin/env python
"""MPI sketching driver: S @ A (or A @ Omega) of a Zarr array with the library's seeded operators.

    mpiexec -n P python drivers/sketch.py A.zarr --d D --out SA.zarr [--kind K] [--seed S]

The sketch equals the numpy and Dask paths' for the same seed, to rounding.
"""

from __future__ import annotations

import argparse
import sys

from distsketch import mpi, passes
from distsketch.operators import KINDS, make_operator


def parse(argv=None):
    p = argparse.ArgumentParser(description="distsketch left sketch under MPI")
    p.add_argument("A", help="path of the Zarr array A (a group member as store.zarr/A)")
    p.add_argument("--d", type=int, required=True, help="rows of the sketch S A")
    p.add_argument("--kind", default="sparse_sign", choices=sorted(KINDS), help="sketching operator")
    p.add_argument("--nnz", type=int, default=8, help="nonzeros per column of a sparse_sign operator")
    p.add_argument("--seed", type=int, default=None, help="seed of the operator (default: fresh, recorded)")
    mpi.output_arguments(p)
    mpi.integrity_arguments(p)
    return p.parse_args(argv)


def body(comm, args):
    mpi.check_out(comm, args.out, args.overwrite)
    seed = mpi.shared_seed(comm, args.seed)
    data = mpi.open_rows(args.A, comm, allow_missing_chunks=args.allow_missing_chunks)
    op = make_operator(args.kind, args.d, data.shape[0], seed=seed, nnz=args.nnz)  # validated before reading
    (SA,) = passes.left_sketch(data, op)
    mpi.write_result(comm, args.out, {"S": SA}, {"operator": op.describe(), "passes": data.passes,
                                                 "ranks": comm.size})
    mpi.emit(comm, {"out": args.out, "operator": op.describe(), "passes": data.passes})
    return 0


def main(argv=None):
    args = parse(argv)
    return mpi.run_guarded("distsketch sketch", lambda comm: body(comm, args))


if __name__ == "__main__":
    sys.exit(main())
