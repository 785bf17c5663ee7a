"""Benchmark: distsketch.lstsq against LAPACK (in memory) and dask.array.linalg.lstsq (out of core),
with the floor each method is up against measured in the same run.

(a) In memory, the RandLAPACK talk's problem: A 100,000 x 2,000, cond 1e5, ||A A^+ b|| = 0.95 ||b||,
    against scipy gelsd (and numpy.linalg.lstsq). Target: >= 3x gelsd, normal-equation error <= 10x
    gelsd's, within 1.3x of the measured floor.
(b) Out of core: the same problem and a 2,000,000 x 200 one as Zarr, a 2-worker LocalCluster with one
    thread (and one BLAS thread) per worker and a memory limit below the matrix (0.75x at n = 2,000,
    0.5x at n = 200; at least 1 GB, which only matters for reduced sizes), against
    dask.array.linalg.lstsq. Targets: >= 5x dask at n = 2,000 with <= 3 reads, >= 3x at n = 200.

Floors, measured in the same process before the methods (medians of --repeats):
  in memory   read_pair_s  A @ v and A.T @ u with all BLAS threads (one LSQR iteration's data traffic)
              syrk_s       A.T A by one multithreaded dsyrk (m n^2 flops)
              gemm_GFLOPs  a 2000^3 GEMM, one BLAS thread and all of them
              sketch_{2n,fn}_s, factor_{2n,fn}_s   the sparse sketch pass of A and the factor of the sketch
                           (Cholesky of its Gram, as lstsq runs it while cond(S A) <= 1e6) at d = 2n and
                           at the d = f n the cost model chooses for LSQR (lsqr_sketch_factor)
  out of core read_s       a bare read pass of the store (sum of every chunk) on the cluster
              gemm_1t_GFLOPs on each worker (one BLAS thread), summed over workers = F
A method's floor is what its algorithm must spend at those rates (each pass costs the larger of its
read and its flops; the dense n^3 work at the GEMM rate):
  sketch_precondition  sketch(fn) + factor(fn) + (passes - 1) x read_pair
  normal_cholqr        max(read, SYRK) + n^3 / (3 F) + (passes - 1) x read_pair   (no sketch)
  cholqr               sketch(2n) + factor(2n) + max(read, 3 m n^2 / F) + (passes - 2) x read_pair
and "fraction_of_floor" = median seconds / floor (1.0 is at the floor).

Every distsketch run uses atol = btol = --atol (default 1e-14: the target is gelsd's accuracy; lstsq's
own default, 1e-12, stops with a normal-equation error ~100x gelsd's). Accuracy of every x: the normal-equation error ||A^T r|| / (||A||_2 ||r||) (||A||_2 from the
generator), forward errors against gelsd's x and the generator's exact x. Passes: counted by
distsketch's backend. Usage (the full run wants a quiet machine, ~25 GB RAM for n = 200):

    python scripts/bench/lstsq.py --out scripts/bench/results/lstsq.json [--part memory|ooc|all]
    python scripts/bench/lstsq.py --m 20000 --n 500 --tall-m 200000 --tall-n 50 --out /tmp/lstsq-small.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, median, timed, write_json  # noqa: E402

METHODS = ("sketch_precondition", "normal_cholqr", "cholqr", "auto")


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


def reps(fn, k):
    ts, out = [], None
    for _ in range(k):
        t, out = timed(fn)
        ts.append(t)
    return median(ts), out


def gemm_rate(threads, size=2000):
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((size, size))
    with threadpool_limits(threads):
        a @ a
        t, _ = reps(lambda: a @ a, 3)
    return 2 * size**3 / t


def _lsqr_factor(m, n, atol, lazy=False):
    """The sketch size factor f (d = f n) lstsq's cost model picks for LSQR (nominal rates: deterministic)."""
    from distsketch.solve.lstsq import lsqr_sketch_factor

    return lsqr_sketch_factor(m, n, lazy=lazy, itemsize=8, atol=atol)


