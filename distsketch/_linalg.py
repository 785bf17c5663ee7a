"""Small dense numerics shared by the drivers (least squares, low rank), on neutral ground.

A driver package imports these from here, never from another driver's private modules.
``cond2_estimate`` is defined beside the least-squares gate that first needed it
(:mod:`distsketch.solve._cholqr`) and re-exported here.
"""

from __future__ import annotations

from .solve._cholqr import cond2_estimate

__all__ = ["cond2_estimate"]
