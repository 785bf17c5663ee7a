"""The convergence test for ODE-nets: did a learned vector field learn an ODE, or a discrete map?

A model that learned an ODE (a *continuous* model) has predictions that converge as
the integrator is refined: each integrator's error against the data falls at that
integrator's order until it meets the model's own error (a plateau common to all
integrators), and the integrators agree with each other at small steps. A model that
learned a discrete map tied to its training step and integrator (a *discrete* model)
is accurate only near that step: refining, or changing the integrator, makes it
worse, and all integrators converge to a limit far from the data while agreeing with
one another (Queiruga et al. 2020; Ott et al. 2021).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field as dc_field
from typing import Any

import numpy as np

from ..errors import InputTypeError, ParameterError, ShapeError
from ._integrate import _as_batch, _check_field, _check_steps, _check_times, _is_torch_module, _sweep_chunk
from ._tableau import get_tableau

__all__ = ["ConvergenceResult", "convergence_test", "convergence_tests"]

# Thresholds of the verdict (see the Notes of convergence_test).
ORDER_TOL = 0.5        # |observed - nominal order| allowed for "falls at its order"
PLATEAU_FACTOR = 4.0   # a point is "above the plateau" when its error exceeds 4 x plateau
GAP = 10.0             # "far above": the finest-step errors exceed the best error by 10x or more
AGREE_FACTOR = 4.0     # integrators agree when their gap is within 4 x their estimated errors


@dataclass(frozen=True)
class ConvergenceResult:
    """Outcome of :func:`convergence_test`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (integrator, n_steps): ``integrator``, ``order`` (nominal), ``n_steps``, ``dt``,
        ``error`` (relative error against the reference at ``t1``), ``self_error`` (relative
        difference from that integrator's finest solution).
    orders : dict
        integrator -> observed order: least-squares slope of ``log error`` against ``log dt``
        over the points with ``PLATEAU_FACTOR * plateau < error < 1``; NaN with fewer than two.
    agreement : dict
        (integrator, integrator) -> relative difference of their solutions at the finest step.
    verdict : str
        ``"continuous"``, ``"discrete"`` or ``"inconclusive"``.
    reason : str
        One sentence with the numbers behind the verdict.
    plateau : float
        The error level counted as the plateau: the smallest error in the table, at least the
        rounding floor ``100 * max(steps) * eps``.
    reference : str
        What the errors are measured against: ``"callable"``, ``"array"`` or
        ``"finest <integrator> solution"``.
    nominal_orders : dict
        integrator -> the order of its tableau.
    """

    table: Any = dc_field(repr=False)
    orders: dict
    agreement: dict
    verdict: str
    reason: str
    plateau: float
    reference: str
    nominal_orders: dict = dc_field(repr=False)

    def plot(self, ax=None):
        """Log-log plot of error against dt per integrator, with reference slopes dt^p (dotted).

        Returns the matplotlib Axes.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 4))
        for name, grp in self.table.groupby("integrator", sort=False):
            dt, err = np.abs(grp["dt"].to_numpy()), grp["error"].to_numpy()
            line, = ax.loglog(dt, np.maximum(err, 1e-300), "o-", label=f"{name} (observed {self.orders[name]:.2f})")
            p = self.nominal_orders[name]
            i = int(np.argmax(dt))
            ax.loglog(dt, err[i] * (dt / dt[i]) ** p, ":", color=line.get_color(), label=f"dt^{p}")
        ax.axhline(self.plateau, color="gray", lw=0.8, ls="--", label="plateau")
        ax.set_xlabel("dt")
        ax.set_ylabel(f"relative error vs {self.reference}")
        ax.set_title(f"verdict: {self.verdict}")
        ax.legend(fontsize="small")
        ax.figure.tight_layout()
        return ax


def _client():
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def _seeded_chunk(field, x, t0, t1, steps, tabs, seed):
    if seed is None or not _is_torch_module(field):
        return _sweep_chunk(field, x, t0, t1, steps, tabs)
    import torch

    with torch.random.fork_rng(devices=[]):  # the caller's RNG state is left as it was
        torch.manual_seed(seed)
        return _sweep_chunk(field, x, t0, t1, steps, tabs)


