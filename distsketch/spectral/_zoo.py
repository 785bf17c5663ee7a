"""Many models at once: one task per model on Dask, results written atomically per model, resumable.

Layout of ``out``::

    out/layers/<model>.parquet      the details table of one model (one row per layer)
    out/summaries/<model>.parquet   one row: the model's status, error, timing and summary metrics

``pandas.read_parquet(out / "layers")`` reads all models' layers as one table, and
:func:`read_zoo` returns both tables. Each file is written under a temporary name beginning with
``_`` (ignored by Parquet readers) and renamed into place, so an interrupted run leaves only
finished models behind and a rerun skips exactly those. A model that cannot be read or analysed
(truncated or corrupt file, unsupported layer, non-finite weight) is recorded in its summary row
with ``status="error"`` and the message, and the run goes on.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import time
import traceback
import uuid

import numpy as np

from ..errors import ParameterError
from ._analyze import SUMMARY_METRICS, analyze, summary
from ._sources import describe_source

__all__ = ["analyze_zoo", "read_zoo", "model_key", "plan_zoo", "run_model"]


def model_key(source) -> str:
    """A file-name-safe key for a model source (its file or folder name without extension)."""
    if isinstance(source, (str, os.PathLike)):
        base = os.path.basename(os.path.normpath(os.fspath(source)))
        for ext in (".safetensors", ".npz", ".pt", ".pth", ".bin"):
            if base.endswith(ext):
                base = base[: -len(ext)]
        key = base
    else:
        raise ParameterError("in-memory sources need explicit names: analyze_zoo(sources, names=[...])")
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", key) or "model"


def _write_parquet_atomic(df, path):
    d = os.path.dirname(path)
    tmp = os.path.join(d, f"_{uuid.uuid4().hex}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _local_blas_threads(client):
    """BLAS threads per task when every worker runs on this machine: its cores shared out
    between the worker threads (oversubscription costs more than it gains on few cores)."""
    nthreads = client.nthreads()
    hosts = {a.split("://")[-1].rsplit(":", 1)[0] for a in nthreads}
    if not hosts <= {"127.0.0.1", "localhost", "::1"}:
        return None
    return max(1, (os.cpu_count() or 1) // max(1, sum(nthreads.values())))


def run_model(key, source, out, options, threads=None):
    """Analyse one model and write its two files under ``out``; never raises (a failure is
    recorded in the summary row). Returns the summary row as a dict."""
    import pandas as pd
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    row = {"model": key, "source": describe_source(source), "status": "ok", "error": "", "num_layers": 0, "num_skipped": 0}
    details = None
    try:
        with threadpool_limits(threads) if threads else contextlib.nullcontext():
            details = analyze(source, **options)
        if len(details) == 0:
            reasons = "; ".join(f"{name}: {why}" for _, name, why in details.attrs.get("skipped", [])[:10])
            raise ValueError(f"no layer could be analysed ({reasons or 'no weights found'})")
        details.insert(0, "model", key)
        row["num_layers"] = len(details)
        row["num_skipped"] = len(details.attrs.get("skipped", []))
        row["seed"] = str(details.attrs.get("seed"))  # may exceed 64 bits
        row.update(summary(details))
    except Exception as e:  # noqa: BLE001 - every failure is recorded with its message, the zoo goes on
        row["status"] = "error"
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc(limit=5)
        details = None
    row["seconds"] = time.perf_counter() - t0
    for m in SUMMARY_METRICS:
        row.setdefault(m, np.nan)
    summ = pd.DataFrame([row])
    if details is not None:
        for c in details.columns:
            if details[c].dtype == object:
                details[c] = details[c].astype(str)
        _write_parquet_atomic(details, os.path.join(out, "layers", f"{key}.parquet"))
    _write_parquet_atomic(summ, os.path.join(out, "summaries", f"{key}.parquet"))
    return row


def read_zoo(out):
    """``(layers, summaries)`` DataFrames of a zoo run's output folder."""
    import pandas as pd

    def read(sub):
        d = os.path.join(out, sub)
        files = sorted(f for f in os.listdir(d) if f.endswith(".parquet")) if os.path.isdir(d) else []
        if not files:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(os.path.join(d, f)) for f in files], ignore_index=True)

    return read("layers"), read("summaries")


