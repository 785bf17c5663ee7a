"""Benchmark: matrix-free spectra (distsketch.matfree) against scipy's ARPACK and plain Hutchinson.

Three parts, JSON to --out:

* eigsh: distsketch.matfree.eigsh against scipy.sparse.linalg.eigsh (ARPACK) on the same dense
  symmetric operators (decaying spectrum 1/i, Wishart, low rank plus noise), k eigenpairs,
  both to relative tolerance 1e-8. Products counted by the operator wrapper, wall time as the
  median of --repeats runs, eigenvalue error against LAPACK (numpy.linalg.eigvalsh); the floor
  is the time of the products alone (as many 2-column blocks and one k-column check, measured here).
* trace: Hutchinson, Hutch++ and XTrace on a decaying spectrum (lambda_i = i^-2 and i^-1): RMS
  relative error over --trials seeds at each budget of products, the reported standard error's
  coverage (|est - tr| <= 2 stderr), and the products each needs to reach a relative RMS error
  of each of --targets (the smallest budget measured that reaches it; Hutchinson, whose error falls as
  1/sqrt(m), is also extrapolated from its largest budget).
* gram: the top eigenvalues of A.T A of a Zarr matrix on a 2-worker LocalCluster whose memory
  limit per worker is below the matrix size (out of core): matfree.eigsh on gram_operator(A)
  (one read of A per block product) against ARPACK on a LinearOperator that reads A once per
  product (the same gram_matmat pass, one column at a time). Reads, time, bare-read floor,
  eigenvalue error against the generator's singular values.

Usage:

    python scripts/bench/matfree.py --out scripts/bench/results/matfree.json
    python scripts/bench/matfree.py --gram-size 60000x300 --repeats 1 --trials 30   # reduced
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, median, timed, write_json  # noqa: E402


def _rotate(lam, seed):
    n = len(lam)
    Q = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0]
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2


def operators(n):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2 * n, n))
    U = np.linalg.qr(rng.standard_normal((n, 10)))[0]
    G = rng.standard_normal((n, n))
    return {
        "decaying_1_over_i": _rotate(1.0 / np.arange(1, n + 1), 2),
        "wishart": X.T @ X / (2 * n),
        "lowrank10_plus_noise": (U * np.linspace(10, 5, 10)) @ U.T + 0.1 * (G + G.T) / np.sqrt(8 * n),
    }


def bench_eigsh(n, k, repeats):
    import scipy.sparse.linalg as sla

    from distsketch import matfree as mf

    out = {}
    for name, A in operators(n).items():
        lam = np.linalg.eigvalsh(A)
        ref = lam[::-1][:k]
        scale = float(np.max(np.abs(lam)))
        row = {"n": n, "k": k, "which": "LA", "tol": 1e-8}
        ts, res = [], None
        for _ in range(repeats):
            t, res = timed(mf.eigsh, A, k, tol=1e-8, seed=0)
            ts.append(t)
        row["distsketch"] = {"median_s": median(ts), "matvecs": res.matvecs, "block_products": res.iterations,
                             "converged": res.converged,
                             "max_eig_error_rel": float(np.max(np.abs(res.eigenvalues - ref)) / scale)}
        ts = []
        for _ in range(repeats):
            cnt = [0]

            def mm(X):
                cnt[0] += X.shape[1] if X.ndim == 2 else 1
                return A @ X

            op = sla.LinearOperator(A.shape, matvec=mm, matmat=mm, dtype=A.dtype)
            t, (w, _) = timed(sla.eigsh, op, k, which="LA", tol=1e-8)
            ts.append(t)
        w = np.sort(w)[::-1]
        row["arpack"] = {"median_s": median(ts), "matvecs": cnt[0],
                         "max_eig_error_rel": float(np.max(np.abs(w - ref)) / scale)}
        # floor: the products alone, made as eigsh makes them (blocks of 2 columns, then the k-column check)
        L = mf.aslinearoperator(A)
        rng = np.random.default_rng(0)
        Xb, Xk = rng.standard_normal((n, 2)), rng.standard_normal((n, k))
        t_block = median([timed(L.matmat, Xb)[0] for _ in range(max(5, repeats))])
        t_check = median([timed(L.matmat, Xk)[0] for _ in range(max(3, repeats))])
        t_prod = t_block * res.iterations + t_check
        row["floor_products_s"] = t_prod
        row["distsketch"]["fraction_of_floor"] = t_prod / row["distsketch"]["median_s"]
        row["matvec_ratio_arpack_over_distsketch"] = cnt[0] / res.matvecs
        row["time_ratio_arpack_over_distsketch"] = row["arpack"]["median_s"] / row["distsketch"]["median_s"]
        out[name] = row
        print(name, row, flush=True)
    return out


def bench_trace(n, trials, budgets, targets):
    from distsketch import matfree as mf

    out = {}
    for p in (2.0, 1.0):
        lam = 1.0 / np.arange(1, n + 1) ** p
        A = _rotate(lam, 3)
        tr = float(lam.sum())
        rows = {}
        for method in mf.TRACE_METHODS:
            per = []
            for m in budgets:
                errs, cov = [], 0
                for s in range(trials):
                    r = mf.trace(A, method=method, matvecs=m, seed=s)
                    errs.append((r.estimate - tr) / tr)
                    cov += abs(r.estimate - tr) <= 2 * r.stderr
                per.append({"matvecs": m, "rms_rel_error": float(np.sqrt(np.mean(np.square(errs)))),
                            "coverage_2se": cov / trials})
            rows[method] = {"budgets": per, "matvecs_to_target": {}}
            for tg in targets:
                reach = next((q["matvecs"] for q in per if q["rms_rel_error"] <= tg), None)
                if reach is None and method == "hutchinson":  # error ~ c / sqrt(m): m = (c / target)^2
                    last = per[-1]
                    reach = f"~{last['matvecs'] * (last['rms_rel_error'] / tg) ** 2:.0f} (extrapolated)"
                rows[method]["matvecs_to_target"][f"{tg:g}"] = reach
        for tg in targets:
            h = rows["hutchinson"]["matvecs_to_target"][f"{tg:g}"]
            h = float(h.split()[0].lstrip("~")) if isinstance(h, str) else h
            for method in ("hutch++", "xtrace"):
                r = rows[method]["matvecs_to_target"][f"{tg:g}"]
                if r:
                    rows[method].setdefault("fewer_products_than_hutchinson", {})[f"{tg:g}"] = h / r
        out[f"lambda_i=i^-{p:g}"] = {"n": n, "trials": trials, **rows}
        print(f"trace i^-{p:g}", {k: v["matvecs_to_target"] for k, v in rows.items()}, flush=True)
    return out


def bench_gram(size, k, limit_mb, repeats, workdir):
    import scipy.sparse.linalg as sla
    from distributed import Client, LocalCluster

    from distsketch import matfree as mf
    from distsketch import passes
    from distsketch.backends import as_rowdata
    from distsketch.problems import generate_problem

    from _floors import bare_read

    m, n = size
    prob = generate_problem(os.path.join(workdir, "g.zarr"), m, n, decay="poly", power=1.0, chunks=max(1, 2**22 // n),
                            seed=1)
    path = f"{prob.path}/A"
    nbytes = m * n * 8
    out = {"shape": [m, n], "bytes": nbytes, "worker_memory_limit_bytes": limit_mb * 2**20, "workers": 2, "k": k}
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=f"{limit_mb}MiB", dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster):
        bare_read(path, 1)  # warm-up: workers start, imports, first open of the store
        out["bare_read"] = bare_read(path, max(2, repeats))
        read_s = out["bare_read"]["median_s"]
        ts, res, G = [], None, None
        for _ in range(repeats):
            G = mf.gram_operator(path)
            t, res = timed(mf.eigsh, G, k, tol=1e-8, block_size=k + 2, seed=0)
            ts.append(t)
        ref = prob.s[:k] ** 2
        out["distsketch"] = {"median_s": median(ts), "reads": G.reads, "matvecs": res.matvecs,
                             "converged": res.converged,
                             "max_eig_error_rel": float(np.max(np.abs(res.eigenvalues - ref) / ref)),
                             "floor_s": G.reads * read_s, "fraction_of_floor": G.reads * read_s / median(ts)}
        ts = []
        for _ in range(repeats):
            data = as_rowdata(path)
            op = sla.LinearOperator((n, n), matvec=lambda x: passes.gram_matmat(data, x).ravel(), dtype=np.float64)
            t, (w, _) = timed(sla.eigsh, op, k, which="LA", tol=1e-8)
            ts.append(t)
        w = np.sort(w)[::-1]
        out["arpack_one_read_per_matvec"] = {"median_s": median(ts), "reads": data.passes,
                                             "max_eig_error_rel": float(np.max(np.abs(w - ref) / ref))}
        out["read_ratio_arpack_over_distsketch"] = data.passes / G.reads
        out["time_ratio_arpack_over_distsketch"] = median(ts) / out["distsketch"]["median_s"]
    print("gram", out, flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "matfree.json"))
    ap.add_argument("--n", type=int, default=2000, help="dimension of the dense eigsh and trace operators")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--budgets", default="24,48,96,192,384")
    ap.add_argument("--targets", default="1e-2,1e-3", help="relative RMS errors to reach")
    ap.add_argument("--gram-size", default="200000x500")
    ap.add_argument("--gram-limit-mb", type=int, default=400)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: eigsh,trace,gram")
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    payload = {"benchmark": "matfree", "loadavg_start": list(os.getloadavg()), "environment": environment(),
               "argv": sys.argv[1:]}
    if "eigsh" not in skip:
        payload["eigsh"] = bench_eigsh(a.n, a.k, a.repeats)
    if "trace" not in skip:
        payload["trace"] = bench_trace(a.n, a.trials, [int(b) for b in a.budgets.split(",")],
                                       [float(t) for t in a.targets.split(",")])
    if "gram" not in skip:
        m, n = (int(v) for v in a.gram_size.lower().split("x"))
        with tempfile.TemporaryDirectory() as d:
            payload["gram"] = bench_gram((m, n), 5, a.gram_limit_mb, a.repeats, d)
    payload["loadavg_end"] = list(os.getloadavg())
    write_json(a.out, payload)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