def memory_floors(A, b, repeats, atol):
    """The rates and dense steps the in-memory methods are made of, on this machine, now."""
    import scipy.linalg
    from scipy.linalg import blas

    from distsketch import passes
    from distsketch.backends import as_rowdata
    from distsketch.operators import make_operator

    m, n = A.shape
    fl = {"gemm_1t_GFLOPs": gemm_rate(1) / 1e9, "gemm_GFLOPs": gemm_rate(os.cpu_count()) / 1e9}
    v, u = np.ones(n), np.ones(m)
    fl["read_pair_s"] = reps(lambda: (A @ v, A.T @ u), max(3, repeats))[0]
    fl["syrk_s"] = reps(lambda: blas.dsyrk(1.0, A.T, trans=0), 1)[0]
    from distsketch.solve._precond import build_precond

    f = _lsqr_factor(m, n, atol)
    fl["lsqr_sketch_factor"] = f
    for k, label in ((2, "2n"), (f, "fn")):
        data = as_rowdata(A)  # row blocks as lstsq sets them for this sketch size
        data.prefer_sketch_blocks(k * n)
        op = make_operator("sparse_sign", k * n, m, seed=0)
        fl[f"sketch_{label}_s"], sk = reps(lambda: passes.left_sketch(data, op, extra=[b], dtype=np.float64),
                                           repeats)
        fl[f"factor_{label}_s"] = reps(lambda: build_precond(sk[0], sk[1][:, 0], method="gram"), repeats)[0]
        fl[f"qr_{label}_s"] = reps(lambda: scipy.linalg.qr(np.asfortranarray(sk[0]), mode="r",
                                                           check_finite=False), 1)[0]
    F = fl["gemm_GFLOPs"] * 1e9
    fl["chol_n3_s"] = n**3 / (3 * F)
    fl["gram_AN_s"] = 3.0 * m * n * n / F
    return fl


def floor_of(meth, passes, fl):
    """Seconds the algorithm of ``meth`` must spend at the measured rates (see the module docstring)."""
    rp = fl["read_pair_s"]
    if meth == "sketch_precondition":
        return fl["sketch_fn_s"] + fl["factor_fn_s"] + (passes - 1) * rp
    if meth == "normal_cholqr":
        return max(fl.get("read_s", 0.0), fl["syrk_s"]) + fl["chol_n3_s"] + (passes - 1) * rp
    if meth == "cholqr":
        return fl["sketch_2n_s"] + fl["factor_2n_s"] + max(fl.get("read_s", 0.0), fl["gram_AN_s"]) + (passes - 2) * rp
    return None


def bench_memory(p, repeats, base_repeats, atol):
    import scipy.linalg

    import distsketch

    A, b = p.numpy("A"), p.numpy("b")
    m, n = A.shape
    out = {"shape": [m, n], "cond": p.cond, "frac_in_range": 0.95, "atol": atol, "btol": atol}
    fl = memory_floors(A, b, repeats, atol)
    out["floors"] = fl
    print("floors " + ", ".join(f"{k} {v:.3g}" for k, v in fl.items()), flush=True)
    runs = {}
    t, (xg, *_rest) = timed(scipy.linalg.lstsq, A, b, lapack_driver="gelsd")
    times = [t] + [timed(scipy.linalg.lstsq, A, b, lapack_driver="gelsd")[0] for _ in range(base_repeats - 1)]
    runs["scipy_gelsd"] = {"seconds": times, "x": xg, "passes": None}
    print(f"gelsd {median(times):.2f} s", flush=True)
    ts = []
    for _ in range(base_repeats):
        t, x = timed(lambda: np.linalg.lstsq(A, b, rcond=None)[0])
        ts.append(t)
    runs["numpy_lstsq"] = {"seconds": ts, "x": x, "passes": None}
    for meth in METHODS:
        ts, res = [], None
        for r in range(repeats):
            t, res = timed(distsketch.lstsq, A, b, method=meth, seed=r, atol=atol, btol=atol)
            ts.append(t)
        floor = floor_of(res.method, res.passes, fl)
        runs[meth] = {"seconds": ts, "x": res.x, "passes": res.passes, "method_ran": res.method,
                      "reason": res.reason, "istop": res.istop, "iterations": res.iterations,
                      "floor_s": floor, "fraction_of_floor": median(ts) / floor if floor else None}
        print(f"{meth} ({res.method}) {median(ts):.2f} s, {res.passes} passes, floor {floor:.2f} s", flush=True)
    tg = median(runs["scipy_gelsd"]["seconds"])
    for label, run in runs.items():
        x = run.pop("x")
        run.update(median_s=median(run["seconds"]), speedup_vs_gelsd=tg / median(run["seconds"]),
                   **accuracy(A, b, x, p.s[0], xg, p.x))
    out["runs"] = runs
    out["target"] = ">= 3x gelsd, normal-equation error <= 10x gelsd's, within 1.3x of the measured floor"
    best = min((r for k, r in runs.items() if k in METHODS), key=lambda r: r["median_s"])
    out["best_speedup_vs_gelsd"] = best["speedup_vs_gelsd"]
    return out, xg


