"""Helper of scripts/bench/mpi.py, run under mpiexec: time one lstsq on the MPI backend."""

import json
import sys
import time

from mpi4py import MPI

import distsketch
from distsketch._inputs import as_matrix
from distsketch.backends.mpi import MPIRowData


def main():
    path, method, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    comm = MPI.COMM_WORLD
    data0 = MPIRowData.from_zarr(f"{path}/A", comm)  # read once; timings below are compute + comm
    b = as_matrix(f"{path}/b", "b", ndim=(1, 2))
    times, res, per_iter = [], None, None
    for r in range(reps):
        data = MPIRowData(data0.A_local, data0.r0, data0.shape[0], comm, source=data0.source)
        comm.Barrier()
        t = time.perf_counter()
        res = distsketch.lstsq(data, b, method=method, seed=r)
        comm.Barrier()
        times.append(time.perf_counter() - t)
        per_iter = data.last_allreduce_bytes  # the last pass: an LSQR step or a refinement step
        calls = data.allreduce_calls
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "seconds": times, "passes": res.passes, "iterations": res.iterations,
                          "method": res.method, "x": res.x.tolist(), "bytes_reduced_total": data.bytes_reduced,
                          "allreduce_calls": calls, "last_pass_allreduce_bytes": per_iter}))


if __name__ == "__main__":
    main()