def _run_sweeps(fields, x, t0, t1, steps, tabs, chunk_rows, seed):
    """For each field, final states (name, n) -> (batch, dim), from fixed row chunks.

    Serial, or one Dask task per (field, chunk) when a distributed client is active; the chunks
    (and their seeds) are the same either way, so are the results.
    """
    starts = list(range(0, x.shape[0], chunk_rows))
    seeds = [None if seed is None else int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
             for i in range(len(starts))]
    client = _client() if len(starts) * len(fields) > 1 else None
    if client is None:
        parts = [[_seeded_chunk(f, x[s:s + chunk_rows], t0, t1, steps, tabs, sd) for s, sd in zip(starts, seeds)]
                 for f in fields]
    else:
        scattered = client.scatter(list(fields), broadcast=True, hash=False)
        futs = [[client.submit(_seeded_chunk, f, x[s:s + chunk_rows], t0, t1, steps, tabs, sd, pure=False)
                 for s, sd in zip(starts, seeds)] for f in scattered]
        parts = client.gather(futs)
    return [{key: np.concatenate([p[key] for p in pf], axis=0) for key in pf[0]} for pf in parts]


def _slope(dt, err):
    if len(dt) < 2:
        return math.nan
    return float(np.polyfit(np.log(dt), np.log(err), 1)[0])


def _plateau_from(e, plateau):
    """Index of the first step from which every error is at the plateau (<= 4 P), if that is step 0 or 1."""
    above = e > PLATEAU_FACTOR * plateau
    if not above.any():
        return 0
    if above.sum() == 1 and above[0]:
        return 1
    return None


def _fmt(v):
    return f"{v:.2g}"


def convergence_test(field, x0, t1, *, t0=0.0, integrators=("euler", "midpoint", "rk4"),
                     steps=(2, 4, 8, 16, 32, 64, 128, 256), reference=None, seed=None,
                     chunk_rows: int = 128) -> ConvergenceResult:
    """Integrate a (learned) vector field with several integrators and steps; say if it is an ODE.

    Parameters
    ----------
    field : callable or torch.nn.Module
        ``field(t, x)`` on a batch ``x`` of shape (batch, dim), returning the same shape.
    x0 : array_like, shape (dim,) or (batch, dim)
        Initial condition(s); not modified.
    t1 : float
        End time; the solutions are compared at ``t1``.
    t0 : float, default 0.0
        Start time.
    integrators : sequence of str or Tableau, default ("euler", "midpoint", "rk4")
        Explicit Runge-Kutta methods (see :func:`get_tableau`); names must be distinct.
    steps : sequence of int, default (2, 4, ..., 256)
        Numbers of equal steps over ``[t0, t1]``; at least three distinct values.
    reference : callable, array_like or None
        ``reference(t1)`` or an array: the true state(s) at ``t1``, shaped like ``x0``. None: the
        finest solution of ``"rk4"`` (else of the highest-order integrator) serves; the test then
        measures convergence only, and the verdict is ``"inconclusive"``.
    seed : int, optional
        Seeds torch's random generator (forked: the caller's state is kept) for each chunk of
        initial conditions, for torch fields that draw random numbers; the sweep itself is
        deterministic.
    chunk_rows : int, default 128
        Initial conditions per task. The chunks are the same with or without a Dask client, so
        the results are identical either way.

    Returns
    -------
    ConvergenceResult

    Raises
    ------
    ShapeError
        ``x0`` not 1-D or 2-D; a field or reference of the wrong shape.
    InputTypeError
        A field that is not callable; a reference that is neither callable nor an array.
    NonFiniteError
        Non-finite ``x0`` or reference.
    ParameterError
        Fewer than three distinct steps, non-positive steps, duplicate or unknown integrators,
        bad times, bad ``chunk_rows``.

    Notes
    -----
    Errors are relative, over the whole batch: ``e = ||X - R||_F / ||R||_F`` for the states ``X``
    at ``t1`` and the reference ``R`` (``||R||_F = 0`` gives absolute errors).

    *Plateau.* ``P = max(min e, 100 * max(steps) * eps)``: the smallest error anywhere in the
    sweep, never below the rounding floor of the finest integration. A point is *resolved*
    (its error dominated by discretization) when ``4 P < e < 1``; the observed order of an
    integrator is the least-squares slope of ``log e`` on ``log dt`` over its resolved points.

    *Discretization error at the finest step* of an integrator of order ``p``, from its two finest
    solutions (Richardson): ``d / (q^p - 1)`` with ``d`` their difference and ``q`` the ratio of
    their steps.

    *Verdict.* With ``m`` the smallest error in the sweep and ``F`` the smallest error at the
    finest step over the integrators:

    - ``"discrete"``: ``F >= 10 max(m, floor)`` (every integrator is at least 10x worse at the
      finest step than the best point, found at a coarser step) while the integrators agree with
      each other at the finest step to ``F / 4`` or better: they converge to one limit, and it is
      not the reference.
    - ``"continuous"``: every integrator either falls at its order (``|observed - p| <= 0.5``) or is
      at the plateau from its first or second step on (with at least one order measured); no integrator gets
      worse on refinement (its finest error is within 4x its own best); the best finest error is
      within 4x of ``max(m, floor)`` (the common plateau is reached); and each pair of integrators
      agrees at the finest step to within 4x the sum of their estimated discretization errors
      (plus the rounding floor).
    - ``"inconclusive"`` otherwise, and always without a reference: a discrete map's integrators
      also converge and agree, so convergence alone says nothing about accuracy.

    A discrete map is a discretization error that cancels the model's error at its training
    step, for every initial condition at once. With one initial condition, or errors that are
    collinear across the batch (a scalar linear model), a continuous model's discretization and
    model errors can cancel by chance at one step, which looks alike: use many, varied initial
    conditions. Without a reference nothing here can tell the two apart.

    Cost: ``batch * sum(steps) * (total stages)`` evaluations of the field per row, in chunks of
    ``chunk_rows`` rows, one Dask task per chunk when a ``distributed`` client is active.

    References
    ----------
    1. Queiruga, Erichson, Taylor, Mahoney, "Continuous-in-depth neural networks", arXiv 2008.02389.
    2. Ott, Katiyar, Hennig, Tiemann, "ResNet after all? Neural ODEs and their numerical solution",
       ICLR 2021, arXiv 2007.15386.
    3. Hairer, Norsett, Wanner, "Solving Ordinary Differential Equations I", Springer 1993, II.1-II.4.

    Examples
    --------
    >>> import numpy as np
    >>> from distsketch.sciml import convergence_test
    >>> L = np.array([[-0.5, 1.0], [-1.0, -0.5]])
    >>> x0 = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> from scipy.linalg import expm
    >>> res = convergence_test(lambda t, x: x @ L.T, x0, 1.0, reference=x0 @ expm(L).T)
    >>> res.verdict
    'continuous'
    """
    t0f, t1f, x, tabs, steps, chunk_rows, ref_arr, ref_kind = _validate(x0, t1, t0, integrators, steps, reference,
                                                                        seed, chunk_rows)
    _check_field(field, x, t0f)
    [finals] = _run_sweeps([field], x, t0f, t1f, steps, tabs, chunk_rows, seed)
    return _analyse(finals, tabs, steps, t0f, t1f, ref_arr, ref_kind)


