"""Benchmark: rank-50 SVD of slowly decaying Zarr matrices, out of core and in memory.

Out of core (2-worker LocalCluster, same store): distsketch.svd with each method against
dask.array.linalg.svd_compressed with n_power_iter 0, 1, 2, 4. In memory (numpy, same data):
distsketch.svd against sklearn.utils.extmath.randomized_svd (n_iter 'auto' and 2).
Matrices (defaults): 200,000 x 1,000 and 1,000,000 x 500, s_i = i^-0.5.
Target: >= 2x faster than svd_compressed at equal or better error.

Error: ||A - U diag(s) Vt||_F / ||A - A_50||_F, computed exactly in-process from
||A||_F^2 - 2 tr(diag(s) U.T A V) + ||s||^2 (one numpy pass over A), with the optimum known
from the generator's singular values. Passes: distsketch's are counted by its backend;
svd_compressed's are its algorithm's 2q + 2 (one read for the range, two per power
iteration, one for B), labelled as such. Medians over --repeats runs; both times include computing U
(distsketch returns it lazy; svd_compressed's is computed with s and V).

Floors (measured in the same run, on the same cluster, see _floors.py): a bare read of the store
and the GEMM rate of one BLAS thread per worker (a row chunk times an n x l block). Each
out-of-core method is reported as a multiple of the floor its algorithm predicts,
max(reads x read time, flops / aggregate GEMM rate); the flops are 2 m n per column of every
product with A (distsketch: rsvd (2q+2) l, block Krylov (3q+2) l, single pass 3l+11 for
q >= 1; svd_compressed (2q+2) l). With default worker memory both keep A in worker memory when
it fits (svd_compressed as a side effect of one big graph, distsketch by its cache='auto' rule),
so reads after the first cost no storage read and multiples below 1 appear; under the 0.4x
limit neither can.

Both sides can trade reads for columns: ``--methods block_krylov:1:40`` runs one Krylov iteration
with ``l = rank + 40`` columns a block, ``--dask-q 1:80`` runs ``svd_compressed(n_power_iter=1,
n_oversamples=80)``. Out of core a read costs more than the flops of 30 more columns, so a wider
block with fewer iterations can be faster at the same error; each entry records its
``n_oversamples``, and the speedups compare every baseline with the fastest distsketch entry at
equal or better error. Usage:

    python scripts/bench/lowrank.py --out bench-results/lowrank.json [--sizes 200000x1000,1000000x500]
    python scripts/bench/lowrank.py --sizes 100000x500 --repeats 1 --skip-memory   # reduced size
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, median, timed, write_json  # noqa: E402
from _floors import bare_read, floor, gemm_rate  # noqa: E402

K = 50


def rel_error(A, U, s, Vt, opt, fro2):
    U = np.asarray(U)
    Vt = np.asarray(Vt)
    UtAV = (U.T @ A) @ Vt.T
    err2 = fro2 - 2 * float(np.sum(s * np.diag(UtAV))) + float(np.sum(s**2))
    return float(np.sqrt(max(err2, 0.0)) / opt)


def columns_of(method, q, l, reads=None):
    """Columns of all products with A (each costs 2 m n flops a column) and reads, by algorithm.

    distsketch's rsvd and block Krylov: every read forms A Z and A.T (A Z) (2 l columns); a last
    read for B = Q.T A (l or (q+1) l columns) only when the basis was too ill-conditioned to take
    B = W R^-1 (``reads`` = the counted passes says which).
    """
    if method == "single_pass":
        return 1, l + (2 * l + 1) + 10
    if method.startswith("dask"):
        return 2 * q + 2, (2 * q + 2) * l
    reads = q + 1 if reads is None else reads
    last = (q + 1 if method == "block_krylov" else 1) * l if reads > q + 1 else 0
    return reads, (2 * q + 2) * l + last


def run_ooc(cfg, limit, p, m, n, K, record, a, entry):
    """distsketch and svd_compressed on a 2-worker LocalCluster with the given worker memory limit."""
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    import distsketch

    l = K + 10
    path = os.path.join(p.path, "A")
    with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=limit, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        workers0 = set(client.scheduler_info(n_workers=-1)["workers"])
        seen = [set(workers0)]

        def lost_since():
            """Workers that disappeared (restarted or died) since the previous method's run."""
            now = set(client.scheduler_info(n_workers=-1)["workers"])
            lost = len(seen[0] - now)
            seen[0] = now
            if lost:
                print(f"    {lost} worker(s) restarted or lost during this run", flush=True)
            return lost
        # distsketch reads through open_array (direct chunk decoding): its floor; dask's route beside it
        read = bare_read(path, a.repeats, route="distsketch")
        read_dask = bare_read(path, a.repeats, route="dask")
        rows = da.from_zarr(path).chunks[0][0]
        gemm = gemm_rate(client, (rows, n), (n, l))
        entry[cfg]["floors"] = {"bare_read": read, "bare_read_da_from_zarr": read_dask,
                                "gemm_one_thread_per_worker": gemm}
        print(f"{m}x{n} {cfg} floors: bare read {read['median_s']:.2f} s (da.from_zarr {read_dask['median_s']:.2f} s), "
              f"GEMM {gemm['aggregate_GFLOPs']:.1f} GFLOP/s "
              f"(one thread on each of {len(gemm['per_worker_GFLOPs'])} workers)", flush=True)

        def with_floor(label, q, r, passes=None, cols_per_block=l):
            reads, cols = columns_of(label, q, cols_per_block, passes)
            f = floor(reads, 2.0 * m * n * cols, read["median_s"], gemm["aggregate_GFLOPs"])
            r["floor"] = f
            r["multiple_of_floor"] = r["median_s"] / f["floor_s"]
            r["multiple_of_no_overlap_floor"] = r["median_s"] / f["no_overlap_floor_s"]
            print(f"    floor {f['floor_s']:.2f} s ({f['bound']}: {reads} reads, {f['GFLOP']:.0f} GFLOP): "
                  f"{r['multiple_of_floor']:.2f}x the floor; reads + flops {f['no_overlap_floor_s']:.2f} s: "
                  f"{r['multiple_of_no_overlap_floor']:.2f}x", flush=True)

        for dspec in (v for v in a.dask_q.split(",") if v):
            qs, _, over = dspec.partition(":")
            q, over = int(qs), int(over or 10)
            label = f"dask_svd_compressed_q{q}" + (f"_oversamples{over}" if over != 10 else "")
            ts, out = [], None
            try:
                for r in range(a.repeats):
                    Az = da.from_zarr(path)
                    t, out = timed(lambda: dask.compute(*da.linalg.svd_compressed(Az, K, n_power_iter=q,
                                                                                  n_oversamples=over, seed=r)))
                    ts.append(t)
            except Exception as exc:  # a baseline that dies under the memory limit is a result too
                entry[cfg][label] = {"failed": f"{type(exc).__name__}: {str(exc)[:200]}"}
                print(f"{m}x{n} {cfg} {label} failed: {exc}", flush=True)
                continue
            u, s, v = out
            record(cfg, label, ts, u, s, v, f"{2 * q + 2} (algorithm)",
                   {"workers_lost": lost_since(), "n_oversamples": over})
            with_floor("dask", q, entry[cfg][label], cols_per_block=K + over)
        for spec in a.methods.split(","):
            meth, _, rest = spec.partition(":")
            q, _, over = rest.partition(":")
            kw = {"n_power_iter": int(q)} if q else {}
            if over:
                kw["n_oversamples"] = int(over)
            over = kw.get("n_oversamples", 10)  # svd's default when not given
            ts, res = [], None
            for r in range(a.repeats):
                # U is computed inside the timing (svd_compressed's is): distsketch returns it lazy
                t, (res, U) = timed(lambda: _with_u(distsketch.svd(path, K, method=meth, seed=r, **kw)))
                ts.append(t)
            record(cfg, spec, ts, U, res.s, res.Vt, res.passes,
                   {"workers_lost": lost_since(), "method_ran": res.method, "reason": res.reason,
                    "n_power_iter": res.n_power_iter,
                    "error_estimate_ratio": res.error_estimate / opt_of(p, K)})
            entry[cfg][spec]["n_oversamples"] = over
            with_floor(res.method, res.n_power_iter, entry[cfg][spec], res.passes, K + over)
            if a.profile:
                entry[cfg][spec]["profile"] = profile_one(path, meth, kw)
        lost = workers0 - set(client.scheduler_info(n_workers=-1)["workers"])
        entry[cfg]["workers_restarted_or_lost"] = len(lost)
        if lost:
            print(f"{m}x{n} {cfg}: {len(lost)} worker(s) restarted or lost", flush=True)


