"""Progress bars for long passes: dask's own bars, on only when asked (the command line asks)."""

from __future__ import annotations

import contextlib

__all__ = ["progress_for", "show"]


def _client():
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


@contextlib.contextmanager
def progress_for(enabled: bool):
    """Show a bar for work computed inside the block (threaded scheduler only).

    Under a distributed Client, :func:`show` is used on the persisted result instead.
    """
    if not enabled or _client() is not None:
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(minimum=1.0):
        yield


def show(*persisted) -> None:
    """Text progress bar for persisted collections on the active distributed Client."""
    if _client() is None:
        return
    from distributed import progress

    progress(*persisted, notebook=False)
