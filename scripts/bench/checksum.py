"""Cost of the data fingerprint (block_checksum folded into the first pass) against a bare read.

    python scripts/bench/checksum.py [--m 400000 --n 100 --reps 5]

Measures, in one process (ratios, medians over --reps; the machine may be loaded):
  1. a bare read of a Zarr store (every chunk decoded) vs the checksum of the same chunks;
  2. the first pass of lstsq (a sparse-sign sketch of [A, b]) with and without the checksum,
     on numpy data (in memory) and on the Zarr store through dask (threads);
  3. one thread, block by block, interleaved: the first-pass kernel alone vs the checksum alone
     (the least noisy of the three on a loaded machine).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def median_time(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=400_000)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--chunks", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args(argv)

    import dask

    from distsketch import passes
    from distsketch._inputs import open_zarr_array
    from distsketch.backends import DaskRowData, NumpyRowData, _protocol
    from distsketch.operators import make_operator
    from distsketch.problems import generate_problem

    real = _protocol.block_checksum

    def off(X, r0):
        return np.zeros(1, dtype=np.uint64)

    with tempfile.TemporaryDirectory() as tmp:
        p = generate_problem(os.path.join(tmp, "p.zarr"), a.m, a.n, chunks=a.chunks, seed=0)
        z = open_zarr_array(os.path.join(p.path, "A"))
        starts = range(0, a.m, a.chunks)
        gb = a.m * a.n * 8 / 1e9
        t_read = median_time(lambda: [z[r0:r0 + a.chunks] for r0 in starts], a.reps)
        blocks = [z[r0:r0 + a.chunks] for r0 in starts]
        t_ck = median_time(lambda: [real(B, r0) for B, r0 in zip(blocks, starts)], a.reps)
        print(f"data: {a.m} x {a.n} float64 ({gb:.2f} GB), {len(blocks)} chunks of {a.chunks} rows")
        print(f"1. bare Zarr read {t_read:.3f} s ({gb / t_read:.2f} GB/s); checksum {t_ck:.3f} s "
              f"({gb / t_ck:.2f} GB/s): +{100 * t_ck / t_read:.1f}% of a bare read")

        A, b = p.numpy("A"), p.numpy("b")
        op = make_operator("sparse_sign", 4 * a.n, a.m, seed=1)

        def first_pass(make):
            d = make()
            bd = d.distribute(b)
            passes.left_sketch(d, op, extra=[bd], dtype=np.float64)
            return d

        for label, make in (("numpy (in memory, 2 threads)", lambda: NumpyRowData(A, workers=2)),
                            ("dask from Zarr (threads)", lambda: DaskRowData(p.dask("A")))):
            with dask.config.set(scheduler="threads"):
                ts = {"on": [], "off": []}
                for _ in range(a.reps):  # interleaved, so load changes hit both alike
                    for key, fn in (("on", real), ("off", off)):
                        _protocol.block_checksum = fn
                        t = time.perf_counter()
                        first_pass(make)
                        ts[key].append(time.perf_counter() - t)
                _protocol.block_checksum = real
            on, offt = np.median(ts["on"]), np.median(ts["off"])
            mon, moff = np.min(ts["on"]), np.min(ts["off"])
            print(f"2. first pass, {label}: without checksum {offt:.3f} s, with {on:.3f} s (medians): "
                  f"{100 * (on - offt) / offt:+.1f}%; minima {moff:.3f} s, {mon:.3f} s: "
                  f"{100 * (mon - moff) / moff:+.1f}%")

        # 3. one thread, per block: the kernel of the first pass vs the checksum of the same block
        from threadpoolctl import threadpool_limits

        bl = [A[r0:r0 + a.chunks] for r0 in starts]
        bb = [b[r0:r0 + a.chunks, None] for r0 in starts]
        tk, tc = [], []
        with threadpool_limits(1):
            for _ in range(a.reps):
                t = time.perf_counter()
                for B, bi, r0 in zip(bl, bb, starts):
                    passes._k_left_sketch(B, r0, (bi,), (op,), np.dtype(np.float64))
                tk.append(time.perf_counter() - t)
                t = time.perf_counter()
                for B, r0 in zip(bl, starts):
                    real(B, r0)
                tc.append(time.perf_counter() - t)
        k, c = np.median(tk), np.median(tc)
        print(f"3. one thread, all blocks: sketch kernel {k:.3f} s, checksum {c:.3f} s ({gb / c:.2f} GB/s): "
              f"+{100 * c / k:.1f}% of the kernel")


if __name__ == "__main__":
    main()
