#!/usr/bin/env python
"""MPI driver of the randomized pivoted QR (CQRRPT).

    mpiexec -n P python drivers/qrcp.py A.zarr --out qr.zarr [--rank K | --tol T] [--seed S] [--d D]

Each rank reads its own rows of A; distsketch.qrcp runs unchanged on the MPI backend (two reads).
The group --out gets Q (m x k, each rank writing its own rows, in whole chunks), R and perm,
published atomically once every rank has written.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import zarr

import distsketch
from distsketch import mpi


def parse(argv=None):
    p = argparse.ArgumentParser(description="distsketch randomized QR with column pivoting (CQRRPT) under MPI")
    p.add_argument("A", help="path of the Zarr array A (a group member as store.zarr/A), m >= n")
    mpi.output_arguments(p)
    p.add_argument("--rank", type=int, default=None, help="number of columns kept (default: the numerical rank)")
    p.add_argument("--tol", type=float, default=None,
                   help="relative Frobenius tolerance of the sketched tail (instead of --rank)")
    p.add_argument("--kind", default="sparse_sign", choices=["sparse_sign", "gaussian", "srct"],
                   help="sketching operator (default sparse_sign)")
    p.add_argument("--d", type=int, default=None, help="sketch size (default min(m, 2n))")
    p.add_argument("--seed", type=int, default=None, help="seed of the sketch (default: fresh, recorded)")
    mpi.integrity_arguments(p)
    return p.parse_args(argv)


def body(comm, args):
    mpi.check_out(comm, args.out, args.overwrite)
    seed = mpi.shared_seed(comm, args.seed)
    data = mpi.open_rows(args.A, comm, progress=True, allow_missing_chunks=args.allow_missing_chunks)
    mpi.log(comm, f"qrcp: A is {data.shape[0]:,} x {data.shape[1]:,} on {comm.size} rank(s)")
    res = distsketch.qrcp(data, args.rank, tol=args.tol, seed=seed, kind=args.kind, d=args.d)
    m, k = data.shape[0], res.rank
    chunk = zarr.open_array(args.A, mode="r").chunks[0]
    tmp = mpi.staging_path(comm, args.out)
    meta = {"rank": k, "numerical_rank": res.numerical_rank, "passes": res.passes, "reason": res.reason,
            "error_estimate": res.error_estimate, "seed": res.seed, "ranks": comm.size}
    if comm.rank == 0:
        g = zarr.open_group(tmp, mode="w")
        g.create_array("Q", shape=(m, k), dtype=res.R.dtype, chunks=(chunk, max(k, 1)))
        g.create_array("R", shape=res.R.shape, dtype=res.R.dtype, chunks=tuple(max(c, 1) for c in res.R.shape)
                       )[...] = res.R
        g.create_array("perm", shape=res.perm.shape, dtype="i8", chunks=res.perm.shape)[...] = res.perm
        g.attrs.update(meta)
    comm.Barrier()
    r0, r1 = data.local_rows  # whole chunks of A, so ranks never share a chunk of Q
    zarr.open_array(os.path.join(tmp, "Q"), mode="r+")[r0:r1] = np.asarray(res.Q)
    mpi.publish(comm, tmp, args.out)
    mpi.emit(comm, {"out": args.out, **meta})
    mpi.log(comm, f"qrcp: rank {k} in {res.passes} passes")
    return 0


def main(argv=None):
    args = parse(argv)
    return mpi.run_guarded("distsketch qrcp", lambda comm: body(comm, args))


if __name__ == "__main__":
    sys.exit(main())
