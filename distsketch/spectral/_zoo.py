"""Many models at once: one task per model on Dask, results written atomically per model, resumable.

Layout of ``out``::

    out/distsketch-zoo.json         marks the folder as a zoo output (checked before a rerun writes)
    out/layers/<key>.parquet        the details table of one model (one row per layer)
    out/summaries/<key>.parquet     one row: the model's status, error, timing and summary metrics

A model's ``key`` is its readable name (the file or folder name without extension, or the name
given) followed by the first 16 hex digits of its content fingerprint
(:func:`._sources.fingerprint`: BLAKE2b of its files' names, sizes and bytes), e.g.
``bert-3f2a9c0d11b7e845``: a rerun skips exactly the models whose content was analysed already,
whatever their path, and a changed file under the same name is analysed again. Keys never start
with ``_`` or ``.`` (Parquet readers hide such files). The tables carry ``model`` (the readable
name), ``model_key`` and ``fingerprint``.

``pandas.read_parquet(out / "layers")`` reads all models' layers as one table, and
:func:`read_zoo` returns both tables. Each file is written under a temporary name beginning with
``_`` (ignored by Parquet readers) and renamed into place, so an interrupted run leaves only
finished models behind and a rerun skips exactly those. A model that cannot be read or analysed
(truncated or corrupt file, unsupported layer, non-finite weight) is recorded in its summary row
with ``status="error"`` and the message, and the run goes on.
"""

from __future__ import annotations

import inspect
import os
import re
import time
import traceback
import uuid

import numpy as np

from .._atomic import atomic_path, write_json
from .._threads import blas_limit, dask_local_blas_threads
from ..errors import ParameterError
from ._analyze import SUMMARY_METRICS, analyze, summary
from ._sources import SourceError, describe_source, fingerprint

__all__ = ["analyze_zoo", "read_zoo", "model_key", "model_name", "plan_zoo", "run_model"]

MARKER = "distsketch-zoo.json"
_OURS = {"layers", "summaries", "plots", MARKER}


def model_name(source) -> str:
    """The readable name of a path source: its file or folder name without extension."""
    if isinstance(source, (str, os.PathLike)):
        base = os.path.basename(os.path.normpath(os.fspath(source)))
        for ext in (".safetensors", ".npz", ".pt", ".pth", ".bin"):
            if base.endswith(ext):
                base = base[: -len(ext)]
        return base
    raise ParameterError("in-memory sources need explicit names: analyze_zoo(sources, names=[...])")


def _safe(name) -> str:
    """``name`` as a file-name stem: letters (any script), digits and ``.+-_`` kept, others
    replaced by ``_``, leading ``_ . -`` removed, at most 80 characters."""
    s = re.sub(r"[^\w.+-]", "_", str(name)).lstrip("_.-")[:80]
    return s or "model"


def model_key(source, name=None) -> str:
    """The file-name key of a model: its readable name (``name`` or :func:`model_name`) and, for
    a path source, the first 16 hex digits of its content fingerprint."""
    name = model_name(source) if name is None else name
    if isinstance(source, (str, os.PathLike)):
        return f"{_safe(name)}-{fingerprint(source)[:16]}"
    return _safe(name)


def _check_out(out, sources):
    """Refuse an output folder that is a file, one of the sources, or a non-empty folder that a
    zoo run did not write; create it and mark it."""
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise ParameterError(f"out: {out!r} is a file; expected a folder for the zoo's output (give a new path)")
    for src in sources:
        if isinstance(src, (str, os.PathLike)) and os.path.abspath(os.fspath(src)) == out:
            raise ParameterError(f"out: {out!r} is also a model source; give a separate output folder")
    if os.path.isdir(out):
        entries = set(os.listdir(out))
        if entries and MARKER not in entries and not entries <= _OURS:
            raise ParameterError(f"out: {out!r} holds files a zoo run did not write ({', '.join(sorted(entries)[:3])}"
                                 f"...; no {MARKER}); give a new or empty folder")
    try:
        for sub in ("layers", "summaries"):
            os.makedirs(os.path.join(out, sub), exist_ok=True)
        if not os.path.exists(os.path.join(out, MARKER)):
            write_json(os.path.join(out, MARKER), {"format": "distsketch zoo", "version": 1})
    except OSError as e:
        raise ParameterError(f"out: cannot create the zoo's output folder {out!r} ({e.strerror}); "
                             "give a writable path") from None