def convergence_tests(fields, x0, t1, *, t0=0.0, integrators=("euler", "midpoint", "rk4"),
                      steps=(2, 4, 8, 16, 32, 64, 128, 256), reference=None, seed=None,
                      chunk_rows: int = 128) -> list[ConvergenceResult]:
    """:func:`convergence_test` for many models on the same initial conditions and reference.

    Every (model, chunk of initial conditions) is one Dask task when a distributed client is
    active, all submitted at once; results are identical to running :func:`convergence_test`
    on each model.

    Parameters
    ----------
    fields : sequence of callables or torch modules
        The models; each ``field(t, x)`` on a batch ``x`` of shape (batch, dim).
    x0, t1, t0, integrators, steps, reference, seed, chunk_rows
        As for :func:`convergence_test`, shared by all models.

    Returns
    -------
    list of ConvergenceResult
        One per model, in order.

    Raises
    ------
    ParameterError
        ``fields`` empty or not a sequence; the errors of :func:`convergence_test`.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.linalg import expm
    >>> from distsketch.sciml import convergence_tests
    >>> L = np.array([[-0.5, 1.0], [-1.0, -0.5]])
    >>> B = (expm(0.25 * L) - np.eye(2)) / 0.25  # a residual net: exact for Euler at dt = 0.25 only
    >>> x0 = np.random.default_rng(0).standard_normal((16, 2))
    >>> res = convergence_tests([lambda t, x: x @ L.T, lambda t, x: x @ B.T], x0, 1.0,
    ...                         reference=x0 @ expm(L).T)
    >>> [r.verdict for r in res]
    ['continuous', 'discrete']
    """
    if callable(fields) or isinstance(fields, (str, bytes)) or not hasattr(fields, "__iter__"):
        raise ParameterError(f"fields must be a sequence of models; received {type(fields).__name__}; pass a list "
                             "(use convergence_test for one model)")
    fields = list(fields)
    if not fields:
        raise ParameterError("fields must hold at least one model; received an empty sequence")
    t0f, t1f, x, tabs, steps, chunk_rows, ref_arr, ref_kind = _validate(x0, t1, t0, integrators, steps, reference,
                                                                        seed, chunk_rows)
    for f in fields:
        _check_field(f, x, t0f)
    return [_analyse(finals, tabs, steps, t0f, t1f, ref_arr, ref_kind)
            for finals in _run_sweeps(fields, x, t0f, t1f, steps, tabs, chunk_rows, seed)]


