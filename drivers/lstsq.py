#!/usr/bin/env python
"""MPI least-squares driver.

    mpiexec -n P python drivers/lstsq.py A.zarr b.zarr --out x.zarr [--method M] [--kind K] [--d D] [--seed S]
                                         [--checkpoint DIR] [--atol T] [--btol T] [--maxiter K]

Every rank opens the Zarr arrays and reads only its own rows of A and b; the algorithm is
distsketch.lstsq, unchanged, on the MPI backend. x is written (rank 0, atomically) to the
Zarr group --out with the result's metadata in its attributes, and printed as JSON.
With --checkpoint DIR, each rank saves its share of the iteration state there; a job
killed (e.g. at its time limit) and started again with the same arguments resumes, and
ends with the same x as an uninterrupted run. Without --seed the resumed job reuses the
seed the first one drew; if A changed since the checkpoint was written (its fingerprint,
a checksum of every byte, differs) the job stops with an error naming both fingerprints.
A store lacking chunks is refused unless --allow-missing-chunks.
"""

from __future__ import annotations

import argparse
import sys

import distsketch
from distsketch import mpi
from distsketch.errors import ShapeError
from distsketch.operators import KINDS
from distsketch.solve import METHODS


def parse(argv=None):
    p = argparse.ArgumentParser(description="distsketch least squares under MPI")
    p.add_argument("A", help="path of the Zarr array A (a group member as store.zarr/A)")
    p.add_argument("b", help="path of the Zarr array b")
    mpi.output_arguments(p)
    p.add_argument("--method", default="auto", choices=METHODS,
                   help="solver (default auto: chosen by a cost model, recorded in the output)")
    p.add_argument("--seed", type=int, default=None, help="seed of the sketch (default: fresh, recorded)")
    p.add_argument("--kind", choices=sorted(KINDS), default="sparse_sign",
                   help="sketching operator (as for distsketch sketch)")
    p.add_argument("--d", type=int, default=None, help="rows of the sketch (default: the method's own, 2n-8n)")
    p.add_argument("--checkpoint", default=None, help="folder for per-rank checkpoint files (resume a killed job)")
    p.add_argument("--atol", type=float, default=1e-12, help="LSQR stopping tolerance on ||A^T r||")
    p.add_argument("--btol", type=float, default=1e-12, help="LSQR stopping tolerance on ||r|| / ||b||")
    p.add_argument("--maxiter", type=int, default=None, help="iteration limit (default: the method's own)")
    mpi.integrity_arguments(p)
    return p.parse_args(argv)


def body(comm, args):
    mpi.check_out(comm, args.out, args.overwrite)
    ck = mpi.open_checkpoint(comm, args.checkpoint, "lstsq")
    # without --seed, a checkpointed job resumes with the seed its first run drew
    seed = mpi.shared_seed(comm, ck.saved_seed() if args.seed is None and ck is not None else args.seed)
    mpi.log(comm, f"lstsq: opening {args.A} on {comm.size} rank(s)")
    data = mpi.open_rows(args.A, comm, progress=True, allow_missing_chunks=args.allow_missing_chunks)
    b = mpi.open_operand(args.b, "b", allow_missing_chunks=args.allow_missing_chunks)
    if b.shape[0] != data.shape[0]:
        raise ShapeError(f"b must have m={data.shape[0]} entries to match A {data.shape}; got shape {b.shape}")
    mpi.log(comm, f"lstsq: A is {data.shape[0]:,} x {data.shape[1]:,}; rank 0 holds rows {data.local_rows}")
    res = distsketch.lstsq(data, b, method=args.method, seed=seed, atol=args.atol, btol=args.btol,
                           maxiter=args.maxiter, checkpoint=ck, kind=args.kind, d=args.d)
    meta = {"method": res.method, "reason": res.reason, "istop": res.istop, "message": res.message,
            "iterations": res.iterations, "passes": res.passes, "normr": res.normr, "normar": res.normar,
            "cond_estimate": res.cond, "rank": res.rank, "seed": res.seed, "verified": res.verified,
            "ranks": comm.size}
    mpi.write_result(comm, args.out, {"x": res.x}, meta)
    mpi.emit(comm, {"out": args.out, **meta})
    mpi.log(comm, f"lstsq: {res.message} after {res.passes} passes")
    return 0 if res.converged or res.istop == 8 else 1  # 8: sketch_solve, unverified by request


def main(argv=None):
    args = parse(argv)
    return mpi.run_guarded("distsketch lstsq", lambda comm: body(comm, args))


if __name__ == "__main__":
    sys.exit(main())
