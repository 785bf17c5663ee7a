"""Spectral analysis of neural-network weight matrices, WeightWatcher 0.7.7 compatible.

``analyze`` one model, ``analyze_zoo`` many (Dask, resumable), ``summary`` per model,
``quality_regression`` of reported accuracy on the summary metrics, and plots.
"""

from ._analyze import SUMMARY_METRICS, analyze, summary
from ._powerlaw import fit_power_law
from ._report import plot_alpha_by_layer, plot_esd, plot_zoo_metric, quality_regression
from ._sources import SourceError, SourceNotFoundError, list_layers
from ._zoo import analyze_zoo, read_zoo

__all__ = ["analyze", "summary", "analyze_zoo", "read_zoo", "quality_regression", "fit_power_law", "list_layers",
           "plot_esd", "plot_alpha_by_layer", "plot_zoo_metric", "SUMMARY_METRICS", "SourceError",
           "SourceNotFoundError"]