def _validate(x0, t1, t0, integrators, steps, reference, seed, chunk_rows):
    """Check every option before any integration; the reference at t1 as a (batch, dim) array or None."""
    t0f, t1f = _check_times(t0, t1)
    x = _as_batch(x0)
    if isinstance(integrators, (str, bytes)) or not hasattr(integrators, "__iter__"):
        raise ParameterError(f"integrators must be a sequence of names or Tableaux; received {integrators!r}; "
                             "pass e.g. ('euler', 'midpoint', 'rk4')")
    tabs = [get_tableau(m) for m in integrators]
    names = [t.name for t in tabs]
    if not tabs or len(set(names)) != len(names):
        raise ParameterError(f"integrators must be a non-empty sequence of distinct methods; received names "
                             f"{names}; give each Tableau its own name")
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise ParameterError(f"steps must be a sequence of positive integers; received {steps!r}")
    steps = sorted({_check_steps(n, "each entry of steps") for n in steps})
    if len(steps) < 3:
        raise ParameterError(f"steps must hold at least three distinct step counts to measure orders; received "
                             f"{steps}; pass e.g. (2, 4, 8, 16, 32, 64, 128, 256)")
    chunk_rows = _check_steps(chunk_rows, "chunk_rows")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ParameterError(f"seed must be a non-negative integer or None; received {seed!r}")

    if reference is None:
        ref_arr, ref_kind = None, None
    elif callable(reference):
        ref_arr, ref_kind = reference(t1f), "callable"
    elif isinstance(reference, (np.ndarray, list, tuple)) or hasattr(reference, "__array__"):
        ref_arr, ref_kind = reference, "array"
    else:
        raise InputTypeError(f"reference must be a callable t -> x(t), an array of the state at t1, or None; "
                             f"received {type(reference).__name__}")
    if ref_arr is not None:
        r = np.asarray(ref_arr)
        if r.size != x.size or r.shape not in (np.shape(x0), x.shape):
            raise ShapeError(f"reference at t1 must be shaped like x0, {np.shape(x0)}; received shape {r.shape}; "
                             "pass the true state for each initial condition")
        ref_arr = _as_batch(r.reshape(x.shape), "reference")
    return t0f, t1f, x, tabs, steps, chunk_rows, ref_arr, ref_kind


def _analyse(finals, tabs, steps, t0f, t1f, ref_arr, ref_kind):
    """Errors, orders, agreement and verdict from the final states of one model."""
    nmax = steps[-1]
    if ref_arr is None:
        base = next((t for t in tabs if t.name == "rk4"), max(tabs, key=lambda t: t.order))
        ref_arr, ref_kind = finals[base.name, nmax], f"finest {base.name} solution"
    R = ref_arr.astype(np.float64)
    scale = float(np.linalg.norm(R)) or 1.0
    dtype = np.result_type(*[v.dtype for v in finals.values()])
    floor = 100.0 * nmax * float(np.finfo(dtype).eps)

    rows, errs, est = [], {}, {}
    for tab in tabs:
        fin = finals[tab.name, nmax].astype(np.float64)
        e = np.array([np.linalg.norm(finals[tab.name, n] - R) / scale for n in steps])
        errs[tab.name] = e
        for n, ei in zip(steps, e):
            rows.append({"integrator": tab.name, "order": tab.order, "n_steps": n, "dt": (t1f - t0f) / n,
                         "error": float(ei),
                         "self_error": float(np.linalg.norm(finals[tab.name, n] - fin) / scale)})
        d = np.linalg.norm(finals[tab.name, steps[-2]] - fin) / scale
        est[tab.name] = float(d / ((nmax / steps[-2]) ** tab.order - 1.0))
    import pandas as pd

    table = pd.DataFrame(rows)
    dts = np.abs((t1f - t0f) / np.array(steps, dtype=np.float64))
    all_e = np.concatenate(list(errs.values()))
    m = float(all_e.min())
    plateau = max(m, floor)
    orders = {}
    for tab in tabs:
        e = errs[tab.name]
        keep = (e > PLATEAU_FACTOR * plateau) & (e < 1.0)
        orders[tab.name] = _slope(dts[keep], e[keep])
    agreement = {(a.name, b.name): float(np.linalg.norm(finals[a.name, nmax] - finals[b.name, nmax]) / scale)
                 for a, b in itertools.combinations(tabs, 2)}
    nominal = {t.name: t.order for t in tabs}
    max_agree = max(agreement.values(), default=0.0)
    finest = {k: float(v[-1]) for k, v in errs.items()}
    F = min(finest.values())

    def unmeasured(k):
        i = _plateau_from(errs[k], plateau)
        if i is None:
            return f"{k} not measured (fewer than two points between {_fmt(PLATEAU_FACTOR * plateau)} and 1)"
        return f"{k} not measured (at the plateau from n_steps={steps[i]} on)"

    order_txt = ", ".join(f"{k} {_fmt(v)} (nominal {nominal[k]})" if not math.isnan(v) else unmeasured(k)
                          for k, v in orders.items())
    verdict, reason = _verdict(ref_kind, tabs, steps, dts, errs, orders, nominal, agreement, est, finest,
                               m, F, floor, plateau, max_agree, order_txt)
    return ConvergenceResult(table=table, orders=orders, agreement=agreement, verdict=verdict, reason=reason,
                             plateau=plateau, reference=ref_kind, nominal_orders=nominal)


