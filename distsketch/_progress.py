"""Progress bars for long passes: dask's own bars, on only when asked (the command line asks).

Every bar and log line goes to **stderr**: stdout carries only results (the command line's
JSON), so ``distsketch lstsq ... > out.json`` leaves valid JSON in the file.
"""

from __future__ import annotations

import contextlib
import sys

__all__ = ["progress_for", "show"]


def _client():
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


@contextlib.contextmanager
def progress_for(enabled: bool):
    """Show a bar (on stderr) for work computed inside the block (threaded scheduler only).

    Under a distributed Client, :func:`show` is used on the persisted result instead.
    """
    if not enabled or _client() is not None:
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(minimum=1.0, out=sys.stderr):
        yield


def show(*persisted) -> None:
    """Text progress bar (on stderr) for persisted collections on the active distributed Client;
    returns when they are computed."""
    if _client() is None:
        return
    from distributed import progress

    # distributed's text bar writes to sys.stdout: send it to stderr while it runs
    with contextlib.redirect_stdout(sys.stderr):
        progress(*persisted, notebook=False)
        print(file=sys.stderr)  # end the bar's line
