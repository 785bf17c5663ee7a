"""Shared plumbing of the MPI drivers: communicator, fail-fast on every rank, atomic output.

An exception on any rank prints ``[rank r] <driver>: error: <message>`` and aborts the whole
communicator with exit code 2, so no rank is left waiting in a collective.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def comm_world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def log(comm, msg: str) -> None:
    """Progress on rank 0 only."""
    if comm.rank == 0:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_guarded(name: str, body) -> int:
    comm = comm_world()
    try:
        return body(comm)
    except SystemExit:
        raise
    except BaseException as exc:  # any failure: tell, then take every rank down with us
        sys.stderr.write(f"[rank {comm.rank}] {name}: error: {exc}\n")
        if os.environ.get("DISTSKETCH_DEBUG"):
            traceback.print_exc()
        sys.stderr.flush()
        time.sleep(0.5)  # let mpiexec forward the message before Abort tears the job down
        comm.Abort(2)
        return 2


def shared_seed(comm, seed):
    """The same resolved seed on every rank (rank 0 draws fresh entropy for None)."""
    from distsketch.random import resolve_seed

    return comm.bcast(resolve_seed(seed) if comm.rank == 0 else None, root=0)


def integrity_arguments(p) -> None:
    """The ``--allow-missing-chunks`` flag of the drivers that read Zarr arrays."""
    p.add_argument("--allow-missing-chunks", action="store_true",
                   help="read chunks absent from a Zarr store as its fill value instead of refusing the store")


def check_out(comm, out: str, overwrite: bool, inputs=()) -> None:
    """Refuse, before any work, an output the command line would refuse (see
    ``distsketch.cli.check_output_path``: --overwrite replaces only a distsketch output)."""
    from distsketch.cli import check_output_path

    check_output_path(out, overwrite, inputs)


def tmp_path(out: str, comm) -> str:
    return comm.bcast(f"{out}.tmp-{os.getpid()}" if comm.rank == 0 else None, root=0)


def publish(comm, tmp: str, out: str) -> None:
    """After every rank has written its part: rank 0 renames the finished group into place."""
    comm.Barrier()
    if comm.rank == 0:
        import zarr

        from distsketch.cli import _MARKER, publish_output

        zarr.open_group(tmp, mode="r+").attrs[_MARKER] = {"output": True}  # a later --overwrite may replace it
        publish_output(tmp, out)
    comm.Barrier()


def dumps(obj) -> str:
    return json.dumps(obj, default=float)
