"""Counter-based random streams: every random number is addressed by (seed, stream, panel).

See :mod:`distsketch.random.streams`.
"""

from .streams import DEFAULT_PANEL, panel_generator, resolve_seed, stream_generator

__all__ = ["DEFAULT_PANEL", "panel_generator", "resolve_seed", "stream_generator"]
