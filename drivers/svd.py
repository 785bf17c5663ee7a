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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (check_out, dumps, integrity_arguments, log, publish, run_guarded,  # noqa: E402
                     shared_seed, tmp_path)


def parse(argv=None):
    p = argparse.ArgumentParser(description="distsketch truncated SVD under MPI")
    p.add_argument("A")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--method", default="auto", choices=["auto", "rsvd", "block_krylov", "single_pass"])
    p.add_argument("--n-power-iter", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    integrity_arguments(p)
    return p.parse_args(argv)


def body(comm, args):
    import numpy as np
    import zarr

    import distsketch
    from distsketch.backends.mpi import MPIRowData

    check_out(comm, args.out, args.overwrite)
    seed = shared_seed(comm, args.seed)
    data = MPIRowData.from_zarr(args.A, comm, progress=True, allow_missing_chunks=args.allow_missing_chunks)
    log(comm, f"svd: A is {data.shape[0]:,} x {data.shape[1]:,} on {comm.size} rank(s)")
    res = distsketch.svd(data, args.rank, method=args.method, seed=seed,
                         n_power_iter="auto" if args.n_power_iter is None else args.n_power_iter)
    m, k = data.shape[0], res.rank
    chunk = zarr.open_array(args.A, mode="r").chunks[0]
    tmp = tmp_path(args.out, comm)
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
    publish(comm, tmp, args.out)
    if comm.rank == 0:
        print(dumps({"out": args.out, **meta}), flush=True)
    log(comm, f"svd: rank {k} in {res.passes} passes, error estimate {res.error_estimate:.3g}")
    return 0


def main(argv=None):
    args = parse(argv)
    return run_guarded("distsketch svd", lambda comm: body(comm, args))


if __name__ == "__main__":
    sys.exit(main())
