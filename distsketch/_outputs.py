"""Zarr outputs of the command line and the MPI drivers: checked before any work, written beside
the target, marked as ours, published atomically (:mod:`distsketch._atomic`).

``--overwrite`` replaces only a group that carries the marker attribute (a group this code
wrote); anything else at the output path is refused, before and again at publication.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ._atomic import atomic_folder, publish_folder, temporary_name

__all__ = ["MARKER", "is_our_output", "check_output_path", "publish_output", "write_zarr_group", "temporary_name"]

MARKER = "distsketch"  # group attribute that marks a Zarr output written by distsketch


def is_our_output(path: str) -> bool:
    """Whether ``path`` is a Zarr group distsketch wrote (its zarr.json carries the marker)."""
    try:
        with open(os.path.join(path, "zarr.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("node_type") == "group" and MARKER in meta.get("attributes", {})


def check_output_path(path: str, overwrite: bool, inputs=()) -> None:
    """Refuse, before any work, an output path that cannot be written or must not be replaced:
    an existing path without ``overwrite``; with it, anything but a Zarr group distsketch
    wrote (a foreign folder, a file, an input store); a path equal to, inside or around an
    input; a path whose nearest existing parent is not a writable folder."""
    from .errors import ParameterError

    full = os.path.abspath(path)
    for inp in inputs:
        src = os.path.abspath(str(inp))
        if full == src or src.startswith(full + os.sep) or full.startswith(src + os.sep):
            raise ParameterError(f"--out {path!r} overlaps the input {inp!r}; give a separate output path")
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(f"{path!r} exists; pass --overwrite to replace it")
        if not is_our_output(path):
            raise ParameterError(f"--out {path!r} exists and is not a Zarr group written by distsketch (no "
                                 f"{MARKER!r} attribute); --overwrite replaces only such outputs: remove it "
                                 "yourself or give another path")
    parent = os.path.dirname(full)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ParameterError(f"--out {path!r} cannot be created: {parent!r} is not a writable folder")


def _refuse_foreign(path: str) -> bool:
    return is_our_output(path)


def publish_output(tmp: str, path: str) -> None:
    """Mark the finished group ``tmp`` as ours and publish it at ``path``, replacing only a
    distsketch output there (one that appeared during the run is refused: the result stays in ``tmp``)."""
    import zarr

    zarr.open_group(tmp, mode="r+").attrs[MARKER] = {"output": True}  # a later --overwrite may replace it
    try:
        publish_folder(tmp, path, may_replace=_refuse_foreign)
    except FileExistsError:
        raise FileExistsError(f"{path!r} appeared during the run and is not a distsketch output; "
                              f"the result is left in {tmp!r}") from None


def _fill(dtype):
    """NaN for floating outputs: a chunk lost from the store then reads as NaN, never as zeros."""
    return np.nan if np.dtype(dtype).kind in "fc" else None


def write_zarr_group(path: str, arrays: dict, attrs: dict) -> None:
    """Write numpy (or dask) arrays into a new Zarr group, published atomically at ``path``
    (see :func:`publish_output`); on a failure nothing is left beside ``path``."""
    import dask.array as da
    import zarr

    from .problems import _zstd

    with atomic_folder(path, may_replace=_refuse_foreign) as tmp:
        grp = zarr.open_group(tmp, mode="w")
        for name, arr in arrays.items():
            if isinstance(arr, da.Array):
                # zarr needs regular chunks: the largest chunk along each axis
                chunks = tuple(max(c) if c else 1 for c in arr.chunks)
                arr = arr.rechunk(chunks)
                z = grp.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=chunks,
                                     fill_value=_fill(arr.dtype), compressors=_zstd())
                da.store(arr, z, lock=False)
            else:
                arr = np.asarray(arr)
                grp.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=arr.shape or (1,),
                                 fill_value=_fill(arr.dtype), compressors=_zstd())[...] = arr
        grp.attrs.update({**attrs, MARKER: {"output": True}})
