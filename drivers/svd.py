#!/usr/bin/env python
"""MPI truncated-SVD driver.

    mpiexec -n P python drivers/svd.py A.zarr --rank K --out svd.zarr [--method M] [--seed S]

Each rank reads its own rows of A; distsketch.svd runs unchanged on the MPI backend. The
group --out gets U (m x K, each rank writing its own rows, in whole chunks), s and Vt,
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
    p = argparse.ArgumentParser(description="distsketch truncated SVD under MPI")
    p.add_argument("A", help="path of the Zarr array A (a group member as store.zarr/A)")
    p.add_argument("--rank", type=int, required=True, help="number of singular triplets")
    mpi.output_arguments(p)
    p.add_argument("--method", default="auto", choices=["auto", "rsvd", "block_krylov", "single_pass"],
                   help="algorithm (default auto, recorded in the output)")
    p.add_argument("--n-power-iter", type=int, default=None,
                   help="power (subspace) iterations; default: chosen from the spectrum's decay")
    p.add_argument("--seed", type=int, default=None, help="seed of the sketch (default: fresh, recorded)")
    mpi.integrity_arguments(p)
    return p.parse_args(argv)


def body(comm, args):
    mpi.check_out(comm, args.out, args.overwrite)
    seed = mpi.shared_seed(comm, args.seed)
    data = mpi.open_rows(args.A, comm, progress=True, allow_missing_chunks=args.allow_missing_chunks)
    mpi.log(comm, f"svd: A is {data.shape[0]:,} x {data.shape[1]:,} on {comm.size} rank(s)")
    res = distsketch.svd(data, args.rank, method=args.method, seed=seed,
                         n_power_iter="auto" if args.n_power_iter is None else args.n_power_iter)
    m, k = data.shape[0], res.rank
    chunk = zarr.open_array(args.A, mode="r").chunks[0]
    tmp = mpi.staging_path(comm, args.out)
    meta = {"method": res.method, "reason": res.reason, "rank": k, "passes": res.passes,
            "error_estimate": res.error_estimate, "norm_fro": res.norm_fro, "n_power_iter": res.n_power_iter,
            "seed": res.seed, "ranks": comm.size}
    if comm.rank == 0:
        g = zarr.open_group(tmp, mode="w")
        g.create_array("U", shape=(m, k), dtype="f8", chunks=(chunk, k))
        g.create_array("s", shape=(k,), dtype="f8", chunks=(k,))[...] = res.s
        g.create_array("Vt", shape=res.Vt.shape, dtype="f8", chunks=res.Vt.shape)[...] = np.asarray(res.Vt)
        g.attrs.update(meta)
    comm.Barrier()
    r0, r1 = data.local_rows  # whole chunks of A, so ranks never share a chunk of U
    zarr.open_array(os.path.join(tmp, "U"), mode="r+")[r0:r1] = np.asarray(res.U)
    mpi.publish(comm, tmp, args.out)
    mpi.emit(comm, {"out": args.out, **meta})
    mpi.log(comm, f"svd: rank {k} in {res.passes} passes, error estimate {res.error_estimate:.3g}")
    return 0


def main(argv=None):
    args = parse(argv)
    return mpi.run_guarded("distsketch svd", lambda comm: body(comm, args))


if __name__ == "__main__":
    sys.exit(main())
