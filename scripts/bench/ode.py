"""Benchmark: the ODE-net convergence sweep (distsketch.sciml.convergence_test) on 1 and 2 Dask
workers, in process, and against torchdiffeq's odeint on the same sweep.

The sweep: 1,000 initial conditions x 3 integrators (euler, midpoint, rk4_38: the 3/8 rule, which is
torchdiffeq's fixed-grid "rk4", so both compute the same numbers) x 8 step counts (2 ... 256) on a
small MLP field 2-32-32-2 (tanh, float64, seeded weights), t in [0, 1]. Per initial condition that is
510 steps x 7 stages = 3,570 field evaluations.

Runs (medians of --repeats, whole convergence_test calls, reference given as an array):
  serial      no Dask client, one BLAS thread (threadpoolctl)
  workers_1   LocalCluster, 1 worker process, 1 thread (dask pins BLAS to one thread per worker)
  workers_2   LocalCluster, 2 worker processes, 1 thread each. Target: workers_1 / workers_2 >= 1.7.
  torchdiffeq odeint(f, x0, linspace(0, 1, n + 1), method) for the 24 (method, n), whole batch at once,
              the same MLP as a torch function, in the reference venv (--torchref, a subprocess of this
              run), one torch thread (--torch-threads for more).
"cpu_share": CPU seconds the run's processes got / (wall seconds x processes): below 1 the machine
was shared (the load average is recorded at start and end).
Floor: the field evaluations alone: 3,570 consecutive calls of the field on one chunk of chunk_rows
rows (one BLAS thread, median of 3), times the number of chunks, divided by the number of workers; "fraction_of_floor"
= median seconds / floor. Accuracy: the largest difference between distsketch's final states and
torchdiffeq's (same methods, same grids), and the verdicts (identical across runs).

    python scripts/bench/ode.py --out scripts/bench/results/ode.json
    python scripts/bench/ode.py --n-ic 200 --repeats 1 --out /tmp/ode-small.json    # smoke test
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, median, write_json  # noqa: E402

INTEGRATORS = ("euler", "midpoint", "rk4_38")
TORCHDIFFEQ = {"euler": "euler", "midpoint": "midpoint", "rk4_38": "rk4"}
STEPS = (2, 4, 8, 16, 32, 64, 128, 256)
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_TORCHREF = os.path.join(ROOT, "bench-envs", "torchref", "bin", "python")
if not os.path.exists(DEFAULT_TORCHREF):  # a worktree: the reference venvs live in the main checkout
    DEFAULT_TORCHREF = "/work/main/bench-envs/torchref/bin/python"


class MLPField:
    """f(t, x) = tanh(tanh(x W0 + b0) W1 + b1) W2 + b2, autonomous, batched over rows of x."""

    def __init__(self, weights):
        self.w = weights

    def __call__(self, t, x):
        w = self.w
        h = np.tanh(x @ w["W0"] + w["b0"])
        h = np.tanh(h @ w["W1"] + w["b1"])
        return h @ w["W2"] + w["b2"]


def make_problem(n_ic, hidden, seed=0):
    rng = np.random.default_rng(seed)
    dims = [2, hidden, hidden, 2]
    w = {}
    for i in range(3):
        w[f"W{i}"] = rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])
        w[f"b{i}"] = 0.1 * rng.standard_normal(dims[i + 1])
    x0 = rng.standard_normal((n_ic, 2))
    return w, x0


def run_sweep(field, x0, ref, chunk_rows):
    from distsketch.sciml import convergence_test

    return convergence_test(field, x0, 1.0, integrators=INTEGRATORS, steps=STEPS, reference=ref,
                            chunk_rows=chunk_rows)


def timed_runs(fn, repeats):
    ts, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return ts, out


def field_floor(field, x0, chunk_rows, n_calls, repeats=3):
    """Median seconds of ``n_calls`` consecutive field calls on one chunk (one BLAS thread)."""
    from threadpoolctl import threadpool_limits

    x = x0[:chunk_rows].copy()
    with threadpool_limits(1):
        field(0.0, x)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(n_calls):
                field(0.0, x)
            ts.append(time.perf_counter() - t)
    return median(ts)


def torchdiffeq_runs(python, w, x0, repeats, threads):
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(src, x0=x0, t1=1.0, steps=np.array(STEPS), methods=np.array([TORCHDIFFEQ[m] for m in INTEGRATORS]),
                 **w)
        subprocess.run([python, os.path.join(HERE, "_ode_torchdiffeq.py"), src, dst, str(repeats), str(threads)],
                       check=True)
        d = np.load(dst)
        return [float(s) for s in d["seconds"]], {k: d[k] for k in d.files if "_" in k}, str(d["torchdiffeq"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-ic", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--chunk-rows", type=int, default=125)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torchref", default=DEFAULT_TORCHREF)
    ap.add_argument("--torch-threads", type=int, nargs="+", default=[1],
                    help="torch thread counts to time torchdiffeq with (1 = one core, like one worker)")
    ap.add_argument("--out", default="scripts/bench/results/ode.json")
    a = ap.parse_args(argv)

    from distributed import Client, LocalCluster
    from threadpoolctl import threadpool_limits

    from distsketch.sciml import integrate

    result = {"benchmark": "ode", "environment": environment(), "repeats": a.repeats,
              "load_average_at_start": os.getloadavg(),
              "sweep": {"n_initial_conditions": a.n_ic, "integrators": list(INTEGRATORS), "steps": list(STEPS),
                        "field": f"MLP 2-{a.hidden}-{a.hidden}-2 tanh float64", "t": [0.0, 1.0],
                        "chunk_rows": a.chunk_rows,
                        "field_evaluations_per_ic": sum(STEPS) * (1 + 2 + 4)}}
    w, x0 = make_problem(a.n_ic, a.hidden)
    field = MLPField(w)
    with threadpool_limits(1):
        ref = integrate(field, x0, 1.0, n_steps=4096, method="rk4")  # the reference state at t = 1

    n_chunks = -(-a.n_ic // a.chunk_rows)
    per_chunk = field_floor(field, x0, a.chunk_rows, result["sweep"]["field_evaluations_per_ic"])
    serial_floor = per_chunk * n_chunks
    result["floor"] = {"field_calls_s_per_chunk": per_chunk, "n_chunks": n_chunks,
                       "field_evaluations_1_worker_s": serial_floor}
    print(f"floor: field evaluations alone {serial_floor:.2f} s on one core", flush=True)

    runs = {}
    cpu0 = time.process_time()
    with threadpool_limits(1):
        ts, res = timed_runs(lambda: run_sweep(field, x0, ref, a.chunk_rows), a.repeats)
    cpu = time.process_time() - cpu0
    runs["serial"] = {"seconds": ts, "median_s": median(ts), "fraction_of_floor": median(ts) / serial_floor,
                      "cpu_s": cpu, "cpu_share": cpu / sum(ts)}
    base = res
    print(f"serial {median(ts):.2f} s, verdict {res.verdict}, got {cpu / sum(ts):.2f} cores", flush=True)
    result["verdict"], result["reason"] = res.verdict, res.reason
    result["orders"] = res.orders
    write_json(a.out, result)

    for nw in (1, 2):
        with LocalCluster(n_workers=nw, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            client.run(lambda: None)
            run_sweep(field, x0[: a.chunk_rows * nw], ref[: a.chunk_rows * nw], a.chunk_rows)  # warm the workers
            cpu0 = client.run(time.process_time)
            ts, res = timed_runs(lambda: run_sweep(field, x0, ref, a.chunk_rows), a.repeats)
            cpu1 = client.run(time.process_time)
        cpu = sum(cpu1[k] - cpu0[k] for k in cpu0)
        same = bool(np.array_equal(res.table[["error", "self_error"]].to_numpy(),
                                   base.table[["error", "self_error"]].to_numpy()))
        runs[f"workers_{nw}"] = {"seconds": ts, "median_s": median(ts),
                                 "fraction_of_floor": median(ts) / (serial_floor / nw),
                                 "table_identical_to_serial": same,
                                 "worker_cpu_s": cpu, "cpu_share": cpu / (sum(ts) * nw)}
        print(f"{nw} worker(s) {median(ts):.2f} s, identical to serial: {same}, the workers got "
              f"{cpu / sum(ts):.2f} cores on average", flush=True)
        write_json(a.out, {**result, "runs": runs})
    speedup = runs["workers_1"]["median_s"] / runs["workers_2"]["median_s"]
    result["speedup_2_vs_1_workers"] = speedup
    result["target_2_vs_1"] = ">= 1.7"
    result["target_2_vs_1_met"] = bool(speedup >= 1.7)

    if os.path.exists(a.torchref):
        # distsketch's final states, for the comparison (same methods and grids as torchdiffeq's)
        with threadpool_limits(1):
            ours = {(m, n): integrate(field, x0, 1.0, n_steps=n, method=m) for m in INTEGRATORS for n in STEPS}
        for threads in a.torch_threads:
            ts, finals, version = torchdiffeq_runs(a.torchref, w, x0, a.repeats, threads)
            diff = max(float(np.abs(ours[m, n] - finals[f"{TORCHDIFFEQ[m]}_{n}"]).max())
                       for m in INTEGRATORS for n in STEPS)
            runs[f"torchdiffeq_{threads}_thread"] = {"seconds": ts, "median_s": median(ts), "torchdiffeq": version,
                                                     "max_abs_state_difference_vs_distsketch": diff}
            print(f"torchdiffeq ({threads} thread) {median(ts):.2f} s, max |difference| {diff:.1e}", flush=True)
        td = runs["torchdiffeq_1_thread"]["median_s"]
        result["ratio_torchdiffeq_1_thread_over_serial"] = td / runs["serial"]["median_s"]
        result["ratio_torchdiffeq_1_thread_over_workers_2"] = td / runs["workers_2"]["median_s"]
    else:
        result["torchdiffeq"] = f"not run: {a.torchref} missing"
    result["runs"] = runs
    result["load_average_at_end"] = os.getloadavg()
    write_json(a.out, result)
    print(f"2 vs 1 workers: {speedup:.2f}x; wrote {a.out}")


if __name__ == "__main__":
    main()
