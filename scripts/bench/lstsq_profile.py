"""Where the time of an in-memory lstsq goes: single-thread CPU seconds per pass and dense step.

Runs with one BLAS thread and one pass thread, and measures process CPU time rather than wall
time, so the figures say how much work each step is and change little when other processes
share the machine (memory-bandwidth contention still shows). A synthetic A (Gaussian with
geometrically scaled columns, cond ~1e5): the preconditioned methods' work does not depend
on the spectrum. Compare branches by running it with each on PYTHONPATH. Usage:

    python scripts/bench/lstsq_profile.py --m 40000 --n 2000 [--methods sketch_precondition,normal_cholqr,cholqr]
        [--gelsd] [--atol 1e-14]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--m", type=int, default=40_000)
    ap.add_argument("--n", type=int, default=2_000)
    ap.add_argument("--methods", default="sketch_precondition,normal_cholqr,cholqr")
    ap.add_argument("--gelsd", action="store_true", help="also scipy gelsd (one thread)")
    ap.add_argument("--atol", type=float, default=1e-12, help="atol = btol of lstsq")
    a = ap.parse_args(argv)
    os.cpu_count = lambda: 1  # the numpy backend's pass threads: one
    import numpy as np
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    import distsketch
    from distsketch import passes

    L = sys.modules["distsketch.solve._runners"]  # where lstsq calls build_precond and gram_cholesky
    rng = np.random.default_rng(0)
    A = rng.standard_normal((a.m, a.n)) * np.geomspace(1, 1e-5, a.n)
    b = rng.standard_normal(a.m)
    s_max = float(np.linalg.norm(A, 2)) if a.m * a.n <= 10**8 else None

    def ne(x):  # ||A.T r|| / (||A||_2 ||r||), ||A||_2 by a few power steps on big A
        nonlocal s_max
        if s_max is None:
            v = np.ones(a.n)
            for _ in range(30):
                v = A.T @ (A @ v)
                v /= np.linalg.norm(v)
            s_max = float(np.linalg.norm(A @ v))
        r = b - A @ x
        return float(np.linalg.norm(A.T @ r) / (s_max * np.linalg.norm(r)))
    acc = collections.defaultdict(lambda: [0, 0.0])

    def wrap(mod, name):
        f = getattr(mod, name)

        def g(*args, **kw):
            t = time.process_time()
            out = f(*args, **kw)
            acc[name][0] += 1
            acc[name][1] += time.process_time() - t
            return out

        setattr(mod, name, g)

    for name in ("left_sketch", "lsqr_step", "lsqr_step_tiled", "gram", "normal_gram"):
        if hasattr(passes, name):
            wrap(passes, name)
    for name in ("build_precond", "gram_cholesky"):
        if hasattr(L, name):
            wrap(L, name)
    with threadpool_limits(1):
        if a.gelsd:
            t = time.process_time()
            xg = scipy.linalg.lstsq(A, b, lapack_driver="gelsd")[0]
            print(f"gelsd: CPU {time.process_time() - t:.2f} s, normal-equation error {ne(xg):.3g}", flush=True)
        for meth in a.methods.split(","):
            acc.clear()
            t = time.process_time()
            res = distsketch.lstsq(A, b, method=meth, seed=0, atol=a.atol, btol=a.atol)
            total = time.process_time() - t
            parts = ", ".join(f"{k} x{c} {v:.2f} s" for k, (c, v) in acc.items())
            rest = total - sum(v for _, v in acc.values())
            print(f"{meth} (ran {res.method}, {res.passes} passes, normal-equation error {ne(res.x):.3g}): "
                  f"CPU {total:.2f} s = {parts}, other {rest:.2f} s", flush=True)


if __name__ == "__main__":
    main()
