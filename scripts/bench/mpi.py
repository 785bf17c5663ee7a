"""Benchmark: strong scaling of the MPI backend (1 and 2 ranks) against the Dask path, one run.

A compute-bound least-squares problem held in memory by the ranks (default 1,000,000 x 200,
cond 1e5), solved with sketch-preconditioned LSQR (one fused pass and one Allreduce per
iteration) and with cholqr; the same problem on a 2-worker Dask LocalCluster from the same
Zarr store. Also the bytes each rank sends per LSQR iteration (one Allreduce of A.T w and
||w||^2, n + 1 doubles) against the theoretical n-vector allreduce (8 n bytes).
Usage:

    python scripts/bench/mpi.py --out bench-results/mpi.json [--m 1000000 --n 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, median, timed, write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--m", type=int, default=1_000_000)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default="bench-data")
    ap.add_argument("--out", default="bench-results/mpi.json")
    a = ap.parse_args(argv)

    from distributed import Client, LocalCluster

    import distsketch
    from distsketch.problems import generate_problem, open_problem

    path = os.path.join(a.workdir, f"mpi-{a.m}x{a.n}.zarr")
    p = open_problem(path) if os.path.exists(path) else generate_problem(
        path, a.m, a.n, cond=1e5, frac_in_range=0.95, chunks=50_000, seed=0, progress=True)
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    helper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_mpi_lstsq.py")
    result = {"benchmark": "mpi", "shape": [a.m, a.n], "environment": environment(), "repeats": a.repeats,
              "note": "MPI ranks hold their rows in memory; times exclude the initial read of A"}
    for method in ("sketch_precondition", "cholqr"):
        entry = {}
        for ranks in (1, 2):
            out = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, helper, p.path, method, str(a.repeats)],
                                 capture_output=True, text=True, check=True, timeout=3600)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            x = np.array(r.pop("x"))
            r.update(median_s=median(r["seconds"]), forward_error=float(np.linalg.norm(x - p.x) / np.linalg.norm(p.x)))
            entry[f"mpi_{ranks}"] = r
            print(f"{method} MPI {ranks} rank(s): {r['median_s']:.2f} s, {r['passes']} passes, "
                  f"{r['last_pass_allreduce_bytes']:.0f} B in the last pass's Allreduce", flush=True)
        entry["strong_scaling_speedup_2_vs_1"] = entry["mpi_1"]["median_s"] / entry["mpi_2"]["median_s"]
        # Dask path, in memory on the workers (persisted), same problem and method
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster, Client(cluster):
            A = p.dask("A").persist()
            b = p.dask("b").persist()
            ts, res = [], None
            for r in range(a.repeats):
                t, res = timed(distsketch.lstsq, A, b, method=method, seed=r)
                ts.append(t)
        entry["dask_2_workers"] = {"seconds": ts, "median_s": median(ts), "passes": res.passes,
                                   "forward_error": float(np.linalg.norm(res.x - p.x) / np.linalg.norm(p.x))}
        print(f"{method} Dask 2 workers: {median(ts):.2f} s", flush=True)
        entry["mpi_2_vs_dask_speedup"] = entry["dask_2_workers"]["median_s"] / entry["mpi_2"]["median_s"]
        result[method] = entry
    lsqr = result["sketch_precondition"]["mpi_2"]
    result["communication"] = {
        "measured_bytes_per_iteration_per_rank": lsqr["last_pass_allreduce_bytes"],
        "theoretical_n_vector_allreduce_bytes": 8 * a.n,
        "ratio": lsqr["last_pass_allreduce_bytes"] / (8 * a.n),
        "allreduce_calls_per_solve": lsqr["allreduce_calls"],
        "bytes_reduced_per_solve": lsqr["bytes_reduced_total"],
        "note": "one Allreduce per pass: A.T w (n doubles) and ||w||^2 (1 double) packed together in LSQR's "
                "fused step; the per-solve total also counts the sketch (d x n) and the setup reductions",
    }
    write_json(a.out, result)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