def _worker_gemm_1t():
    from threadpoolctl import threadpool_info

    threads = [d.get("num_threads") for d in threadpool_info() if d.get("user_api") == "blas"]
    return {"gemm_1t": gemm_rate(1, 1000), "blas_threads": threads}


def bench_ooc(p, repeats, workers, memory_limit, x_gelsd, lsqr=False, atol=1e-12):
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    import distsketch

    A_np = p.numpy("A")
    b_np = p.numpy("b")
    m, n = p.shape
    out = {"shape": [m, n], "atol": atol, "btol": atol, "matrix_GB": m * n * 8 / 1e9, "workers": workers, "memory_limit_per_worker_GB":
           memory_limit / 1e9, "chunks": p.attrs["chunks"]}
    runs = {}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        # floors: one BLAS thread per worker (the workers' own setting, recorded), a bare read of the store
        wk = client.run(_worker_gemm_1t)
        F = sum(v["gemm_1t"] for v in wk.values())
        # the bare read through distsketch's reader (open_array: direct chunk decoding) is the floor of
        # our methods; dask's own route (da.from_zarr, Zarr's codec pipeline) is recorded beside it
        A0 = p.dask("A")
        t_read = reps(lambda: dask.compute(A0.sum(axis=0)), repeats)[0]
        Az = da.from_zarr(os.path.join(p.path, "A"))
        t_read_zarr = reps(lambda: dask.compute(Az.sum(axis=0)), repeats)[0]
        fl = {"read_s": t_read, "read_pair_s": t_read, "read_da_from_zarr_s": t_read_zarr,
              "workers_gemm_1t_GFLOPs": F / 1e9,
              "worker_blas_threads": [v["blas_threads"] for v in wk.values()],
              "syrk_s": m * n * n / F, "gram_AN_s": 3.0 * m * n * n / F, "chol_n3_s": n**3 / (3 * F)}
        # the sketch and its QR, as lstsq runs them here (a sketch pass is at least a read)
        from distsketch import passes
        from distsketch.backends import as_rowdata
        from distsketch.operators import make_operator
        from distsketch.solve._precond import build_precond

        f = _lsqr_factor(m, n, atol, lazy=True)
        fl["lsqr_sketch_factor"] = f
        for k, label in ((2, "2n"), (f, "fn")):
            data = as_rowdata(p.dask("A"))
            op = make_operator("sparse_sign", k * n, m, seed=0)
            fl[f"sketch_{label}_s"], sk = reps(lambda: passes.left_sketch(data, op, dtype=np.float64), 1)
            fl[f"factor_{label}_s"] = reps(lambda: build_precond(sk[0], None, method="gram"), repeats)[0]
        out["floors"] = fl
        print(f"ooc {m}x{n} floors " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in fl.items()), flush=True)

        def run(label, fn, k=repeats, route=p.dask):
            ts, x, extra = [], None, {}
            for r in range(k):
                A, b = route("A"), route("b")
                t, (x, extra) = timed(fn, A, b, r)
                ts.append(t)
            meth = extra.get("method_ran")
            floor = floor_of(meth, extra["passes"], fl) if meth else None
            runs[label] = {"seconds": ts, "median_s": median(ts), "x": x, "floor_s": floor,
                           "fraction_of_floor": median(ts) / floor if floor else None, **extra}
            print(f"ooc {m}x{n} {label}: {median(ts):.2f} s, passes {extra.get('passes')}"
                  + (f", floor {floor:.2f} s" if floor else ""), flush=True)

        def dask_lstsq(A, b, r):
            x, *_ = da.linalg.lstsq(A, b)
            # TSQR: one read of A by construction
            return np.asarray(x.compute()), {"passes": 1}

        def ours(meth):
            def f(A, b, r):
                res = distsketch.lstsq(A, b, method=meth, seed=r, atol=atol, btol=atol)
                return res.x, {"passes": res.passes, "method_ran": res.method, "istop": res.istop,
                               "reason": res.reason}
            return f

        # the baseline as a dask user runs it (da.from_zarr), and on distsketch's reader for comparison
        run("dask_linalg_lstsq", dask_lstsq, route=lambda name: da.from_zarr(os.path.join(p.path, name)))
        run("dask_linalg_lstsq_on_open_array", dask_lstsq)
        for meth in ("normal_cholqr", "cholqr", "auto"):
            run(meth, ours(meth))
        if lsqr:  # ~40 reads of A: slow out of core by design
            run("sketch_precondition", ours("sketch_precondition"), k=1)
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
    ap.add_argument("--ooc-lsqr", action="store_true", help="also time sketch_precondition out of core (~40 reads)")
    ap.add_argument("--workdir", default="bench-data")
    ap.add_argument("--atol", type=float, default=1e-14,
                    help="atol = btol of every distsketch run (default 1e-14: the accuracy target is gelsd's level; "
                         "lstsq's own default is 1e-12)")
    ap.add_argument("--ooc-cases", default="wide,tall", help="out-of-core problems: wide (--m x --n), tall "
                    "(--tall-m x --tall-n)")
    ap.add_argument("--out", default="scripts/bench/results/lstsq.json")
    a = ap.parse_args(argv)

    import scipy.linalg

    result = {"benchmark": "lstsq", "environment": environment(), "repeats": a.repeats,
              "load_average_at_start": os.getloadavg()}
    p1 = problem(a.workdir, a.m, a.n, max(1000, a.m // 10))
    xg1 = None
    if a.part in ("memory", "all"):
        result["in_memory"], xg1 = bench_memory(p1, a.repeats, a.baseline_repeats, a.atol)
        write_json(a.out, result)
    if a.part in ("ooc", "all") and "wide" in a.ooc_cases:
        if xg1 is None:
            xg1 = scipy.linalg.lstsq(p1.numpy("A"), p1.numpy("b"), lapack_driver="gelsd")[0]
        nbytes1 = a.m * a.n * 8
        result["out_of_core_n%d" % a.n] = bench_ooc(p1, a.repeats, a.workers, max(int(nbytes1 * 0.75), 10**9), xg1,
                                                         a.ooc_lsqr, a.atol)
        write_json(a.out, result)
    if a.part in ("ooc", "all") and "tall" in a.ooc_cases:
        p2 = problem(a.workdir, a.tall_m, a.tall_n, max(1000, a.tall_m // 40))
        xg2 = scipy.linalg.lstsq(p2.numpy("A"), p2.numpy("b"), lapack_driver="gelsd")[0]
        nbytes2 = a.tall_m * a.tall_n * 8
        result["out_of_core_n%d" % a.tall_n] = bench_ooc(p2, a.repeats, a.workers, max(int(nbytes2 * 0.5), 10**9), xg2,
                                                         a.ooc_lsqr, a.atol)
        result["load_average_at_end"] = os.getloadavg()
        write_json(a.out, result)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