def _with_u(res):
    return res, (res.U.compute() if hasattr(res.U, "compute") else res.U)


def profile_one(path, meth, kw):
    """One more run of a distsketch method with every backend call timed (wall seconds, by kind).

    Counts the graph submissions the algorithm makes (each is a graph build, a scheduling round and a
    persist or compute): reads of A (``row_pass``), passes over the thin distributed factors
    (``dist_pass``), and the rest; ``U`` is computed at the end (it stays lazy in the result).
    """
    import time

    import distsketch
    from distsketch.backends.dask import DaskRowData

    log = []
    saved = {}
    for name in ("row_pass", "dist_pass", "persist"):
        orig = getattr(DaskRowData, name)
        saved[name] = orig

        def wrap(self, *args, _orig=orig, _name=name, **kwargs):
            t = time.perf_counter()
            out = _orig(self, *args, **kwargs)
            kern = getattr(args[0], "name", "") if args and _name != "persist" else ""
            log.append((_name, kern, time.perf_counter() - t))
            return out
        setattr(DaskRowData, name, wrap)
    try:
        t0 = time.perf_counter()
        res = distsketch.svd(path, K, method=meth, seed=0, **kw)
        t1 = time.perf_counter()
        if hasattr(res.U, "compute"):
            res.U.compute()
        t2 = time.perf_counter()
    finally:
        for name, orig in saved.items():
            setattr(DaskRowData, name, orig)
    calls = [{"call": c, "kernel": k, "s": round(t, 3)} for c, k, t in log]
    inside = sum(t for _, _, t in log)
    prof = {"total_s": t1 - t0, "U_compute_s": t2 - t1, "backend_calls": calls,
            "backend_s": inside, "small_dense_and_python_s": (t1 - t0) - inside,
            "reads_of_A": sum(c == "row_pass" for c, _, _ in log),
            "passes_over_factors": sum(c == "dist_pass" for c, _, _ in log)}
    print(f"    profile {meth}: {prof['total_s']:.2f} s; " + ", ".join(f"{c}:{k} {t:.2f}" for c, k, t in log)
          + f"; outside backend calls {prof['small_dense_and_python_s']:.2f} s; U.compute {t2 - t1:.2f} s",
          flush=True)
    return prof


