"""Spectral analysis of neural-network weight matrices, WeightWatcher 0.7.7 compatible."""

from ._analyze import analyze, summary
from ._powerlaw import fit_power_law
from ._sources import list_layers

__all__ = ["analyze", "summary", "fit_power_law", "list_layers"]