def _verdict(ref_kind, tabs, steps, dts, errs, orders, nominal, agreement, est, finest, m, F, floor, plateau,
             max_agree, order_txt):
    level = max(m, floor)
    best_name, best_i = min(((k, int(np.argmin(v))) for k, v in errs.items()), key=lambda kv: errs[kv[0]][kv[1]])
    dt_fin = _fmt(dts[-1])
    if ref_kind.startswith("finest"):
        return "inconclusive", (
            f"without a reference the errors against the {ref_kind} give observed orders {order_txt} and the "
            f"integrators agree to {_fmt(max_agree)} at dt={dt_fin}, which shows convergence but not accuracy: a "
            "discrete map converges too, so pass reference= to test what the model learned")
    if F >= GAP * level and max_agree <= F / AGREE_FACTOR:
        return "discrete", (
            f"the error is smallest ({_fmt(m)}) for {best_name} at n_steps={steps[best_i]} (dt={_fmt(dts[best_i])}) "
            f"but at least {_fmt(F / level)}x larger at the finest step dt={dt_fin} for every integrator (at least {_fmt(F)}), "
            f"while the integrators agree with each other there to {_fmt(max_agree)}: they converge to a limit "
            "that is not the reference")
    measured = [k for k, v in orders.items() if not math.isnan(v)]
    bad = []
    for tab in tabs:
        k, e, o = tab.name, errs[tab.name], orders[tab.name]
        if math.isnan(o):
            if _plateau_from(e, plateau) is None:
                bad.append(f"{k} has fewer than two points between {_fmt(PLATEAU_FACTOR * plateau)} and 1 and is "
                           "not at the plateau from the second step on, so no order could be measured")
        elif abs(o - nominal[k]) > ORDER_TOL:
            bad.append(f"{k} falls at order {_fmt(o)}, not {nominal[k]}")
        if e[-1] > PLATEAU_FACTOR * max(e.min(), floor):
            bad.append(f"{k} gets worse on refinement (error {_fmt(e.min())} at best, {_fmt(e[-1])} at dt={dt_fin})")
    if not measured:
        bad.append(f"no integrator is above the plateau {_fmt(plateau)} at any step, so no order was measured "
                   "(use coarser steps)")
    if F > PLATEAU_FACTOR * level:
        bad.append(f"the best error at the finest step, {_fmt(F)}, is more than {PLATEAU_FACTOR:g}x the best "
                   f"error {_fmt(m)} anywhere in the sweep")
    for (a, b), g in agreement.items():
        if g > AGREE_FACTOR * (est[a] + est[b]) + floor:
            bad.append(f"{a} and {b} differ by {_fmt(g)} at dt={dt_fin}, more than their estimated "
                       f"discretization errors {_fmt(est[a])} and {_fmt(est[b])} allow")
    if not bad:
        return "continuous", (
            f"the errors against the reference fall at observed orders {order_txt} down to a common plateau of "
            f"{_fmt(plateau)} and the integrators agree to {_fmt(max_agree)} at dt={dt_fin}, within their estimated "
            "discretization errors")
    return "inconclusive", "neither continuous nor discrete: " + "; ".join(bad)
