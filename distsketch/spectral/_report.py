"""Plots (matplotlib, written to files) and the accuracy regression of Martin, Peng & Mahoney (2021)."""

from __future__ import annotations

import os

import numpy as np

from .._atomic import atomic_path
from ..errors import ParameterError
from ._analyze import SUMMARY_METRICS

__all__ = ["plot_esd", "plot_alpha_by_layer", "plot_zoo_metric", "quality_regression"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    with atomic_path(path, suffix=os.path.splitext(path)[1]) as tmp:  # the extension picks the format
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def plot_esd(evals, row, path):
    """One layer's ESD on log-log axes (log-binned density), the fitted power law from xmin, and
    xmin marked. ``row``: the layer's details row (alpha, xmin, name)."""
    plt = _plt()
    ev = np.asarray(evals, dtype=np.float64)
    ev = ev[ev > 1e-5]
    if len(ev) < 2:
        raise ParameterError(f"plot_esd: need at least 2 positive eigenvalues; got {len(ev)}")
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.logspace(np.log10(ev.min()), np.log10(ev.max()), min(100, max(10, len(ev) // 5)))
    dens, edges = np.histogram(ev, bins=bins, density=True)
    centers = np.sqrt(edges[1:] * edges[:-1])
    ax.loglog(centers[dens > 0], dens[dens > 0], "o", ms=3, label="ESD")
    alpha, xmin = float(row["alpha"]), float(row["xmin"])
    if alpha > 1 and xmin > 0:
        tail = ev[ev >= xmin]
        frac = len(tail) / len(ev)
        x = np.logspace(np.log10(xmin), np.log10(ev.max()), 50)
        ax.loglog(x, frac * (alpha - 1) / xmin * (x / xmin) ** (-alpha), "r--", label=f"power law, alpha={alpha:.3f}")
        ax.axvline(xmin, color="k", lw=0.8, ls=":", label=f"xmin={xmin:.3g}")
    ax.set_xlabel("eigenvalue of W^T W")
    ax.set_ylabel("density")
    ax.set_title(str(row.get("longname", row.get("name", ""))))
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_alpha_by_layer(details, path, *, title=None):
    """Alpha of each analysed layer against its depth (layer_id); failed fits (alpha = -1) omitted."""
    plt = _plt()
    d = details[details["alpha"] > 0]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(d["layer_id"], d["alpha"], "o-", ms=3)
    ax.axhline(2.0, color="g", lw=0.6, ls=":")
    ax.axhline(6.0, color="r", lw=0.6, ls=":")
    ax.set_xlabel("layer id (depth)")
    ax.set_ylabel("alpha")
    if title:
        ax.set_title(title)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_zoo_metric(summaries, accuracy, metric, path, *, by=None):
    """A summary metric of each model against a user-given accuracy column, one colour per series."""
    plt = _plt()
    if accuracy not in summaries or metric not in summaries:
        raise ParameterError(f"plot_zoo_metric: columns {accuracy!r} and {metric!r} must be in the summaries; "
                             f"have {list(summaries.columns)}")
    fig, ax = plt.subplots(figsize=(5, 4))
    groups = summaries.groupby(by) if by else [("all", summaries)]
    for name, g in groups:
        ax.plot(g[metric], g[accuracy], "o", label=str(name))
    ax.set_xlabel(metric)
    ax.set_ylabel(accuracy)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def quality_regression(summaries, accuracy, by="series", metrics=SUMMARY_METRICS):
    """Per series, the OLS fit of reported accuracy on each summary metric.

    Parameters
    ----------
    summaries : pandas.DataFrame
        One row per model with the summary metric columns (as :func:`summary` or the zoo writes).
    accuracy : str or mapping
        The accuracy column, or a mapping model -> accuracy (joined on the ``model`` column).
    by : str or None
        The series column; ``None`` treats all models as one series.

    Returns
    -------
    pandas.DataFrame
        series, metric, n, slope, intercept, rmse (root mean squared residual), r2 and
        kendall_tau (with its p-value) - the table of Martin, Peng & Mahoney (2021).
    """
    import pandas as pd
    from scipy import stats

    df = summaries.copy()
    if not isinstance(accuracy, str):
        df["accuracy"] = df["model"].map(dict(accuracy))
        accuracy = "accuracy"
    if accuracy not in df:
        raise ParameterError(f"quality_regression: no accuracy column {accuracy!r}; have {list(df.columns)}")
    if by is not None and by not in df:
        raise ParameterError(f"quality_regression: no series column {by!r}; have {list(df.columns)}")
    rows = []
    groups = df.groupby(by) if by is not None else [("all", df)]
    for series, g in groups:
        for m in metrics:
            if m not in g:
                continue
            sub = g[[m, accuracy]].dropna()
            x, y = sub[m].to_numpy(float), sub[accuracy].to_numpy(float)
            n = len(x)
            if n < 3 or np.ptp(x) == 0:
                rows.append({"series": series, "metric": m, "n": n, "slope": np.nan, "intercept": np.nan,
                             "rmse": np.nan, "r2": np.nan, "kendall_tau": np.nan, "kendall_p": np.nan})
                continue
            X = np.column_stack([np.ones(n), x])
            coef, *_ = np.linalg.lstsq(X, y, rcond=None)
            resid = y - X @ coef
            ss_tot = float(np.sum((y - y.mean()) ** 2))
            tau = stats.kendalltau(x, y)
            rows.append({"series": series, "metric": m, "n": n, "slope": float(coef[1]), "intercept": float(coef[0]),
                         "rmse": float(np.sqrt(np.mean(resid ** 2))),
                         "r2": float(1 - np.sum(resid ** 2) / ss_tot) if ss_tot > 0 else np.nan,
                         "kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue)})
    return pd.DataFrame(rows)
