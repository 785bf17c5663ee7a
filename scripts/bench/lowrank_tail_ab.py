"""A/B of the block Krylov SVD's last step, interleaved in one run on one 2-worker LocalCluster.

``ritz_in_basis``: the SVD taken in the well-conditioned Krylov basis itself (one pass over the
basis storing ``U_0`` and its Gram, CholeskyQR on the ``k`` kept columns); ``cholqr2_tail``: the
basis orthonormalised first (CholeskyQR2 sweeps over every column, ``U`` a chain of products over
the whole basis), forced by allowing no condition number for the first. Same reads of ``A`` either
way; both times include computing ``U``. Usage (from the repository root):

    PYTHONPATH=. python scripts/bench/lowrank_tail_ab.py --q 2 --out scripts/bench/results/lowrank_tail_ab_s7.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, median, write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", default="bench-data/lowrank-200000x1000.zarr/A",
                    help="the Zarr matrix (scripts/bench/lowrank.py generates it)")
    ap.add_argument("--q", type=int, default=2)
    ap.add_argument("--rank", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--out", default="bench-results/lowrank_tail_ab.json")
    a = ap.parse_args(argv)

    from distributed import Client, LocalCluster

    import distsketch
    from distsketch.lowrank import _svd

    kappa = _svd._KAPPA_RITZ
    ts = {"ritz_in_basis": [], "cholqr2_tail": []}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cl, Client(cl):
        distsketch.svd(a.path, a.rank, method="block_krylov", n_power_iter=a.q, seed=99).U.compute()  # warm-up
        try:
            for rep in range(a.repeats):
                for name, k in (("ritz_in_basis", kappa), ("cholqr2_tail", 0.0)):
                    _svd._KAPPA_RITZ = k
                    t = time.perf_counter()
                    res = distsketch.svd(a.path, a.rank, method="block_krylov", n_power_iter=a.q, seed=rep)
                    res.U.compute()
                    ts[name].append(time.perf_counter() - t)
                    print(f"{name}: {ts[name][-1]:.2f} s, {res.passes} reads", flush=True)
        finally:
            _svd._KAPPA_RITZ = kappa
    out = {"benchmark": "lowrank_tail_ab", "path": a.path, "n_power_iter": a.q, "rank": a.rank,
           "environment": environment(), "loadavg_at_end": list(os.getloadavg()),
           **{k: {"seconds": v, "median_s": median(v)} for k, v in ts.items()}}
    out["saved_s"] = out["cholqr2_tail"]["median_s"] - out["ritz_in_basis"]["median_s"]
    print(f"median: ritz_in_basis {out['ritz_in_basis']['median_s']:.2f} s, cholqr2_tail "
          f"{out['cholqr2_tail']['median_s']:.2f} s")
    write_json(a.out, out)


if __name__ == "__main__":
    main()
