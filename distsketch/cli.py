"""The ``distsketch`` command line.

    distsketch generate OUT.zarr --m M --n N [--cond C --decay D --rank R --frac-in-range F ...]
    distsketch sketch A.zarr --d D [--kind K --side left|right --seed S] --out SA.zarr
    distsketch lstsq A.zarr b.zarr --out x.zarr [--method M --kind K --d D --seed S --checkpoint FILE]
    distsketch svd A.zarr --rank K (or --tol T) --out svd.zarr [--method M --seed S]
    distsketch qrcp A.zarr [--rank K | --tol T] --out qr.zarr [--seed S --d D --no-q]
    distsketch demo [--m M --n N --worker-memory 400MB]

Commands that compute start an embedded Dask LocalCluster sized to the machine unless
``--scheduler ADDRESS`` is given, and show a progress bar.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from ._outputs import MARKER, check_output_path, publish_output, write_zarr_group  # noqa: F401 (publish_output re-exported)

__all__ = ["main"]


# the Zarr outputs (checked paths, atomic publication) live in one place; these names are kept here
# for callers of the command line's helpers
_MARKER = MARKER
_write_zarr_atomic = write_zarr_group


def _cmd_generate(a) -> int:
    from .problems import generate_problem

    chunks = None
    if a.chunks:
        parts = [int(p) for p in a.chunks.split(",")]
        chunks = parts[0] if len(parts) == 1 else tuple(parts)
    t = time.perf_counter()
    p = generate_problem(a.out, a.m, a.n, cond=a.cond, decay=a.decay, rank=a.rank, power=a.power,
                         frac_in_range=a.frac_in_range, chunks=chunks, dtype=a.dtype, seed=a.seed,
                         overwrite=a.overwrite, progress=not a.quiet)
    print(json.dumps({"path": p.path, "shape": list(p.shape), "dtype": p.dtype, "cond": p.cond,
                      "rank": p.attrs["rank"], "norm_r": p.norm_r, "seed": p.seed,
                      "seconds": round(time.perf_counter() - t, 3)}))
    return 0


def _cmd_sketch(a) -> int:
    import dask

    from . import sketch
    from ._inputs import as_matrix
    from .cluster import dask_client

    A = as_matrix(a.input, allow_missing_chunks=a.allow_missing_chunks)  # fails fast, before any cluster starts
    check_output_path(a.out, a.overwrite, (a.input,))
    with dask_client(a.scheduler, n_workers=a.workers):
        # opened again under the client: the row blocks follow its workers' memory limit (open_array)
        A = as_matrix(a.input, allow_missing_chunks=a.allow_missing_chunks)
        t = time.perf_counter()
        S, op = sketch(A, a.d, kind=a.kind, side=a.side, seed=a.seed, nnz=a.nnz, return_operator=True)
        from ._progress import show

        S = S.persist()
        if not a.quiet:
            show(S)  # on stderr: stdout carries only the JSON result
        S = S.compute()
        secs = time.perf_counter() - t
    write_zarr_group(a.out, {"S": S}, {"operator": op.describe(), "passes": 1})
    print(json.dumps({"out": a.out, "shape": list(S.shape), "operator": op.describe(), "passes": 1,
                      "seconds": round(secs, 3)}))
    return 0


def _cmd_lstsq(a) -> int:
    from ._inputs import as_matrix
    from .backends import DaskRowData
    from .cluster import dask_client
    from .solve import lstsq

    # fail fast on a bad path or a store with missing chunks, before any cluster starts
    A = as_matrix(a.A, allow_missing_chunks=a.allow_missing_chunks)
    b = as_matrix(a.b, "b", ndim=(1, 2), allow_missing_chunks=a.allow_missing_chunks)
    if b.shape[0] != A.shape[0]:
        from .errors import ShapeError

        raise ShapeError(f"b must have m={A.shape[0]} entries to match A {A.shape}; got shape {b.shape}")
    check_output_path(a.out, a.overwrite, (a.A, a.b))
    with dask_client(a.scheduler, n_workers=a.workers):
        # opened again under the client: the row blocks follow its workers' memory limit (open_array)
        A = as_matrix(a.A, allow_missing_chunks=a.allow_missing_chunks)
        data = DaskRowData(A, progress=not a.quiet) if not isinstance(A, np.ndarray) else A
        t = time.perf_counter()
        res = lstsq(data, b, method=a.method, atol=a.atol, btol=a.btol, maxiter=a.maxiter, damp=a.damp,
                    seed=a.seed, checkpoint=a.checkpoint, kind=a.kind, d=a.d)
        x = res.x
        arrays = {"x": x}
        secs = time.perf_counter() - t
        meta = {"method": res.method, "reason": res.reason, "istop": res.istop, "message": res.message,
                "iterations": res.iterations, "passes": res.passes, "normr": res.normr, "normar": res.normar,
                "cond_estimate": res.cond, "rank": res.rank, "seed": res.seed, "verified": res.verified,
                "seconds": round(secs, 3)}
        write_zarr_group(a.out, arrays, meta)
    print(json.dumps({"out": a.out, **meta}))
    return 0 if res.converged or res.istop == 8 else 1  # 8: sketch_solve, unverified by request


def _cmd_svd(a) -> int:
    from ._inputs import as_matrix
    from .cluster import dask_client
    from .lowrank import svd

    A = as_matrix(a.A, allow_missing_chunks=a.allow_missing_chunks)  # fail fast, before any cluster starts
    if (a.rank is None) == (a.tol is None):
        from .errors import ParameterError

        raise ParameterError("give exactly one of --rank and --tol")
    check_output_path(a.out, a.overwrite, (a.A,))
    with dask_client(a.scheduler, n_workers=a.workers):
        # opened again under the client: the row blocks follow its workers' memory limit (open_array)
        A = as_matrix(a.A, allow_missing_chunks=a.allow_missing_chunks)
        data = A
        if not isinstance(A, np.ndarray) and A.shape[0] >= A.shape[1]:
            from .backends import DaskRowData

            # a bar per pass, on stderr (a wide A is factored as A.T inside svd, without bars)
            data = DaskRowData(A, progress=not a.quiet)
        t = time.perf_counter()
        res = svd(data, a.rank, tol=a.tol, method=a.method, n_power_iter=a.n_power_iter if a.n_power_iter is not None
                  else "auto", seed=a.seed)
        meta = {"method": res.method, "reason": res.reason, "rank": res.rank, "passes": res.passes,
                "error_estimate": res.error_estimate, "norm_fro": res.norm_fro, "n_power_iter": res.n_power_iter,
                "seed": res.seed}
        write_zarr_group(a.out, {"U": res.U, "s": res.s, "Vt": res.Vt}, meta)
        meta["seconds"] = round(time.perf_counter() - t, 3)
    print(json.dumps({"out": a.out, **meta}))
    return 0


def _cmd_qrcp(a) -> int:
    from ._inputs import as_matrix
    from .cluster import dask_client
    from .lowrank import qrcp

    A = as_matrix(a.A, allow_missing_chunks=a.allow_missing_chunks)  # fail fast, before any cluster starts
    if A.shape[0] < A.shape[1]:
        from .errors import ShapeError

        raise ShapeError(f"qrcp needs a tall matrix (m >= n); got shape {A.shape}. Store and factor A.T instead")
    check_output_path(a.out, a.overwrite, (a.A,))
    with dask_client(a.scheduler, n_workers=a.workers):
        # opened again under the client: the row blocks follow its workers' memory limit (open_array)
        A = as_matrix(a.A, allow_missing_chunks=a.allow_missing_chunks)
        t = time.perf_counter()
        res = qrcp(A, a.rank, tol=a.tol, seed=a.seed, kind=a.kind, d=a.d, compute_q=not a.no_q)
        meta = {"rank": res.rank, "numerical_rank": res.numerical_rank, "passes": res.passes, "reason": res.reason,
                "error_estimate": res.error_estimate, "seed": res.seed}
        arrays = {"R": res.R, "perm": res.perm}
        if res.Q is not None:
            arrays["Q"] = res.Q
        _write_zarr_atomic(a.out, arrays, meta)
        meta["seconds"] = round(time.perf_counter() - t, 3)
    print(json.dumps({"out": a.out, **meta}))
    return 0


def _cmd_demo(a) -> int:
    from .demo import run_demo

    return run_demo(m=a.m, n=a.n, workdir=a.workdir, worker_memory=a.worker_memory, workers=a.workers,
                    scheduler=a.scheduler, seed=a.seed, keep=a.keep, quiet=a.quiet)


def zoo_arguments(p) -> None:
    """The analysis options of ``distsketch zoo`` (shared with the MPI driver drivers/zoo.py)."""
    p.add_argument("--min-evals", type=int, default=8, help="skip layers with fewer eigenvalues (WeightWatcher)")
    p.add_argument("--max-evals", type=int, default=15000, help="layers with more eigenvalues: see --large-layers")
    p.add_argument("--max-N", type=int, default=50000, help="skip layers whose long side exceeds this")
    p.add_argument("--mp-fit", action="store_true", help="Marchenko-Pastur bulk fit (num_spikes, sigma_mp)")
    p.add_argument("--randomize", action="store_true",
                   help="spectra of element-shuffled weights (correlation traps, rand_distance); seeded")
    p.add_argument("--detX", action="store_true", help="the detX condition (detX_num, detX_val)")
    p.add_argument("--fix-fingers", choices=["clip_xmax"], default=None, help="WeightWatcher's fix_fingers option")
    p.add_argument("--seed", type=int, default=None, help="seed of --randomize and of the top-k path")
    p.add_argument("--large-layers", choices=["skip", "randomized"], default="skip",
                   help="layers over --max-evals: skip (WeightWatcher) or fit the top-k spectrum (converged flag)")
    p.add_argument("--topk", type=int, default=256, help="first k of the top-k path (doubled as needed)")


def zoo_options(a, seed=None) -> dict:
    """``analyze`` keyword arguments from parsed :func:`zoo_arguments` (``seed`` overrides)."""
    return dict(min_evals=a.min_evals, max_evals=a.max_evals, max_N=a.max_N, mp_fit=a.mp_fit, randomize=a.randomize,
                detX=a.detX, fix_fingers=a.fix_fingers, seed=a.seed if seed is None else seed,
                large_layers=a.large_layers, topk=a.topk)


def require_model_paths(models) -> None:
    """Fail fast, before any cluster or rank starts work, on model paths that do not exist
    (files that exist but cannot be read are recorded per model instead)."""
    missing = [m for m in models if not os.path.exists(m)]
    if missing:
        from .errors import ParameterError

        raise ParameterError(f"no such model file or folder: {', '.join(missing)}")


def _cmd_zoo(a) -> int:
    from .cluster import dask_client
    from .spectral import analyze_zoo, plot_alpha_by_layer

    from .spectral._zoo import _check_out, _safe

    require_model_paths(a.models)
    _check_out(a.out, a.models)  # before any cluster starts
    opts = zoo_options(a)
    t = time.perf_counter()
    with dask_client(a.scheduler, n_workers=a.workers):
        layers, summaries = analyze_zoo(a.models, a.out, retry_failed=a.retry_failed, progress=not a.quiet, **opts)
    if a.plots and len(layers):
        names = layers.groupby("model_key")["model"].first()
        for key, d in layers.groupby("model_key"):
            name = names[key]
            stem = _safe(name) if (names == name).sum() == 1 else key  # the readable name where it is unique
            plot_alpha_by_layer(d, os.path.join(a.out, "plots", f"{stem}.alpha.png"), title=name)
    ok = int((summaries["status"] == "ok").sum()) if len(summaries) else 0
    print(json.dumps({"out": a.out, "models": len(summaries), "ok": ok, "errors": len(summaries) - ok,
                      "layers": len(layers), "seconds": round(time.perf_counter() - t, 3)}))
    return 0 if ok == len(summaries) else 1


def build_parser() -> argparse.ArgumentParser:
    from .operators import KINDS
    from .problems import DECAYS
    from .solve import METHODS as LSTSQ_METHODS

    p = argparse.ArgumentParser(prog="distsketch", description=__doc__.split("\n")[1])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a test problem (A, b, x, s) to a Zarr group")
    g.add_argument("out", help="path of the Zarr group to write (renamed into place when complete)")
    g.add_argument("--m", type=int, required=True, help="rows of A")
    g.add_argument("--n", type=int, required=True, help="columns of A")
    g.add_argument("--cond", type=float, default=1e4, help="condition number of A (default 1e4)")
    g.add_argument("--decay", choices=DECAYS, default="geometric", help="profile of the singular values")
    g.add_argument("--power", type=float, default=0.5, help="exponent of the 'poly' decay")
    g.add_argument("--rank", type=int, default=None, help="numerical rank of A (default: full)")
    g.add_argument("--frac-in-range", type=float, default=1.0, help="||A A^+ b|| / ||b||")
    g.add_argument("--chunks", default=None, help="rows per chunk, or ROWS,COLS")
    g.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="dtype of A and b")
    g.add_argument("--seed", type=int, default=0, help="seed: A, b and x depend on it only (not on --chunks)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing problem at OUT")
    g.add_argument("--quiet", action="store_true", help="no progress bar (bars go to stderr)")
    g.set_defaults(func=_cmd_generate)

    s = sub.add_parser("sketch", help="sketch a Zarr array and write the sketch to Zarr")
    s.add_argument("input", help="path of a Zarr array (a group member as store.zarr/A)")
    s.add_argument("--d", type=int, required=True, help="sketch size: rows of S A (left) or columns of A S (right)")
    s.add_argument("--kind", choices=sorted(KINDS), default="sparse_sign", help="sketching operator")
    s.add_argument("--side", choices=["left", "right"], default="left", help="S A (left) or A S (right)")
    s.add_argument("--nnz", type=int, default=8, help="nonzeros per column of a sparse_sign operator")
    s.add_argument("--seed", type=int, default=None, help="seed of the operator (default: fresh, recorded)")
    s.add_argument("--out", required=True, help="Zarr group to write the sketch into (atomically)")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier distsketch output at --out")
    s.set_defaults(func=_cmd_sketch)

    ls = sub.add_parser("lstsq", help="solve min ||A x - b|| (or min ||x|| s.t. A x = b) from Zarr arrays")
    ls.add_argument("A", help="path of the Zarr array A (a group member as store.zarr/A)")
    ls.add_argument("b", help="path of the Zarr array b")
    ls.add_argument("--out", required=True, help="Zarr group to write x into (atomically)")
    ls.add_argument("--method", choices=LSTSQ_METHODS, default="auto",
                    help="solver (default auto: chosen by a cost model; the choice and why are in the output)")
    ls.add_argument("--atol", type=float, default=1e-12, help="stopping tolerance on ||A^T r|| / (||A|| ||r||)")
    ls.add_argument("--btol", type=float, default=1e-12, help="stopping tolerance on ||r|| / ||b||")
    ls.add_argument("--maxiter", type=int, default=None, help="iteration limit (default: the method's own)")
    ls.add_argument("--damp", type=float, default=0.0, help="ridge: minimise ||A x - b||^2 + damp^2 ||x||^2")
    ls.add_argument("--seed", type=int, default=None, help="seed of the sketch (default: fresh, recorded)")
    ls.add_argument("--kind", choices=sorted(KINDS), default="sparse_sign", help="sketching operator (as for sketch)")
    ls.add_argument("--d", type=int, default=None, help="rows of the sketch (default: the method's own, 2n-8n)")
    ls.add_argument("--checkpoint", default=None,
                    help="checkpoint file: resume an interrupted solve (refused if A changed since; keeps the seed)")
    ls.add_argument("--overwrite", action="store_true", help="replace an earlier distsketch output at --out")
    ls.set_defaults(func=_cmd_lstsq)

    sv = sub.add_parser("svd", help="truncated SVD of a Zarr array, written to a Zarr group (U, s, Vt)")
    sv.add_argument("A", help="path of the Zarr array")
    sv.add_argument("--rank", type=int, default=None, help="number of singular triplets (or give --tol)")
    sv.add_argument("--tol", type=float, default=None, help="relative Frobenius tolerance instead of --rank")
    sv.add_argument("--method", choices=["auto", "rsvd", "block_krylov", "single_pass"], default="auto",
                    help="algorithm (default auto; the choice and why are in the output)")
    sv.add_argument("--n-power-iter", type=int, default=None,
                    help="power (subspace) iterations; default: chosen from the spectrum's decay")
    sv.add_argument("--seed", type=int, default=None, help="seed of the sketch (default: fresh, recorded)")
    sv.add_argument("--out", required=True, help="Zarr group to write U, s, Vt into (atomically)")
    sv.add_argument("--overwrite", action="store_true", help="replace an earlier distsketch output at --out")
    sv.set_defaults(func=_cmd_svd)

    qr = sub.add_parser("qrcp", help="randomized QR with column pivoting (CQRRPT) of a tall Zarr array: "
                        "a Zarr group with Q, R, perm (A[:, perm] ~ Q R)")
    qr.add_argument("A", help="path of the Zarr array (m >= n)")
    qr.add_argument("--rank", type=int, default=None, help="columns of Q (default: the numerical rank)")
    qr.add_argument("--tol", type=float, default=None, help="relative Frobenius tolerance that chooses the rank")
    qr.add_argument("--kind", choices=["sparse_sign", "gaussian", "srct"], default="sparse_sign",
                    help="sketching operator (as for sketch)")
    qr.add_argument("--d", type=int, default=None, help="sketch rows (default min(m, 2n))")
    qr.add_argument("--no-q", action="store_true", help="do not form Q (R and perm only)")
    qr.add_argument("--seed", type=int, default=None, help="seed of the sketch (default: fresh, recorded)")
    qr.add_argument("--out", required=True, help="Zarr group to write Q, R, perm into (atomically)")
    qr.add_argument("--overwrite", action="store_true", help="replace an earlier distsketch output at --out")
    qr.set_defaults(func=_cmd_qrcp)

    d = sub.add_parser("demo", help="generate a problem larger than a worker's memory and solve it on a local cluster")
    d.add_argument("--m", type=int, default=1_000_000, help="rows of the generated A")
    d.add_argument("--n", type=int, default=100, help="columns of the generated A")
    d.add_argument("--worker-memory", default="400MB", help="memory limit of each LocalCluster worker")
    d.add_argument("--workdir", default=None, help="where the problem is written (default: a temporary folder)")
    d.add_argument("--keep", action="store_true", help="keep the generated problem")
    d.add_argument("--seed", type=int, default=0, help="seed of the problem and of the solver")
    d.set_defaults(func=_cmd_demo)

    z = sub.add_parser("zoo", help="WeightWatcher-compatible spectral metrics of many models, in parallel, resumable")
    z.add_argument("models", nargs="+", help="model files or folders (.safetensors, .npz, .pt/.bin/.pth)")
    z.add_argument("--out", required=True, help="output folder (layers/ and summaries/ Parquet files per model)")
    zoo_arguments(z)
    z.add_argument("--retry-failed", action="store_true", help="rerun models recorded with an error")
    z.add_argument("--plots", action="store_true", help="write alpha-by-layer plots under OUT/plots")
    z.set_defaults(func=_cmd_zoo)

    for sp in (s, ls, sv, qr):
        sp.add_argument("--allow-missing-chunks", action="store_true",
                        help="read chunks absent from a Zarr store as its fill value instead of refusing the store")
    for sp in (s, ls, sv, qr, d, z):
        sp.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
        sp.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: one per core)")
        sp.add_argument("--quiet", action="store_true", help="no progress bar or log lines (they go to stderr)")
    return p


def main(argv=None) -> int:
    from .errors import DistsketchError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DistsketchError, FileExistsError) as exc:
        print(f"distsketch {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
