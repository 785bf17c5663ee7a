"""Spectral analysis benchmark: distsketch.spectral vs WeightWatcher 0.7.7 on the same weights.

    python scripts/bench/zoo.py [--ww-python PATH] [--only bert,linear8,options,zoo,topk,eig] [--out FILE]

WeightWatcher runs in its own environment (default ``bench-envs/ww``, created on first use with
``pip install torch==2.13.0 weightwatcher==0.7.7 safetensors``), in a subprocess, on the same
safetensors files distsketch reads; both use state-dict conventions, so layer ids match. Each
configuration records both times (analysis only, weights already on disk), their ratio, the
largest relative difference of the deterministic metrics between the two tools, and passes over
the weights (one read of each layer for both). Configurations:

  bert     a BERT-base-sized model (embeddings 30522 x 768, 12 blocks of hidden 768 / FFN 3072,
           pooler), default options;
  linear8  8 x Linear(4096, 4096), default options;
  options  randomize + mp_fit + detX on a 4-block BERT-width model (WeightWatcher's shuffles are
           unseeded, so only deterministic columns are compared);
  zoo      24 small models on a LocalCluster: 2 workers vs 1 worker (distsketch only; the
           1-worker run is timed both with 1 BLAS thread and with all cores' BLAS threads);
  topk     one 8192 x 8192 layer (a spiked random matrix) through the opt-in top-k path
           (``large_layers="randomized"`` with max_evals=4096) against the exact spectrum
           (LAPACK eigenvalues of the Gram matrix, our default path); WeightWatcher is not run
           here (the path exists for layers it skips).

  eig      the exact path's eigensolver, LAPACK's two-stage dsyevd against numpy's one-stage
           dsyevd (the code before), in one process: one 4096 Gram matrix, then --eig-layers x
           Linear(4096, 4096) through analyze; every numeric column compared (not in the default
           --only: it needs no WeightWatcher, and linear8 measures the same against it).

``--repeats`` applies to bert, options and zoo; linear8, topk and eig run ``--repeats-large`` times.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, median, write_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPARE = ["alpha", "xmin", "D", "log_norm", "log_spectral_norm", "alpha_weighted", "log_alpha_norm", "stable_rank",
           "entropy", "sigma_mp", "mp_softrank", "detX_val", "sv_min", "matrix_rank"]

WW_SCRIPT = r"""
import json, sys, time, logging, warnings
warnings.filterwarnings("ignore")
import weightwatcher as ww
from safetensors.torch import load_file
logging.getLogger("weightwatcher").setLevel(logging.ERROR)
path, opts, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
state = load_file(path)
t = time.perf_counter()
df = ww.WeightWatcher(model=state).analyze(**opts)
sec = time.perf_counter() - t
df.to_csv(out, index=False, float_format="%.17g")
print(json.dumps({"seconds": sec, "layers": len(df), "weightwatcher": ww.__version__}))
"""


def write_safetensors(path, tensors):
    header, off = {}, 0
    for k, a in tensors.items():
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header).encode()
    from distsketch._atomic import atomic_file

    with atomic_file(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype=np.float32).tobytes())


def layer(rng, out_f, in_f, spikes=4):
    """A weight with heavy-tailed entries and a few planted directions (a trained-like ESD)."""
    W = rng.standard_t(4, (out_f, in_f)).astype(np.float32) / np.float32(np.sqrt(2 * in_f))
    k = min(spikes, out_f, in_f)
    W += (rng.standard_normal((out_f, k)) @ rng.standard_normal((k, in_f))).astype(np.float32) * np.float32(
        3.0 / np.sqrt(in_f * out_f) * np.sqrt(max(out_f, in_f)) / np.sqrt(k))
    return W


def bert_like(path, blocks, seed=0, vocab=30522):
    rng = np.random.default_rng(seed)
    t = {"embeddings.word_embeddings.weight": layer(rng, vocab, 768),
         "embeddings.position_embeddings.weight": layer(rng, 512, 768),
         "embeddings.token_type_embeddings.weight": layer(rng, 2, 768)}
    for b in range(blocks):
        p = f"encoder.layer.{b}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            t[p + name + ".weight"] = layer(rng, 768, 768)
        t[p + "intermediate.dense.weight"] = layer(rng, 3072, 768)
        t[p + "output.dense.weight"] = layer(rng, 768, 3072)
    t["pooler.dense.weight"] = layer(rng, 768, 768)
    write_safetensors(path, t)


def linear8(path, seed=1):
    rng = np.random.default_rng(seed)
    write_safetensors(path, {f"layers.{i}.weight": layer(rng, 4096, 4096) for i in range(8)})


def ensure_ww(python):
    if python and os.path.exists(python):
        return python
    env = os.path.join(ROOT, "bench-envs", "ww")
    py = os.path.join(env, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", env], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "torch==2.13.0", "weightwatcher==0.7.7", "safetensors"],
                       check=True)
    return py


def run_ww(python, path, opts, tmp):
    csv = os.path.join(tmp, "ww.csv")
    r = subprocess.run([python, "-c", WW_SCRIPT, path, json.dumps(opts), csv], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"WeightWatcher failed: {r.stderr[-2000:]}")
    info = json.loads(r.stdout.strip().splitlines()[-1])
    import pandas as pd

    return info, pd.read_csv(csv, dtype={"name": str, "longname": str})


def compare(ours, ref):
    a = ours.set_index("longname")
    b = ref.set_index("longname")
    common = [c for c in COMPARE if c in a.columns and c in b.columns]
    assert sorted(a.index) == sorted(b.index), "different layer sets"
    worst = {}
    for c in common:
        x, y = a.loc[b.index, c].astype(float).to_numpy(), b[c].astype(float).to_numpy()
        worst[c] = float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300)))
    return worst


def gemm_floor_rate(n=2048, seconds=1.0):
    """GFLOP/s of an n x n GEMM on one BLAS thread, run on every core at once (the layers are
    analysed in parallel threads with one BLAS thread each): per-thread rates and their sum."""
    from concurrent.futures import ThreadPoolExecutor

    from _floors import _gemm_rate

    cores = os.cpu_count() or 1
    with ThreadPoolExecutor(cores) as ex:
        rates = [r / 1e9 for r in ex.map(lambda _: _gemm_rate((n, n), (n, n), seconds), range(cores))]
    return {"shape": [n, n], "per_thread_GFLOPs": rates, "aggregate_GFLOPs": float(sum(rates))}


def exact_path_flops(df):
    """The BLAS-3 work the exact path cannot avoid, per analysed matrix (N x M, M <= N): the Gram
    matrix (N M^2) and its full-to-band reduction (4/3 M^3), times the ``rf`` slices of a
    convolution. A refined layer's inverse comes from the band reduction (no factor of W); where a
    layer falls back to an LU/QR factor (not reported per layer) its true floor is higher than
    this one, so the fraction of the floor reached is understated, never overstated."""
    total = 0.0
    rfs = df["rf"].astype(float) if "rf" in df else np.ones(len(df))
    for N, M, rf in zip(df["N"].astype(float), df["M"].astype(float), rfs):
        N, M = max(N, M), min(N, M)
        total += rf * (N * M * M + 4.0 / 3.0 * M**3)
    return total


def bench_pair(name, path, opts, ww_python, tmp, repeats):
    from distsketch.spectral import analyze

    ours_t, ww_t = [], []
    ours = ref = None
    for _ in range(repeats):
        t = time.perf_counter()
        ours = analyze(path, seed=0, **opts)
        ours_t.append(time.perf_counter() - t)
        info, ref = run_ww(ww_python, path, opts, tmp)
        ww_t.append(info["seconds"])
    res = {"config": name, "options": opts, "layers": len(ours), "repeats": repeats,
           "distsketch_seconds": median(ours_t), "weightwatcher_seconds": median(ww_t),
           "speedup": median(ww_t) / median(ours_t), "all_distsketch_seconds": ours_t, "all_weightwatcher_seconds": ww_t,
           "max_rel_diff_vs_weightwatcher": compare(ours, ref), "passes": {"distsketch": 1, "weightwatcher": 1},
           "eig_methods": ours["eig_method"].value_counts().to_dict()}
    rate = gemm_floor_rate()
    flops = exact_path_flops(ours)
    res["floor"] = {"what": "Gram + full-to-band reduction at the one-thread GEMM rate of every core at once, "
                            "measured in this run", "GFLOP": flops / 1e9, "gemm": rate,
                    "floor_s": flops / (rate["aggregate_GFLOPs"] * 1e9)}
    res["fraction_of_floor"] = res["floor"]["floor_s"] / res["distsketch_seconds"]
    print(json.dumps({k: res[k] for k in ("config", "distsketch_seconds", "weightwatcher_seconds", "speedup",
                                          "fraction_of_floor")}),
          flush=True)
    return res


def spiked_layer(rng, n, r=150):
    """Gaussian bulk plus ``r`` directions with Pareto-distributed strengths (a tail apart from
    the bulk, which the top-k path can resolve)."""
    W = rng.standard_normal((n, n), dtype=np.float32) / np.float32(np.sqrt(n))
    X = rng.standard_normal((n, r)).astype(np.float32) / np.float32(np.sqrt(n))
    Y = rng.standard_normal((r, n)).astype(np.float32)
    sv = (2.2 * (rng.pareto(2.0, r) + 1.0)).astype(np.float32)
    return W + (X * sv) @ Y


def bench_topk(tmp, repeats, n=8192):
    from distsketch.spectral import analyze

    p = os.path.join(tmp, "big.safetensors")
    write_safetensors(p, {"big.weight": spiked_layer(np.random.default_rng(4), n)})
    ex_t, tk_t = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ex = analyze(p)
        ex_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        tk = analyze(p, max_evals=n // 2, large_layers="randomized", seed=0)
        tk_t.append(time.perf_counter() - t)
    e, k = ex.iloc[0], tk.iloc[0]
    cols = ["alpha", "xmin", "D", "sigma", "lambda_max", "log_norm", "stable_rank", "alpha_weighted"]
    res = {"config": f"top-k path, one {n} x {n} layer", "repeats": repeats, "exact_seconds": median(ex_t),
           "topk_seconds": median(tk_t), "speedup": median(ex_t) / median(tk_t), "all_exact_seconds": ex_t,
           "all_topk_seconds": tk_t, "exact_eig_method": e["eig_method"],
           "topk": int(k["topk"]), "topk_converged": bool(k["topk_converged"]), "topk_error": float(k["topk_error"]),
           "num_pl_spikes": {"exact": int(e["num_pl_spikes"]), "topk": int(k["num_pl_spikes"])},
           "max_rel_diff_vs_exact": {c: float(abs(k[c] - e[c]) / abs(e[c])) for c in cols},
           "passes": {"exact": 1, "topk": int(k["passes"])}}
    print(json.dumps({c: res[c] for c in ("config", "exact_seconds", "topk_seconds", "topk", "topk_converged")}),
          flush=True)
    return res


def bench_eigensolver(tmp, repeats, layers=8, n=4096):
    """The eigensolver of the exact path, LAPACK's two-stage reduction (default from
    ``TWO_STAGE_MIN``, band width ``BAND_WIDTH``) against numpy's one-stage dsyevd (the code
    before), in one process: (a) the eigenvalues of one n x n Gram matrix, 1 and 2 BLAS threads,
    also through the two-stage driver with LAPACK's own band width; (b) ``analyze`` of
    ``layers`` x Linear(n, n) with the default threads (layers in parallel). Every numeric column
    of the two analyses is compared (largest relative difference). No WeightWatcher needed."""
    from threadpoolctl import threadpool_limits

    import distsketch.spectral._esd as esd
    from distsketch.spectral import analyze

    rng = np.random.default_rng(1)
    W = layer(rng, n, n).astype(np.float64)
    G = W.T @ W
    single = {}
    for threads in (1, 2):
        with threadpool_limits(threads):
            one, two, lapack_band = [], [], []
            band = esd.BAND_WIDTH
            for _ in range(repeats):
                t = time.perf_counter()
                ref = np.linalg.eigvalsh(G)
                one.append(time.perf_counter() - t)
                t = time.perf_counter()
                new = esd._eigvalsh_inplace(G.copy())
                two.append(time.perf_counter() - t)
                try:  # the two-stage driver with LAPACK's own band width (32), as before BAND_WIDTH
                    esd.BAND_WIDTH = None
                    t = time.perf_counter()
                    old = esd._eigvalsh_inplace(G.copy())
                    lapack_band.append(time.perf_counter() - t)
                finally:
                    esd.BAND_WIDTH = band
        single[f"{threads} BLAS thread(s)"] = {"one_stage_seconds": median(one), "two_stage_seconds": median(two),
                                               "two_stage_lapack_band_seconds": median(lapack_band),
                                               "band_width": band,
                                               "speedup": median(one) / median(two), "all_one_stage": one,
                                               "all_two_stage": two, "all_two_stage_lapack_band": lapack_band,
                                               "max_abs_diff_over_lambda_max": float(np.max(np.abs(new - ref)) / ref[-1]),
                                               "lapack_band_max_abs_diff_over_lambda_max":
                                                   float(np.max(np.abs(old - ref)) / ref[-1])}
    p = os.path.join(tmp, "linear.safetensors")
    write_safetensors(p, {f"layers.{i}.weight": layer(rng, n, n) for i in range(layers)})
    t_old, t_new, df_old, df_new = [], [], None, None
    default = esd.TWO_STAGE_MIN
    try:
        for _ in range(repeats):
            esd.TWO_STAGE_MIN = 1 << 62  # the one-stage path of before
            t = time.perf_counter()
            df_old = analyze(p)
            t_old.append(time.perf_counter() - t)
            esd.TWO_STAGE_MIN = default
            t = time.perf_counter()
            df_new = analyze(p)
            t_new.append(time.perf_counter() - t)
    finally:
        esd.TWO_STAGE_MIN = default
    worst = {}
    for c in df_old.columns:
        if c != "seconds" and df_old[c].dtype.kind in "fi":
            a, b = df_old[c].to_numpy(float), df_new[c].to_numpy(float)
            ok = np.isfinite(a)
            worst[c] = float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(a[ok]), 1e-300))) if ok.any() else 0.0
    res = {"config": f"eigensolver: two-stage vs one-stage dsyevd, {n} x {n}", "repeats": repeats,
           "one_gram": single, "analyze": {"layers": layers, "one_stage_seconds": median(t_old),
                                           "two_stage_seconds": median(t_new), "speedup": median(t_old) / median(t_new),
                                           "all_one_stage": t_old, "all_two_stage": t_new},
           "max_rel_diff_two_vs_one_stage": worst, "eig_methods": df_new["eig_method"].value_counts().to_dict()}
    print(json.dumps({"config": res["config"], "one_gram": {k: round(v["speedup"], 2) for k, v in single.items()},
                      "analyze": res["analyze"], "worst_rel_diff": max(worst.values())}), flush=True)
    return res


def zoo_models(folder, n, seed=3):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = os.path.join(folder, f"model{i:02d}.safetensors")
        write_safetensors(p, {f"l{j}.weight": layer(rng, 1024, 768 if j % 2 else 1024) for j in range(6)})
        paths.append(p)
    return paths


def bench_zoo(tmp, n_models, repeats):
    from distributed import Client, LocalCluster

    from distsketch.spectral import analyze_zoo

    paths = zoo_models(tmp, n_models)
    times = {}
    configs = [("1 worker, 1 BLAS thread", 1, 1), ("1 worker, all BLAS threads", 1, None), ("2 workers", 2, None)]
    for label, workers, blas in configs:
        ts = []
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cl, Client(cl) as c:
            for r in range(repeats):
                out = os.path.join(tmp, f"zoo-{workers}-{blas}-{r}")
                if blas is not None:
                    import distsketch.spectral._zoo as z

                    orig = z.dask_local_blas_threads
                    z.dask_local_blas_threads = lambda client, b=blas: b
                t = time.perf_counter()
                layers, summ = analyze_zoo(paths, out, client=c, progress=False)
                ts.append(time.perf_counter() - t)
                if blas is not None:
                    z.dask_local_blas_threads = orig
                assert (summ.status == "ok").all() and len(layers) == 6 * n_models
        times[label] = ts
    res = {"config": "zoo", "models": n_models, "layers_per_model": 6, "repeats": repeats,
           "seconds": {k: median(v) for k, v in times.items()}, "all_seconds": times,
           "speedup_2_vs_1_worker_1_blas_thread": median(times["1 worker, 1 BLAS thread"]) / median(times["2 workers"]),
           "speedup_2_vs_1_worker_all_blas_threads": median(times["1 worker, all BLAS threads"])
           / median(times["2 workers"]), "passes": 1}
    print(json.dumps({k: res[k] for k in ("config", "seconds", "speedup_2_vs_1_worker_1_blas_thread",
                                          "speedup_2_vs_1_worker_all_blas_threads")}), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ww-python", default=None, help="python of an environment with weightwatcher 0.7.7 and torch")
    ap.add_argument("--only", default="bert,linear8,options,zoo,topk")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeats-large", type=int, default=1)
    ap.add_argument("--zoo-models", type=int, default=24)
    ap.add_argument("--eig-layers", type=int, default=8, help="layers of the 'eig' configuration")
    ap.add_argument("--out", default=os.path.join(ROOT, "scripts", "bench", "results", "zoo.json"))
    a = ap.parse_args()
    only = set(a.only.split(","))
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        ww_python = ensure_ww(a.ww_python) if only & {"bert", "linear8", "options"} else None
        if "bert" in only:
            p = os.path.join(tmp, "bert.safetensors")
            bert_like(p, 12)
            results.append(bench_pair("bert (12 blocks, hidden 768), defaults", p, {}, ww_python, tmp, a.repeats))
        if "linear8" in only:
            p = os.path.join(tmp, "linear8.safetensors")
            linear8(p)
            results.append(bench_pair("8 x Linear(4096, 4096), defaults", p, {}, ww_python, tmp, a.repeats_large))
        if "options" in only:
            p = os.path.join(tmp, "bert4.safetensors")
            bert_like(p, 4, seed=2, vocab=8192)
            results.append(bench_pair("4-block BERT width, randomize + mp_fit + detX", p,
                                      {"randomize": True, "mp_fit": True, "detX": True}, ww_python, tmp, a.repeats))
        if "zoo" in only:
            results.append(bench_zoo(tmp, a.zoo_models, a.repeats))
        if "topk" in only:
            results.append(bench_topk(tmp, a.repeats_large))
        if "eig" in only:
            results.append(bench_eigensolver(tmp, a.repeats_large, layers=a.eig_layers))
    write_json(a.out, {"benchmark": "zoo", "environment": environment(), "results": results,
                       "command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
