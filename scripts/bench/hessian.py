"""Loss-Hessian spectra: distsketch.hessian against PyHessian 0.1 on the same model and data.

    python scripts/bench/hessian.py [--torchref-python PATH] [--samples 2048] [--hidden 256]
                                    [--only pyhessian,trace,dask] [--out FILE]

The model is an MLP (``--inputs`` -> ``--hidden`` -> ``--hidden`` -> ``--classes``, ReLU;
85k parameters at the defaults) trained for a few epochs (Adam, seeded) on synthetic data
labelled by a random teacher network, so that its Hessian has the spectrum of a trained
network: a few outliers over a bulk near zero. Weights and data are saved to one temporary
file that both sides load; PyHessian 0.1 runs in its own environment (default
``bench-envs/torchref``: torch 2.13.0 CPU + pyhessian 0.1) in a subprocess, with
``cuda=False`` and the batches as its ``dataloader``. PyHessian 0.1 calls ``torch.eig``,
removed in torch 2; the subprocess supplies it from ``torch.linalg.eigh`` (same values).

Sections (``--only``):

  pyhessian  top eigenvalue (PyHessian power iteration, its defaults maxIter=100, tol=1e-3;
             ours block Lanczos to a residual of ``--eig-tol``), trace (PyHessian Hutchinson
             with ``--hutchinson`` probes and tol=0 so it runs them all; ours Hutch++ with
             ``--trace-matvecs``), density (both SLQ with ``--density-vectors`` probes of
             ``--density-steps`` Lanczos steps): values, their differences against the
             estimators' errors, Hessian-vector products (HVPs) and seconds of each side.
  trace      HVPs and time to reach PyHessian's Hutchinson standard error with Hutch++ and
             with XTrace (the smallest matvecs in a ladder 12..288 whose stderr is at or below it) and,
             to separate the algorithm from the batching, our Hutchinson with PyHessian's count.
  dask       one dataset-wide block product (``--block`` vectors) and a Hutch++ trace on a
             LocalCluster with 2 single-threaded workers: all products on 1 worker vs both.

JSON: medians of ``--repeats`` (dask) and single timed runs for the PyHessian comparison
(each reading there takes tens to hundreds of HVPs); ``os.getloadavg()`` at start and end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, median, write_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Shared by both processes: the model, the data and the batches, from the saved file.
COMMON = r"""
import torch
def build(cfg):
    d, h, c = cfg["inputs"], cfg["hidden"], cfg["classes"]
    return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(),
                               torch.nn.Linear(h, c))
def load(path):
    blob = torch.load(path, weights_only=False)
    model = build(blob["cfg"])
    model.load_state_dict(blob["state"])
    model.eval()
    x, y, bs = blob["x"], blob["y"], blob["cfg"]["batch"]
    batches = [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]
    return blob["cfg"], model, batches
"""

PYHESSIAN_SCRIPT = COMMON + r"""
import json, sys, time
import numpy as np
def _eig(T, eigenvectors=True):  # pyhessian 0.1 calls torch.eig (a stub that raises in torch 2): eigh
    w, V = torch.linalg.eigh(T)
    return torch.stack([w, torch.zeros_like(w)], 1), V
torch.eig = _eig
from pyhessian import hessian
path, opts, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
cfg, model, batches = load(path)
torch.manual_seed(opts["seed"])
crit = torch.nn.CrossEntropyLoss()
res = {"torch": torch.__version__, "threads": torch.get_num_threads()}
def fresh():
    h = hessian(model, crit, dataloader=batches, cuda=False)
    count = [0]
    inner = h.dataloader_hv_product
    def counted(v):
        count[0] += 1
        return inner(v)
    h.dataloader_hv_product = counted
    return h, count
