"""Benchmark: distsketch.lstsq against LAPACK (in memory) and dask.array.linalg.lstsq (out of core).

(a) In memory, the RandLAPACK talk's problem: A 100,000 x 2,000, cond 1e5, ||A A^+ b|| = 0.95 ||b||.
    Each method against scipy gelsd, gelsy and numpy.linalg.lstsq in the same run.
    Target: >= 10x faster than gelsd at equal accuracy.
(b) Out of core: the same problem and a 2,000,000 x 200 one as Zarr, a 2-worker LocalCluster whose
    per-worker memory limit is below the matrix size, against dask.array.linalg.lstsq (x only).
    Target: >= 5x faster at n = 2,000, faster at n = 200, <= 4 passes for full accuracy.

Accuracy of every solution x: the normal-equation error ||A^T r|| / (||A||_2 ||r||) (||A||_2 known
from the generator), the forward error against gelsd's x and against the generator's exact x.
Passes: distsketch's are counted by its backend; out of core every method's chunk reads are also
counted from the scheduler's task stream (reads of A's chunks / number of chunks). Medians over
--repeats runs. Usage:

    python scripts/bench/lstsq.py --out bench-results/lstsq.json [--part memory|ooc|all]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, median, timed, write_json  # noqa: E402

METHODS = ("sketch_solve", "sketch_precondition", "cholqr", "auto")


def accuracy(A, b, x, s_max, x_ref, x_true):
    x = np.asarray(x, dtype=np.float64)
    r = b - A @ x
    return {"normal_equation_error": float(np.linalg.norm(A.T @ r) / (s_max * np.linalg.norm(r))),
            "forward_error_vs_gelsd": float(np.linalg.norm(x - x_ref) / np.linalg.norm(x_ref)),
            "forward_error_vs_exact": float(np.linalg.norm(x - x_true) / np.linalg.norm(x_true)),
            "residual_norm": float(np.linalg.norm(r))}


def problem(workdir, m, n, chunk_rows):
    from distsketch.problems import generate_problem, open_problem

    path = os.path.join(workdir, f"lstsq-{m}x{n}-c{chunk_rows}.zarr")
    if os.path.exists(path):
        return open_problem(path)
    print(f"generating {path}", flush=True)
    return generate_problem(path, m, n, cond=1e5, frac_in_range=0.95, chunks=chunk_rows, seed=0, progress=True)


def bench_memory(p, repeats, base_repeats):
    import scipy.linalg

    import distsketch

    A, b = p.numpy("A"), p.numpy("b")
    out = {"shape": list(A.shape), "cond": p.cond, "frac_in_range": 0.95}
    runs = {}
    t, (xg, *_rest) = timed(scipy.linalg.lstsq, A, b, lapack_driver="gelsd")
    times = [t] + [timed(scipy.linalg.lstsq, A, b, lapack_driver="gelsd")[0] for _ in range(base_repeats - 1)]
    runs["scipy_gelsd"] = {"seconds": times, "x": xg, "passes": None}
    print(f"gelsd {median(times):.2f} s", flush=True)
    for label, fn in (("scipy_gelsy", lambda: scipy.linalg.lstsq(A, b, lapack_driver="gelsy")[0]),
                      ("numpy_lstsq", lambda: np.linalg.lstsq(A, b, rcond=None)[0])):
        ts, x = [], None
        for _ in range(base_repeats):
            t, x = timed(fn)
            ts.append(t)
        runs[label] = {"seconds": ts, "x": x, "passes": None}
        print(f"{label} {median(ts):.2f} s", flush=True)
    for meth in METHODS:
        ts, res = [], None
        for r in range(repeats):
            t, res = timed(distsketch.lstsq, A, b, method=meth, seed=r)
            ts.append(t)
        runs[meth] = {"seconds": ts, "x": res.x, "passes": res.passes, "method_ran": res.method,
                      "reason": res.reason, "istop": res.istop, "iterations": res.iterations}
        print(f"{meth} ({res.method}) {median(ts):.2f} s, {res.passes} passes", flush=True)
    tg = median(runs["scipy_gelsd"]["seconds"])
    for label, run in runs.items():
        x = run.pop("x")
        run.update(median_s=median(run["seconds"]), speedup_vs_gelsd=tg / median(run["seconds"]),
                   **accuracy(A, b, x, p.s[0], xg, p.x))
    out["runs"] = runs
    out["target"] = ">= 10x faster than gelsd at equal accuracy"
    best = min((r for k, r in runs.items() if k in ("sketch_precondition", "cholqr", "auto")),
               key=lambda r: r["median_s"])
    out["best_full_accuracy_speedup_vs_gelsd"] = best["speedup_vs_gelsd"]
    return out, xg


def bench_ooc(p, repeats, workers, memory_limit, x_gelsd, slow_repeats=1):
    import dask.array as da
    from distributed import Client, LocalCluster, get_task_stream

    import distsketch

    A_np = p.numpy("A")
    b_np = p.numpy("b")
    m, n = p.shape
    out = {"shape": [m, n], "matrix_GB": m * n * 8 / 1e9, "workers": workers, "memory_limit_per_worker_GB":
           memory_limit / 1e9, "chunks": p.attrs["chunks"]}
    runs = {}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        nchunks = None

        def lazy():
            A = da.from_zarr(os.path.join(p.path, "A"))
            return A, da.from_zarr(os.path.join(p.path, "b")), A.name

        def run(label, fn, reps=repeats):
            nonlocal nchunks
            ts, reads, x, extra = [], [], None, {}
            for r in range(reps):
                A, b, name = lazy()
                nchunks = A.numblocks[0] * A.numblocks[1]
                with get_task_stream(client) as ts_ctx:
                    t, res = timed(fn, A, b, r)
                ts.append(t)
                reads.append(sum(1 for tt in ts_ctx.data if name in str(tt.get("key", ""))))
                x, extra = res
            counted = reads[-1] / nchunks if reads[-1] else None  # fused task names hide the reads of A
            runs[label] = {"seconds": ts, "median_s": median(ts), "passes_counted_from_task_stream": counted, "x": x,
                           **extra}
            print(f"ooc {m}x{n} {label}: {median(ts):.2f} s, passes {extra.get('passes', counted)}", flush=True)

        def dask_lstsq(A, b, r):
            x, *_ = da.linalg.lstsq(A, b)
            # TSQR: one read of A by construction (each chunk key appears once in the graph)
            return np.asarray(x.compute()), {"passes": 1}

        def ours(meth):
            def f(A, b, r):
                res = distsketch.lstsq(A, b, method=meth, seed=r)
                return res.x, {"passes": res.passes, "method_ran": res.method, "istop": res.istop,
                               "reason": res.reason}
            return f

        run("dask_linalg_lstsq", dask_lstsq)
        for meth in ("cholqr", "auto"):
            run(meth, ours(meth))
        # ~40 reads of A: slow out of core by design; fewer repeats keep the benchmark short
        run("sketch_precondition", ours("sketch_precondition"), reps=slow_repeats)
    td = runs["dask_linalg_lstsq"]["median_s"]
    for label, rr in runs.items():
        x = rr.pop("x")
        rr.update(speedup_vs_dask=td / rr["median_s"], **accuracy(A_np, b_np, x, p.s[0], x_gelsd, p.x))
    out["runs"] = runs
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["memory", "ooc", "all"], default="all")
    ap.add_argument("--m", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=2_000)
    ap.add_argument("--tall-m", type=int, default=2_000_000)
    ap.add_argument("--tall-n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default="bench-data")
    ap.add_argument("--out", default="bench-results/lstsq.json")
    a = ap.parse_args(argv)

    import scipy.linalg

    result = {"benchmark": "lstsq", "environment": environment(), "repeats": a.repeats}
    p1 = problem(a.workdir, a.m, a.n, 10_000)
    xg1 = None
    if a.part in ("memory", "all"):
        result["in_memory"], xg1 = bench_memory(p1, a.repeats, a.baseline_repeats)
        write_json(a.out, result)
    if a.part in ("ooc", "all"):
        if xg1 is None:
            xg1 = scipy.linalg.lstsq(p1.numpy("A"), p1.numpy("b"), lapack_driver="gelsd")[0]
        nbytes1 = a.m * a.n * 8
        result["out_of_core_n%d" % a.n] = bench_ooc(p1, a.repeats, a.workers, int(nbytes1 * 0.75), xg1)
        write_json(a.out, result)
        p2 = problem(a.workdir, a.tall_m, a.tall_n, 50_000)
        xg2 = scipy.linalg.lstsq(p2.numpy("A"), p2.numpy("b"), lapack_driver="gelsd")[0]
        nbytes2 = a.tall_m * a.tall_n * 8
        result["out_of_core_n%d" % a.tall_n] = bench_ooc(p2, a.repeats, a.workers, int(nbytes2 * 0.5), xg2)
        write_json(a.out, result)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
