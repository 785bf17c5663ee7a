"""Atomic writes: the one place where distsketch puts a file or a folder (a Zarr store) in place.

A reader of ``path`` sees either the old content or the new content, never a half-written
file, and a failure leaves the old content and no temporary file behind.

How (POSIX):

* files: write a temporary file in the same folder (so the rename never crosses a file
  system), flush and ``fsync`` it, ``os.replace`` it onto ``path`` (atomic on POSIX: a
  reader opening ``path`` gets the old or the new inode), then ``fsync`` the folder so the
  rename itself survives a power cut.
* folders (Zarr stores): write everything into a temporary folder beside ``path``,
  ``fsync`` every file and folder in it, then publish. POSIX has no atomic exchange of two
  non-empty folders (``rename`` onto a non-empty folder fails; Linux's
  ``renameat2(RENAME_EXCHANGE)`` is not portable), so publishing is two renames: the old
  folder is renamed aside (``path.old-<pid>-<random>``), the new one renamed in, the parent
  ``fsync``-ed, and only then the old one deleted. Each rename is atomic; between the two,
  ``path`` is briefly absent (a reader gets "not found", never a mix of old and new chunks),
  and if the second rename fails the old folder is renamed back. A crash between the two
  renames leaves the old output intact under the ``.old-`` name.

What is not atomic: a folder replacement as seen by a reader that holds files of the old
folder open (it keeps reading the old ones, which is what we want), and anything on object
stores (fsspec URLs), which have no rename; those outputs are written in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid

__all__ = ["atomic_file", "atomic_path", "write_bytes", "write_text", "write_json", "atomic_folder", "publish_folder",
           "temporary_name", "discard"]


def temporary_name(path: str, tag: str = "tmp") -> str:
    """A fresh name beside ``path`` (same folder, so a rename never crosses a file system)."""
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync_folder(folder: str) -> None:
    """Make a rename or a new entry in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened; the rename is still done
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: str) -> None:
    """fsync every file and then every folder under ``root`` (deepest first), and ``root`` itself."""
    for folder, _, files in os.walk(root, topdown=False):
        for f in files:
            p = os.path.join(folder, f)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_folder(folder)


def discard(path) -> None:
    """Remove a temporary file or folder (one of ours, left by a failed write); no error if absent."""
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb"):
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    Yields the open file object. On an exception the temporary file is removed and
    ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_file(p, "w") as f:
    ...     _ = f.write("hello")
    >>> open(p).read()
    'hello'
    """
    if "w" not in mode:
        from .errors import ParameterError

        raise ParameterError(f"atomic_file: mode must write ('w' or 'wb'); got {mode!r}: open the file "
                             "directly to read or append")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    _fsync_folder(folder)


@contextlib.contextmanager
def atomic_path(path, *, suffix: str = ""):
    """A temporary file name beside ``path`` for writers that take a name (``savefig``,
    ``to_parquet``); on a clean exit the file is fsync-ed and replaces ``path``.

    The name starts with a dot and ends with ``suffix`` (give the extension, e.g. ``".png"``,
    for writers that choose the format by it; by default the name does not end like ``path``,
    so a reader listing ``*.parquet`` never picks up an unfinished file).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_name(path) + suffix
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    _fsync_folder(folder)


def write_bytes(path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (see the module notes)."""
    with atomic_file(path, "wb") as f:
        f.write(data)


def write_text(path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) atomically."""
    write_bytes(path, text.encode())


def write_json(path, obj, **dumps_options) -> None:
    """Replace ``path`` by ``obj`` as JSON atomically; ``dumps_options`` go to :func:`json.dumps`.

    The object is serialised before the file is touched, so an object that cannot be written
    as JSON leaves ``path`` unchanged.
    """
    write_text(path, json.dumps(obj, **dumps_options))


def publish_folder(tmp, path, *, may_replace=None) -> None:
    """Put the finished folder ``tmp`` at ``path``: fsync it, rename any old ``path`` aside,
    rename ``tmp`` in, then delete the old one.

    Parameters
    ----------
    tmp, path : str
        ``tmp`` should be beside ``path`` (see :func:`temporary_name`).
    may_replace : callable, optional
        ``may_replace(path) -> bool`` for an existing ``path``; when it says no, a
        ``FileExistsError`` is raised and ``tmp`` is left in place (the result is not lost).
        Default: any existing ``path`` is replaced.
    """
    tmp, path = os.fspath(tmp), os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    _fsync_tree(tmp)
    old = None
    if os.path.lexists(path):
        if may_replace is not None and not may_replace(path):
            raise FileExistsError(f"{path!r} exists and may not be replaced; the new result is left in {tmp!r}")
        old = temporary_name(path, "old")
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)  # put the old output back
        raise
    _fsync_folder(parent)
    if old is not None:
        discard(old)


@contextlib.contextmanager
def atomic_folder(path, *, may_replace=None):
    """A fresh temporary folder beside ``path`` to write into; on a clean exit it is published
    at ``path`` (:func:`publish_folder`), on an exception deleted (``path`` untouched).

    Yields the temporary folder's path (it does not exist yet: writers such as
    ``zarr.open_group(tmp, mode="w")`` create it).
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
    except BaseException:
        discard(tmp)
        raise
    try:
        publish_folder(tmp, path, may_replace=may_replace)
    except FileExistsError:
        raise  # refused: the result stays in tmp, as the message says
    except BaseException:
        discard(tmp)
        raise