t = time.perf_counter(); h, c = fresh()
ev, evec = h.eigenvalues(top_n=1)
res["eigenvalue"] = {"value": float(ev[0]), "hvps": c[0], "seconds": time.perf_counter() - t}
np.save(out + ".evec.npy", torch.cat([v.detach().reshape(-1) for v in evec[0]]).numpy())
t = time.perf_counter(); h, c = fresh()
samples = h.trace(maxIter=opts["hutchinson"], tol=0.0)
res["trace"] = {"samples": [float(s) for s in samples], "hvps": c[0], "seconds": time.perf_counter() - t}
t = time.perf_counter(); h, c = fresh()
eigs, weights = h.density(iter=opts["steps"], n_v=opts["vectors"])
res["density"] = {"nodes": [[float(e) for e in r] for r in eigs], "weights": [[float(w) for w in r] for r in weights],
                  "hvps": c[0], "seconds": time.perf_counter() - t}
json.dump(res, open(out, "w"))
"""

ns = {}
exec(COMMON, ns)  # the same build/load in this process
build, load = ns["build"], ns["load"]


def default_torchref() -> str:
    """bench-envs/torchref of this checkout, or of the main worktree when this is a linked worktree."""
    cands = [ROOT]
    try:
        common = subprocess.run(["git", "-C", ROOT, "rev-parse", "--git-common-dir"], capture_output=True, text=True,
                                check=True).stdout.strip()
        cands.append(os.path.dirname(os.path.abspath(os.path.join(ROOT, common))))
    except (OSError, subprocess.CalledProcessError):
        pass
    for c in cands:
        py = os.path.join(c, "bench-envs", "torchref", "bin", "python")
        if os.path.exists(py):
            return py
    return os.path.join(ROOT, "bench-envs", "torchref", "bin", "python")


def make_problem(path, args):
    """Train the MLP on teacher-labelled data; save config, weights and data to ``path``."""
    import torch

    cfg = dict(inputs=args.inputs, hidden=args.hidden, classes=args.classes, batch=args.batch)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.samples, args.inputs, generator=g)
    torch.manual_seed(args.seed + 1)
    teacher = build({**cfg, "hidden": 32})
    with torch.no_grad():
        y = (teacher(x) + 0.5 * torch.randn(args.samples, args.classes, generator=g)).argmax(1)
    torch.manual_seed(args.seed + 2)
    model = build(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    t = time.perf_counter()
    for _ in range(args.epochs):
        perm = torch.randperm(args.samples, generator=g)
        for i in range(0, args.samples, 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        out = model(x)
        loss, acc = float(loss_fn(out, y)), float((out.argmax(1) == y).float().mean())
    torch.save({"cfg": cfg, "state": model.state_dict(), "x": x, "y": y}, path)
    return {"cfg": cfg, "train_seconds": time.perf_counter() - t, "loss": loss, "accuracy": acc,
            "n_params": sum(p.numel() for p in model.parameters())}


def gemm_gflops(seconds=1.0):
    """float32 GEMM rate of torch in this process (its default threads), GFLOP/s."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ b
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t) / 1e9


def run_pyhessian(py, path, opts, tmp):
    out = os.path.join(tmp, "pyhessian.json")
    t = time.perf_counter()
    proc = subprocess.run([py, "-c", PYHESSIAN_SCRIPT, path, json.dumps(opts), out], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"PyHessian subprocess failed:\n{proc.stderr[-4000:]}")
    res = json.load(open(out))
    res["process_seconds"] = time.perf_counter() - t
    return res


def slq_moments(nodes, weights, n, j):
    """Per-probe SLQ estimates of tr(H^j) (n sum_k w_k theta_k^j)."""
    nodes, weights = np.asarray(nodes, float), np.asarray(weights, float)
    return n * np.sum(np.where(weights > 0, weights * nodes ** j, 0.0), axis=1)