def plan_zoo(sources, out, *, names=None, retry_failed=False, options=None):
    """Check a zoo run's arguments before any work and list what is left to do.

    Returns ``(todo, options)``: the ``(key, source)`` pairs not yet recorded under ``out``
    (with ``retry_failed``, also those recorded with an error), and the options to pass to
    :func:`analyze` (with one resolved seed for the whole zoo when ``randomize`` needs one).
    Creates ``out/layers`` and ``out/summaries``."""
    import pandas as pd

    options = dict(options or {})
    sources = list(sources)
    keys = list(names) if names is not None else [model_key(s) for s in sources]
    if len(keys) != len(sources):
        raise ParameterError(f"names: expected {len(sources)} names, one per source; got {len(keys)}")
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ParameterError(f"model keys must be unique; repeated: {dup} (pass names=[...])")
    allowed = set(inspect.signature(analyze).parameters) - {"source", "return_evals"}
    bad = sorted(set(options) - allowed)
    if bad:
        raise ParameterError(f"unknown analyze options: {bad}")
    if options.get("randomize") and options.get("seed") is None:
        from ..random.streams import resolve_seed

        options["seed"] = resolve_seed(None)  # one recorded seed for the whole zoo
    out = os.fspath(out)
    for sub in ("layers", "summaries"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    todo = []
    for key, src in zip(keys, sources):
        f = os.path.join(out, "summaries", f"{key}.parquet")
        if os.path.exists(f):
            if not retry_failed or pd.read_parquet(f, columns=["status"])["status"].iloc[0] == "ok":
                continue
        todo.append((key, src))
    return todo, options


def analyze_zoo(sources, out, *, client=None, names=None, retry_failed=False, progress=True, **options):
    """Analyse many models, in parallel on Dask, writing results per model under ``out``.

    Parameters
    ----------
    sources : list
        Model sources as :func:`analyze` accepts them (paths are read on the workers).
    out : path
        Output folder (created). Models already recorded there are skipped.
    client : distributed.Client, optional
        Defaults to the active client; without one, models run one after another in-process.
    names : list of str, optional
        Keys of the models (default: file names without extension). Must be unique.
    retry_failed : bool
        Rerun models recorded with ``status="error"`` (finished models are never rerun).
    progress : bool
        A progress bar over models.
    **options
        Passed to :func:`analyze` (min_evals, mp_fit, randomize, seed, ...).

    Returns
    -------
    (layers, summaries) : pandas.DataFrame
        All models in ``out``, including those finished by earlier runs.
    """
    todo, options = plan_zoo(sources, out, names=names, retry_failed=retry_failed, options=options)
    if client is None:
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError):
            client = None
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="models", unit="model")
    try:
        if client is None:
            for key, src in todo:
                r = run_model(key, src, out, options)
                if bar:
                    bar.update(1)
                    bar.set_postfix_str(f"{key}: {r['status']}")
        else:
            from distributed import as_completed

            threads = _local_blas_threads(client)
            if threads is None:  # remote workers: their cores are unknown here; layers one at a time
                options = {**options, "threads": options.get("threads", 1)}
            futs = [client.submit(run_model, key, src, out, options, threads, key=f"zoo-{key}-{uuid.uuid4().hex[:8]}",
                                  pure=False) for key, src in todo]
            for fut in as_completed(futs):
                try:
                    r = fut.result()
                except Exception as e:  # noqa: BLE001 - a lost worker or a failed write: recorded, run goes on
                    key = fut.key.split("-")[1] if isinstance(fut.key, str) else str(fut.key)
                    r = {"model": key, "status": f"error: {type(e).__name__}: {e}"}
                if bar:
                    bar.update(1)
                    bar.set_postfix_str(f"{r['model']}: {r['status']}")
    finally:
        if bar:
            bar.close()
    return read_zoo(out)