def opt_of(p, K):
    return float(np.sqrt(np.sum(p.s[K:] ** 2)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="200000x1000,1000000x500")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default="bench-data")
    ap.add_argument("--out", default="bench-results/lowrank.json")
    ap.add_argument("--methods", default="rsvd,block_krylov,single_pass,auto,block_krylov:1,block_krylov:2",
                    help="distsketch methods, optionally with ':n_power_iter' and ':n_oversamples' "
                         "(block_krylov:1:40 = one Krylov iteration, l = rank + 40 columns a block)")
    ap.add_argument("--skip-memory", action="store_true", help="skip the in-memory comparison with sklearn")
    ap.add_argument("--configs", default="out_of_core,out_of_core_limited",
                    help="out_of_core (default worker memory), out_of_core_limited (0.4x the matrix a worker)")
    ap.add_argument("--dask-q", default="0,1,2,4",
                    help="n_power_iter values of svd_compressed, optionally with ':n_oversamples' (1:80)")
    ap.add_argument("--profile", action="store_true",
                    help="one more run of each distsketch method with every backend call timed")
    a = ap.parse_args(argv)

    import dask
    import dask.array as da
    from distributed import Client, LocalCluster
    from sklearn.utils.extmath import randomized_svd

    import distsketch
    from distsketch.problems import generate_problem, open_problem

    result = {"benchmark": "lowrank", "rank": K, "environment": environment(), "repeats": a.repeats,
              "loadavg_at_start": list(os.getloadavg())}
    for size in a.sizes.split(","):
        m, n = (int(v) for v in size.split("x"))
        path = os.path.join(a.workdir, f"lowrank-{m}x{n}.zarr")
        if os.path.exists(path):
            p = open_problem(path)
        else:
            print(f"generating {path}", flush=True)
            p = generate_problem(path, m, n, decay="poly", power=0.5, chunks=max(1000, (32 * 2**20) // (8 * n)),
                                 seed=0, progress=True)
        opt = float(np.sqrt(np.sum(p.s[K:] ** 2)))
        fro2 = float(np.sum(p.s**2))
        A = p.numpy("A")
        entry = {"shape": [m, n], "spectrum": "s_i = i^-0.5", "optimal_error": opt, "in_memory": {},
                 "note": "out_of_core: default worker memory (svd_compressed can hold A in memory); "
                         "out_of_core_limited: each of 2 workers limited to 0.4x the matrix size"}

        def record(where, label, ts, U, s, Vt, passes, extra=None):
            r = {"seconds": ts, "median_s": median(ts), "error_ratio": rel_error(A, U, s, Vt, opt, fro2),
                 "passes": passes, **(extra or {})}
            entry[where][label] = r
            print(f"{m}x{n} {where} {label}: {r['median_s']:.2f} s, error ratio {r['error_ratio']:.4f}, "
                  f"passes {passes}", flush=True)

        cfgs = [c for c in a.configs.split(",") if c]
        for cfg, limit in (("out_of_core", "auto"), ("out_of_core_limited", int(0.4 * m * n * 8))):
            if cfg in cfgs:
                entry[cfg] = {"worker_memory_limit": str(limit)}
                run_ooc(cfg, limit, p, m, n, K, record, a, entry)
                write_json(a.out, {**result, f"{m}x{n}": entry})
        for cfg in cfgs:
            ooc = entry[cfg]
            ours = [v for k, v in ooc.items() if isinstance(v, dict) and "median_s" in v and not k.startswith("dask")]
            for k, v in ooc.items():
                if k.startswith("dask") and isinstance(v, dict) and "error_ratio" in v:
                    ok = [o for o in ours if "error_ratio" in o and o["error_ratio"] <= v["error_ratio"] * 1.0001]
                    v["speedup_of_best_distsketch_at_equal_or_better_error"] = (
                        v["median_s"] / min(o["median_s"] for o in ok) if ok else None)
        if a.skip_memory:
            result[f"{m}x{n}"] = entry
            write_json(a.out, result)
            continue
        for label, fn in (("sklearn_randomized_svd_auto", lambda r: randomized_svd(A, K, random_state=r)),
                          ("sklearn_randomized_svd_q2", lambda r: randomized_svd(A, K, n_iter=2, random_state=r))):
            ts, out = [], None
            for r in range(a.repeats):
                t, out = timed(fn, r)
                ts.append(t)
            record("in_memory", label, ts, *out, "2q+2 (algorithm)")
        for meth in ("rsvd", "block_krylov", "auto"):
            ts, res = [], None
            for r in range(a.repeats):
                t, res = timed(lambda: distsketch.svd(A, K, method=meth, seed=r))
                ts.append(t)
            record("in_memory", meth, ts, res.U, res.s, res.Vt, res.passes, {"method_ran": res.method})
        result[f"{m}x{n}"] = entry
        write_json(a.out, result)
        del A
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