def section_pyhessian(args, path, tmp, out):
    import torch

    from distsketch import matfree
    from distsketch.hessian import hessian_operator

    cfg, model, batches = load(path)
    loss = torch.nn.CrossEntropyLoss()
    opts = dict(seed=args.seed, hutchinson=args.hutchinson, steps=args.density_steps, vectors=args.density_vectors)
    ref = run_pyhessian(args.torchref_python, path, opts, tmp)
    mine = {}
    t = time.perf_counter()
    op = hessian_operator(model, loss, batches, method=args.method, client=False)
    n = op.n_params
    mine["operator_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    e = matfree.eigsh(op, 1, which="LA", tol=args.eig_tol, seed=args.seed)
    mine["eigenvalue"] = {"value": float(e.eigenvalues[0]), "residual": float(e.residuals[0]),
                          "converged": bool(e.converged), "hvps": op.hvps, "seconds": time.perf_counter() - t}
    h0, t = op.hvps, time.perf_counter()
    tr = matfree.trace(op, method="hutch++", matvecs=args.trace_matvecs, seed=args.seed + 1)
    mine["trace"] = {"estimate": tr.estimate, "stderr": tr.stderr, "hvps": op.hvps - h0,
                     "seconds": time.perf_counter() - t}
    h0, t = op.hvps, time.perf_counter()
    d = matfree.density(op, n_vectors=args.density_vectors, n_steps=args.density_steps, seed=args.seed + 2)
    mine["density"] = {"hvps": op.hvps - h0, "seconds": time.perf_counter() - t}

    # the residual of PyHessian's returned pair, with our operator (one HVP, not counted for either side):
    # an eigenvalue of H lies within ||H v - lambda v|| of lambda (v unit)
    v = np.load(os.path.join(tmp, "pyhessian.json") + ".evec.npy").astype(np.float64)
    v /= np.linalg.norm(v)
    ref["eigenvalue"]["residual"] = float(np.linalg.norm(op.matvec(v.astype(op.dtype)) - ref["eigenvalue"]["value"] * v))
    op.hvps -= 1
    samples = np.asarray(ref["trace"]["samples"])
    ref_tr, ref_se = float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(len(samples)))
    lam_ref, lam = ref["eigenvalue"]["value"], mine["eigenvalue"]["value"]
    comb = math.hypot(ref_se, tr.stderr)
    # density: per-probe SLQ estimates of the first two moments on both sides, compared by their spread
    dens = {}
    for j in (1, 2):
        a, b = slq_moments(ref["density"]["nodes"], ref["density"]["weights"], n, j), slq_moments(d.nodes, d.weights,
                                                                                                   n, j)
        se = math.hypot(a.std(ddof=1) / math.sqrt(len(a)), b.std(ddof=1) / math.sqrt(len(b)))
        dens[f"tr_H^{j}"] = {"pyhessian": float(a.mean()), "distsketch": float(b.mean()), "combined_stderr": se,
                             "difference_in_stderrs": float(abs(a.mean() - b.mean()) / se)}
    # the two broadened densities on one grid (same sigma): L1 distance
    nodes_r, w_r = np.asarray(ref["density"]["nodes"]), np.asarray(ref["density"]["weights"])
    grid, sigma = d.grid, d.sigma
    phi_r = np.mean([np.sum(wr[:, None] * np.exp(-(grid[None] - nr[:, None]) ** 2 / (2 * sigma ** 2)), 0)
                     for nr, wr in zip(nodes_r, w_r)], 0) / (sigma * math.sqrt(2 * math.pi))
    dens["l1_distance"] = float(np.trapezoid(np.abs(phi_r - d.values), grid))
    dens["sigma"] = float(sigma)
    dens["grid"] = [float(grid[0]), float(grid[-1])]
    end = lambda r: r["eigenvalue"]["seconds"] + r["trace"]["seconds"] + r["density"]["seconds"]  # noqa: E731
    h_end = lambda r: r["eigenvalue"]["hvps"] + r["trace"]["hvps"] + r["density"]["hvps"]  # noqa: E731
    out["pyhessian"] = {
        "pyhessian": ref, "distsketch": mine, "n_params": n,
        "eigenvalue": {"pyhessian": lam_ref, "distsketch": lam, "relative_difference": abs(lam - lam_ref) / abs(lam),
                       "pyhessian_residual": ref["eigenvalue"]["residual"],
                       "distsketch_residual": mine["eigenvalue"]["residual"],
                       "within_residuals": abs(lam - lam_ref) <= ref["eigenvalue"]["residual"]
                       + mine["eigenvalue"]["residual"],
                       "pyhessian_tol": 1e-3, "hvps_ratio": ref["eigenvalue"]["hvps"] / mine["eigenvalue"]["hvps"],
                       "speedup": ref["eigenvalue"]["seconds"] / mine["eigenvalue"]["seconds"]},
        "trace": {"pyhessian": ref_tr, "pyhessian_stderr": ref_se, "distsketch": tr.estimate,
                  "distsketch_stderr": tr.stderr, "difference_in_stderrs": abs(ref_tr - tr.estimate) / comb},
        "density": dens,
        "end_to_end": {"pyhessian_seconds": end(ref), "distsketch_seconds": end(mine) + mine["operator_seconds"],
                       "speedup": end(ref) / (end(mine) + mine["operator_seconds"]),
                       "pyhessian_hvps": h_end(ref), "distsketch_hvps": h_end(mine)},
    }
    return ref


