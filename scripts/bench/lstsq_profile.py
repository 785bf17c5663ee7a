"""Where the time of an in-memory lstsq goes: single-thread CPU seconds per pass and dense step.

Runs with one BLAS thread and one pass thread, and measures process CPU time rather than wall
time, so the figures say how much work each step is and change little when other processes
share the machine (memory-bandwidth contention still shows). A synthetic A (Gaussian with
geometrically scaled columns, cond ~1e5): the preconditioned methods' work does not depend
on the spectrum. Compare branches by running it with each on PYTHONPATH. Usage:

    python scripts/bench/lstsq_profile.py --m 40000 --n 2000 [--methods sketch_precondition,normal_cholqr,cholqr]
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
    a = ap.parse_args(argv)
    os.cpu_count = lambda: 1  # the numpy backend's pass threads: one
    import numpy as np
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    import distsketch
    from distsketch import passes

    L = sys.modules["distsketch.solve.lstsq"]
    rng = np.random.default_rng(0)
    A = rng.standard_normal((a.m, a.n)) * np.geomspace(1, 1e-5, a.n)
    b = rng.standard_normal(a.m)
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

    for name in ("left_sketch", "lsqr_step", "lsqr_step_tiled", "gram", "sketch_gram"):
        if hasattr(passes, name):
            wrap(passes, name)
    for name in ("build_precond", "normal_factor"):
        if hasattr(L, name):
            wrap(L, name)
    with threadpool_limits(1):
        if a.gelsd:
            t = time.process_time()
            scipy.linalg.lstsq(A, b, lapack_driver="gelsd")
            print(f"gelsd: CPU {time.process_time() - t:.2f} s")
        for meth in a.methods.split(","):
            acc.clear()
            t = time.process_time()
            res = distsketch.lstsq(A, b, method=meth, seed=0)
            total = time.process_time() - t
            parts = ", ".join(f"{k} x{c} {v:.2f} s" for k, (c, v) in acc.items())
            rest = total - sum(v for _, v in acc.values())
            print(f"{meth} (ran {res.method}, {res.passes} passes): CPU {total:.2f} s = {parts}, other {rest:.2f} s")


if __name__ == "__main__":
    main()
