#!/usr/bin/env python
"""MPI least-squares driver.

    mpiexec -n P python drivers/lstsq.py A.zarr b.zarr --out x.zarr [--method M] [--seed S]
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
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (check_out, dumps, integrity_arguments, log, publish, run_guarded,  # noqa: E402
                     shared_seed, tmp_path)


def parse(argv=None):
    p = argparse.ArgumentParser(description="distsketch least squares under MPI")
    p.add_argument("A")
    p.add_argument("b")
    p.add_argument("--out", required=True)
    p.add_argument("--method", default="auto", choices=["auto", "sketch_solve", "sketch_precondition", "cholqr"])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--checkpoint", default=None, help="folder for per-rank checkpoint files")
    p.add_argument("--atol", type=float, default=1e-12)
    p.add_argument("--btol", type=float, default=1e-12)
    p.add_argument("--maxiter", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    integrity_arguments(p)
    p.add_argument("--stop-after-passes", type=int, default=None,
                   help="testing: kill this job (every rank, no clean-up) after that many passes, as a "
                        "scheduler's time limit would; the checkpoint is left for the next job")
    return p.parse_args(argv)


def body(comm, args):
    import numpy as np
    import zarr

    import distsketch
    from distsketch._inputs import as_matrix
    from distsketch.backends.mpi import MPIRowData
    from distsketch.errors import ShapeError
    from distsketch.problems import _zstd
    from distsketch.solve._checkpoint import MPICheckpoint

    check_out(comm, args.out, args.overwrite)
    ck = None
    if args.checkpoint:
        os.makedirs(args.checkpoint, exist_ok=True)
        ck = MPICheckpoint(os.path.join(args.checkpoint, "lstsq"), comm)
    # without --seed, a checkpointed job resumes with the seed its first run drew
    seed = shared_seed(comm, ck.saved_seed() if args.seed is None and ck is not None else args.seed)
    log(comm, f"lstsq: opening {args.A} on {comm.size} rank(s)")
    data = MPIRowData.from_zarr(args.A, comm, progress=True, allow_missing_chunks=args.allow_missing_chunks)
    b = as_matrix(args.b, "b", ndim=(1, 2), allow_missing_chunks=args.allow_missing_chunks)
    if b.shape[0] != data.shape[0]:
        raise ShapeError(f"b must have m={data.shape[0]} entries to match A {data.shape}; got shape {b.shape}")
    log(comm, f"lstsq: A is {data.shape[0]:,} x {data.shape[1]:,}; rank 0 holds rows {data.local_rows}")
    if args.stop_after_passes is not None:
        _die_after(data, args.stop_after_passes)
    res = distsketch.lstsq(data, b, method=args.method, seed=seed, atol=args.atol, btol=args.btol,
                           maxiter=args.maxiter, checkpoint=ck)
    meta = {"method": res.method, "reason": res.reason, "istop": res.istop, "message": res.message,
            "iterations": res.iterations, "passes": res.passes, "normr": res.normr, "normar": res.normar,
            "cond_estimate": res.cond, "rank": res.rank, "seed": res.seed, "verified": res.verified,
            "ranks": comm.size}
    tmp = tmp_path(args.out, comm)
    if comm.rank == 0:
        g = zarr.open_group(tmp, mode="w")
        g.create_array("x", shape=res.x.shape, dtype=res.x.dtype, chunks=res.x.shape,
                       fill_value=np.nan, compressors=_zstd())[...] = np.asarray(res.x)
        g.attrs.update(meta)
    publish(comm, tmp, args.out)
    if comm.rank == 0:
        print(dumps({"out": args.out, **meta}), flush=True)
    log(comm, f"lstsq: {res.message} after {res.passes} passes")
    return 0 if res.converged or res.istop == 8 else 1  # 8: sketch_solve, unverified by request


def _die_after(data, n_passes):
    """Hard-exit every rank once ``n_passes`` reads of A have completed (emulated preemption)."""
    real = data.row_pass

    def row_pass(*a, **k):
        out = real(*a, **k)
        if data.passes >= n_passes:
            sys.stderr.write(f"[rank {data.comm.rank}] stopping after pass {data.passes} (--stop-after-passes)\n")
            sys.stderr.flush()
            os._exit(137)
        return out

    data.row_pass = row_pass


def main(argv=None):
    args = parse(argv)
    return run_guarded("distsketch lstsq", lambda comm: body(comm, args))


if __name__ == "__main__":
    sys.exit(main())