def section_trace(args, path, ref, out):
    """HVPs and time for Hutch++ to reach PyHessian's Hutchinson stderr."""
    import torch

    from distsketch import matfree
    from distsketch.hessian import hessian_operator

    cfg, model, batches = load(path)
    loss = torch.nn.CrossEntropyLoss()
    samples = np.asarray(ref["trace"]["samples"])
    target = float(samples.std(ddof=1) / math.sqrt(len(samples)))
    ladders, reached_by = {}, {}
    for method in ("hutch++", "xtrace"):
        ladder, reached = [], None
        for m in (12, 18, 24, 36, 48, 72, 96, 144, 192, 288):
            t = time.perf_counter()
            op = hessian_operator(model, loss, batches, method=args.method, client=False)
            r = matfree.trace(op, method=method, matvecs=m, seed=args.seed + 3)
            sec = time.perf_counter() - t
            ladder.append({"matvecs": m, "estimate": r.estimate, "stderr": r.stderr, "seconds": sec})
            if r.stderr <= target:
                reached = ladder[-1]
                break
        ladders[method], reached_by[method] = ladder, reached
    ladder, reached = ladders["hutch++"], reached_by["hutch++"]
    # our Hutchinson with PyHessian's number of probes: the same algorithm, products in blocks
    t = time.perf_counter()
    op = hessian_operator(model, loss, batches, method=args.method, client=False)
    hut = matfree.trace(op, method="hutchinson", matvecs=len(samples), seed=args.seed + 4)
    hut_s = time.perf_counter() - t
    res = {"pyhessian_hutchinson": {"hvps": len(samples), "stderr": target, "estimate": float(samples.mean()),
                                    "seconds": ref["trace"]["seconds"]},
           "hutchpp_ladder": ladder, "reached": reached, "xtrace_ladder": ladders["xtrace"],
           "xtrace_reached": reached_by["xtrace"],
           "distsketch_hutchinson_same_probes": {"hvps": len(samples), "estimate": hut.estimate, "stderr": hut.stderr,
                                                 "seconds": hut_s,
                                                 "speedup_vs_pyhessian": ref["trace"]["seconds"] / hut_s}}
    if reached:
        res["hvps_ratio"] = len(samples) / reached["matvecs"]
        res["speedup"] = ref["trace"]["seconds"] / reached["seconds"]
        res["targets"] = {"hvps_ratio>=3": res["hvps_ratio"] >= 3, "speedup>=2": res["speedup"] >= 2}
    if reached_by["xtrace"]:
        res["xtrace_hvps_ratio"] = len(samples) / reached_by["xtrace"]["matvecs"]
        res["xtrace_speedup"] = ref["trace"]["seconds"] / reached_by["xtrace"]["seconds"]
    out["trace_to_same_stderr"] = res


