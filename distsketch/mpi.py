"""What the MPI drivers share: arguments, fail-fast on every rank, rank-0 output, the row range
of each rank, and atomic publication of results.

The drivers in ``drivers/`` (``mpiexec -n P python drivers/lstsq.py ...``) are thin: they parse
their arguments with the helpers here, open the data with :func:`open_rows`, call the library
(``distsketch.lstsq``, ``distsketch.svd``, ``distsketch.passes``) and write their output with
:func:`staging_path` / :func:`publish`. A driver of your own does the same::

    import sys
    import distsketch
    from distsketch import mpi

    def body(comm, args):
        mpi.check_out(comm, args.out, args.overwrite)
        data = mpi.open_rows(args.A, comm)
        res = distsketch.svd(data, rank=args.rank, seed=mpi.shared_seed(comm, args.seed))
        mpi.write_result(comm, args.out, {"s": res.s}, {"passes": res.passes})
        mpi.emit(comm, {"out": args.out, "passes": res.passes})
        return 0

    sys.exit(mpi.run_guarded("my-svd", lambda comm: body(comm, parse())))

Failure: an exception on any rank prints ``[rank r] <driver>: error: <message>`` on stderr,
removes the output being staged, and aborts the whole communicator with exit code 2, so no rank
is left waiting in a collective. Progress goes to stderr (rank 0); results (one JSON line) to
stdout (rank 0).

Importing this module does not import mpi4py (nor start MPI); the functions that need it do.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

from ._atomic import discard
from ._outputs import check_output_path, publish_output, temporary_name
from ._threads import rank_blas_threads
from .backends.mpi import MPIRowData
from .cli import require_model_paths, zoo_arguments, zoo_options
from .solve._checkpoint import MPICheckpoint
from .spectral._zoo import plan_zoo, read_zoo, run_model

__all__ = [
    "comm_world", "run_guarded", "log", "emit", "dumps", "shared_seed",
    "integrity_arguments", "output_arguments",
    "check_out", "open_rows", "open_operand", "open_checkpoint", "compressor",
    "staging_path", "publish", "write_result",
    "rank_blas_threads", "MPIRowData", "MPICheckpoint",
    "zoo_arguments", "zoo_options", "require_model_paths", "plan_zoo", "read_zoo", "run_model",
]

_STAGED: list[str] = []  # outputs being written on this rank, removed if the driver fails


def comm_world():
    """``MPI.COMM_WORLD``."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def log(comm, msg: str) -> None:
    """A progress line on stderr, from rank 0 only, with the time of day."""
    if comm.rank == 0:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def dumps(obj) -> str:
    """JSON of a result (numpy scalars as floats)."""
    return json.dumps(obj, default=float)


def emit(comm, obj) -> None:
    """The driver's result: one JSON line on stdout, from rank 0 only."""
    if comm.rank == 0:
        print(dumps(obj), flush=True)


def run_guarded(name: str, body, comm=None) -> int:
    """Run ``body(comm)``; on an exception on any rank, say so on stderr, remove what this rank
    was staging, and abort every rank with exit code 2."""
    comm = comm_world() if comm is None else comm
    try:
        return body(comm)
    except SystemExit:
        raise
    except BaseException as exc:  # any failure: tell, then take every rank down with us
        sys.stderr.write(f"[rank {comm.rank}] {name}: error: {exc}\n")
        if os.environ.get("DISTSKETCH_DEBUG"):
            traceback.print_exc()
        sys.stderr.flush()
        _discard_staged()
        time.sleep(0.5)  # let mpiexec forward the message before Abort tears the job down
        comm.Abort(2)
        return 2


def _discard_staged() -> None:
    while _STAGED:
        discard(_STAGED.pop())


def shared_seed(comm, seed):
    """The same resolved seed on every rank (rank 0 draws fresh entropy for None)."""
    from .random import resolve_seed

    return comm.bcast(resolve_seed(seed) if comm.rank == 0 else None, root=0)


def integrity_arguments(p) -> None:
    """The ``--allow-missing-chunks`` flag of the drivers that read Zarr arrays."""
    p.add_argument("--allow-missing-chunks", action="store_true",
                   help="read chunks absent from a Zarr store as its fill value instead of refusing the store")


def output_arguments(p) -> None:
    """``--out`` and ``--overwrite``."""
    p.add_argument("--out", required=True, help="Zarr group to write the result into (published atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier distsketch output at --out (nothing else is ever replaced)")


def check_out(comm, out: str, overwrite: bool, inputs=()) -> None:
    """Refuse, before any work and on every rank, an output the command line would refuse
    (``--overwrite`` replaces only a distsketch output; see ``distsketch._outputs``)."""
    check_output_path(out, overwrite, inputs)


def open_rows(path: str, comm, *, progress: bool = False, allow_missing_chunks: bool = False):
    """The Zarr array at ``path`` as an :class:`~distsketch.backends.mpi.MPIRowData`: every rank
    opens it and reads only its own range of rows (whole chunks)."""
    return MPIRowData.from_zarr(path, comm, progress=progress, allow_missing_chunks=allow_missing_chunks)


def open_operand(path: str, name: str = "b", *, ndim=(1, 2), allow_missing_chunks: bool = False):
    """A small Zarr operand (``b``) read whole, checked like the command line checks it."""
    from ._inputs import as_matrix

    return as_matrix(path, name, ndim=ndim, allow_missing_chunks=allow_missing_chunks)


def open_checkpoint(comm, folder: str | None, name: str):
    """The per-rank checkpoint ``folder/name.rankR.npz`` (None without a folder)."""
    if not folder:
        return None
    os.makedirs(folder, exist_ok=True)
    return MPICheckpoint(os.path.join(folder, name), comm)


def compressor():
    """The codec of distsketch's Zarr outputs (zstd with a content checksum)."""
    from .problems import _zstd

    return _zstd()


def staging_path(comm, out: str) -> str:
    """The folder every rank writes the output into before :func:`publish` (beside ``out``,
    chosen on rank 0); removed if the driver fails."""
    tmp = comm.bcast(temporary_name(out) if comm.rank == 0 else None, root=0)
    _STAGED.append(tmp)
    return tmp


def publish(comm, tmp: str, out: str) -> None:
    """After every rank has written its part: rank 0 marks the group as ours and renames it
    into place atomically (an earlier distsketch output there is replaced)."""
    comm.Barrier()
    if comm.rank == 0:
        publish_output(tmp, out)
    if tmp in _STAGED:
        _STAGED.remove(tmp)
    comm.Barrier()


def write_result(comm, out: str, arrays: dict, attrs: dict) -> None:
    """Write small arrays (held on rank 0) and attributes as the Zarr group ``out``, atomically."""
    import numpy as np
    import zarr

    tmp = staging_path(comm, out)
    if comm.rank == 0:
        g = zarr.open_group(tmp, mode="w")
        for key, arr in arrays.items():
            arr = np.asarray(arr)
            fill = np.nan if arr.dtype.kind in "fc" else None
            g.create_array(key, shape=arr.shape, dtype=arr.dtype, chunks=arr.shape, fill_value=fill,
                           compressors=compressor())[...] = arr
        g.attrs.update(attrs)
    publish(comm, tmp, out)
