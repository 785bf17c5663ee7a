"""Helpers shared by the benchmarks: timing, medians, environment record, atomic JSON."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def median(xs):
    return float(statistics.median(xs))


def environment() -> dict:
    import numpy as np

    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                        for d in threadpool_info() if d.get("user_api") == "blas"]
    except Exception:  # pragma: no cover - informational only
        pass
    for mod in ("scipy", "dask", "distributed", "zarr", "sklearn"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def write_json(path: str, payload: dict) -> None:
    """Write JSON atomically (distsketch's one writer: temporary file beside it, fsync, rename)."""
    from distsketch._atomic import write_json as _write

    _write(path, payload, indent=2, default=float)