def section_dask(args, path, out):
    import torch
    from distributed import Client, LocalCluster

    from distsketch import matfree
    from distsketch.hessian import hessian_operator

    cfg, model, batches = load(path)
    loss = torch.nn.CrossEntropyLoss()
    res = {"block": args.block, "repeats": args.repeats, "n_batches": len(batches)}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        X = np.random.default_rng(args.seed).standard_normal((sum(p.numel() for p in model.parameters()), args.block))
        X = X.astype(np.float32)
        results = {}
        for label, ws in (("1_worker", workers[:1]), ("2_workers", workers)):
            with hessian_operator(model, loss, batches, method=args.method, client=client, workers=ws) as op:
                op.matmat(X)  # warm: torch imported and traced on the workers
                ts, out_x = [], None
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    out_x = op.matmat(X)
                    ts.append(time.perf_counter() - t)
                tt = []
                for _ in range(max(1, args.repeats // 2)):
                    t = time.perf_counter()
                    tr = matfree.trace(op, method="hutch++", matvecs=args.dask_trace_matvecs, seed=args.seed)
                    tt.append(time.perf_counter() - t)
                results[label] = out_x
                res[label] = {"matmat_seconds": ts, "matmat_median_s": median(ts), "trace_seconds": tt,
                              "trace_median_s": median(tt), "trace": tr.estimate, "n_shards": op.n_shards}
        res["identical_products"] = bool(np.array_equal(results["1_worker"], results["2_workers"]))
        res["matmat_speedup"] = res["1_worker"]["matmat_median_s"] / res["2_workers"]["matmat_median_s"]
        res["trace_speedup"] = res["1_worker"]["trace_median_s"] / res["2_workers"]["trace_median_s"]
        res["target_speedup>=1.7"] = res["matmat_speedup"] >= 1.7
    out["dask"] = res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--torchref-python", default=None, help="default: bench-envs/torchref/bin/python")
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--inputs", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--method", default="func", choices=["func", "autograd"])
    p.add_argument("--eig-tol", type=float, default=1e-3)
    p.add_argument("--hutchinson", type=int, default=100)
    p.add_argument("--trace-matvecs", type=int, default=99)
    p.add_argument("--density-vectors", type=int, default=2)
    p.add_argument("--density-steps", type=int, default=64)
    p.add_argument("--block", type=int, default=16)
    p.add_argument("--dask-trace-matvecs", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="pyhessian,trace,dask")
    p.add_argument("--out", default=os.path.join(ROOT, "scripts", "bench", "results", "hessian.json"))
    args = p.parse_args()
    only = set(args.only.split(","))
    args.torchref_python = args.torchref_python or default_torchref()
    import torch

    out = {"benchmark": "hessian", "loadavg_start": os.getloadavg(), "environment": environment(),
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "problem.pt")
        out["problem"] = make_problem(path, args)
        print("problem", out["problem"], flush=True)
        out["floor"] = {"torch_gemm_gflops": gemm_gflops(),
                        "flops_per_hvp_lower_bound": 6 * args.samples * out["problem"]["n_params"],
                        "note": "an HVP over the data needs at least 3 GEMM-sized passes per layer (forward, "
                                "backward, second-order): 6 N P flops"}
        out["floor"]["seconds_per_hvp_floor"] = out["floor"]["flops_per_hvp_lower_bound"] / (
            out["floor"]["torch_gemm_gflops"] * 1e9)
        ref = None
        if "pyhessian" in only or "trace" in only:
            ref = section_pyhessian(args, path, tmp, out)
            print("pyhessian", json.dumps({k: v for k, v in out["pyhessian"].items()
                                           if k not in ("pyhessian", "distsketch")}, default=float), flush=True)
        if "trace" in only:
            section_trace(args, path, ref, out)
            print("trace", json.dumps({k: v for k, v in out["trace_to_same_stderr"].items()
                                       if not k.endswith("ladder")}, default=float), flush=True)
        if "dask" in only:
            section_dask(args, path, out)
            print("dask", json.dumps({k: out["dask"][k] for k in ("matmat_speedup", "trace_speedup",
                                                                  "identical_products")}), flush=True)
    out["loadavg_end"] = os.getloadavg()
    write_json(args.out, out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
