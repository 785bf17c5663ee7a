"""Helpers shared by the benchmarks: timing, medians, environment record, atomic JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
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
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, default=float)
    os.replace(tmp, path)