def _write_parquet_atomic(df, path):
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def run_model(key, source, out, options, threads=None, name=None):
    """Analyse one model and write its two files under ``out`` (``<key>.parquet``); never raises
    (a failure is recorded in the summary row). Returns the summary row as a dict."""
    import pandas as pd
    t0 = time.perf_counter()
    name = key if name is None else name
    fp = key.rsplit("-", 1)[-1] if isinstance(source, (str, os.PathLike)) else ""
    row = {"model": name, "model_key": key, "fingerprint": fp, "source": describe_source(source), "status": "ok",
           "error": "", "num_layers": 0, "num_skipped": 0}
    details = None
    try:
        with blas_limit(threads):
            details = analyze(source, **options)
        if len(details) == 0:
            reasons = "; ".join(f"{name}: {why}" for _, name, why in details.attrs.get("skipped", [])[:10])
            raise ValueError(f"no layer could be analysed ({reasons or 'no weights found'})")
        details.insert(0, "model", name)
        details.insert(1, "model_key", key)
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

    Returns ``(todo, options)``: the ``(key, source, name)`` triples not yet recorded under
    ``out`` (with ``retry_failed``, also those recorded with an error), and the options to pass
    to :func:`analyze` (with one resolved seed for the whole zoo when ``randomize`` needs one).
    Checks ``out`` (not a file, not a source, not a foreign folder), creates ``out/layers`` and
    ``out/summaries`` and marks the folder. Reads every path source once for its fingerprint."""
    import pandas as pd

    options = dict(options or {})
    sources = list(sources)
    names = None if names is None else list(names)
    if names is not None and len(names) != len(sources):
        raise ParameterError(f"names: expected {len(sources)} names, one per source; got {len(names)}")
    allowed = set(inspect.signature(analyze).parameters) - {"source", "return_evals"}
    bad = sorted(set(options) - allowed)
    if bad:
        raise ParameterError(f"unknown analyze options: {bad}")
    readable = [str(n) for n in names] if names is not None else [model_name(s) for s in sources]
    _check_out(out, sources)
    def key_of(pair):
        src, name = pair
        try:
            return model_key(src, name)
        except SourceError:  # unreadable: recorded as this model's error by run_model
            return f"{_safe(name)}-unreadable"

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as ex:  # hashlib releases the GIL
        keys = list(ex.map(key_of, zip(sources, readable)))
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ParameterError(f"model keys must be unique; repeated: {dup} (the same content twice, or equal names "
                             "for in-memory sources: pass names=[...])")
    if options.get("randomize") and options.get("seed") is None:
        from ..random.streams import resolve_seed

        options["seed"] = resolve_seed(None)  # one recorded seed for the whole zoo
    out = os.fspath(out)
    todo = []
    for key, src, name in zip(keys, sources, readable):
        f = os.path.join(out, "summaries", f"{key}.parquet")
        if os.path.exists(f):
            if not retry_failed or pd.read_parquet(f, columns=["status"])["status"].iloc[0] == "ok":
                continue
        todo.append((key, src, name))
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
        Readable names of the models (default: file names without extension); the key of a
        path source adds its content fingerprint (see the module notes). Keys must be unique.
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
            for key, src, name in todo:
                r = run_model(key, src, out, options, name=name)
                if bar:
                    bar.update(1)
                    bar.set_postfix_str(f"{key}: {r['status']}")
        else:
            from distributed import as_completed

            threads = dask_local_blas_threads(client)
            if threads is None:  # remote workers: their cores are unknown here; layers one at a time
                options = {**options, "threads": options.get("threads", 1)}
            futs = [client.submit(run_model, key, src, out, options, threads, name,
                                  key=f"zoo-{uuid.uuid4().hex[:8]}-{key}", pure=False) for key, src, name in todo]
            for fut in as_completed(futs):
                try:
                    r = fut.result()
                except Exception as e:  # noqa: BLE001 - a lost worker or a failed write: recorded, run goes on
                    key = fut.key.split("-", 2)[2] if isinstance(fut.key, str) else str(fut.key)
                    r = {"model": key, "status": f"error: {type(e).__name__}: {e}"}
                if bar:
                    bar.update(1)
                    bar.set_postfix_str(f"{r['model']}: {r['status']}")
    finally:
        if bar:
            bar.close()
    return read_zoo(out)
