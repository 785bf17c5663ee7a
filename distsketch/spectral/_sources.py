"""Weight sources -> the list of layers WeightWatcher 0.7.7 would analyse, in its order.

Two conventions, as in WeightWatcher:

* a module tree (a torch ``nn.Module``, or any object with ``named_modules()`` whose entries carry
  a ``weight``): every entry of ``named_modules()`` gets the next layer id from 0; its type comes
  from its class (``linear`` -> dense, ``conv1d``, ``conv2d``, ``embedding``, ``norm``, matched in
  that order in the lower-cased class string, as WeightWatcher matches them); its name is the last
  component of its dotted path;
* a state dict (a dict of arrays, ``.npz``, safetensors file or folder of shards, PyTorch
  ``.pt/.bin/.pth`` file): keys ending in ``.weight`` get ids from 1 in key order; 2-D weights are
  dense, 4-D weights conv2d, others unknown (skipped); the name is the key without ``.weight``.

Weights are read lazily, one layer at a time, and given to the analysis as WeightWatcher sees them:
torch tensors and reduced-precision floats become float32, float64 arrays stay float64.
Safetensors files are read by a small reader of their documented layout (an 8-byte header
length, a JSON header, raw little-endian data) through a memory map, so bf16 needs no torch and
a truncated or corrupt file is reported by name before any work on it.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InputTypeError, SourceError, SourceNotFoundError

__all__ = ["Layer", "list_layers", "describe_source", "source_files", "fingerprint", "SourceError", "SourceNotFoundError"]


@dataclass
class Layer:
    """One framework layer with a weight: what WeightWatcher calls a layer before filtering."""

    layer_id: int
    name: str
    longname: str
    layer_type: str
    shape: tuple
    load: Callable[[], np.ndarray] = field(repr=False)


# ----------------------------------------------------------------------------- safetensors
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


class SafetensorsFile:
    """Lazy, validated reader of one ``.safetensors`` file."""

    def __init__(self, path):
        self.path = os.fspath(path)
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SourceError(f"{self.path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100 * 2**20:
                raise SourceError(f"{self.path}: corrupt safetensors header (header length {n}, file size {size})")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise SourceError(f"{self.path}: corrupt safetensors header ({e})") from None
        header.pop("__metadata__", None)
        self.offset = 8 + n
        data_len = size - self.offset
        if not isinstance(header, dict):
            raise SourceError(f"{self.path}: corrupt safetensors header (a JSON {type(header).__name__}, "
                              "expected an object)")
        self.entries = {}
        for key, info in header.items():
            try:
                dtype, shape, (b0, b1) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise SourceError(f"{self.path}: corrupt safetensors entry {key!r}") from None
            if dtype not in _ST_DTYPES:
                raise SourceError(f"{self.path}: tensor {key!r} has unsupported dtype {dtype}")
            if not all(_is_count(v) for v in (*shape, b0, b1)) or b0 > b1:
                raise SourceError(f"{self.path}: tensor {key!r} has shape {list(shape)} and data_offsets "
                                  f"{[b0, b1]}; expected non-negative integers with begin <= end (corrupt file)")
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_ST_DTYPES[dtype]).itemsize
            if b1 > data_len or b1 - b0 != nbytes:
                raise SourceError(f"{self.path}: tensor {key!r} ({dtype}, shape {list(shape)}: {nbytes} bytes) "
                                  f"takes bytes {b0}..{b1} of a data section of {data_len} bytes "
                                  "(truncated or corrupt file)")
            self.entries[key] = (dtype, shape, b0, b1)
        spans = sorted((b0, b1, key) for key, (_, _, b0, b1) in self.entries.items() if b1 > b0)
        for (_, e0, k0), (b1_, _, k1) in zip(spans, spans[1:]):
            if b1_ < e0:
                raise SourceError(f"{self.path}: tensors {k0!r} and {k1!r} overlap in the data section "
                                  f"(bytes from {b1_} are claimed by both; corrupt file)")

    def keys(self):
        return list(self.entries)

    def shape(self, key):
        return self.entries[key][1]

    def get(self, key):
        dtype, shape, b0, b1 = self.entries[key]
        raw = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.offset + b0, shape=(b1 - b0,)) \
            if b1 > b0 else np.zeros(0, np.uint8)
        arr = raw.view(_ST_DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":
            return (arr.astype(np.uint32) << 16).view(np.float32)
        return np.array(arr)


def _is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# ----------------------------------------------------------------------------- conversions
def _to_numpy(w, name="weight"):
    """WeightWatcher's view of a weight: torch -> float32 numpy; half precision -> float32.
    Complex weights and masked arrays with masked entries are refused (a real spectrum of the
    real part, or of the data under the mask, would be a silent guess)."""
    if hasattr(w, "detach"):  # torch tensor or parameter
        if getattr(w, "is_complex", lambda: False)():
            raise InputTypeError(f"layer {name}: weight is complex ({w.dtype}); spectra are defined here for real "
                                 "weights only: pass the real part or the magnitudes explicitly")
        return w.detach().to("cpu").float().numpy()
    if np.ma.isMaskedArray(w):
        if np.ma.is_masked(w):
            raise InputTypeError(f"layer {name}: weight is a masked array with {int(np.ma.count_masked(w))} masked "
                                 "entries; fill them (W.filled(0)) or pass the unmasked data (W.data) explicitly")
        w = np.ma.getdata(w)
    a = np.asarray(w)
    if a.dtype.kind == "c":
        raise InputTypeError(f"layer {name}: weight is complex ({a.dtype}); spectra are defined here for real "
                             "weights only: pass the real part (W.real) or the magnitudes (abs(W)) explicitly")
    if a.dtype.kind not in "fiub":
        raise InputTypeError(f"layer {name}: weight has dtype {a.dtype}; expected a real numeric array")
    if a.dtype.kind != "f" or a.dtype.itemsize < 4:
        a = a.astype(np.float32)
    return a


def _shape(w):
    return tuple(int(s) for s in (w.shape if hasattr(w, "shape") else np.shape(w)))


def module_layer_type(module) -> str:
    """WeightWatcher's PyTorch layer type: substring tests on the lower-cased class string."""
    t = str(type(module)).lower()
    for key, kind in (("linear", "dense"), ("conv1d", "conv1d"), ("conv2d", "conv2d"),
                      ("embedding", "embedding"), ("norm", "norm")):
        if key in t:
            return kind
    return "unknown"


def _module_layers(model, start_id=0):
    layers = []
    for i, (longname, mod) in enumerate(model.named_modules()):
        w = getattr(mod, "weight", None)
        kind = module_layer_type(mod) if w is not None else "unknown"
        name = longname.split(".")[-1] if longname else type(mod).__name__
        analysed = kind not in ("unknown", "norm")
        layers.append(Layer(start_id + i, name, longname or type(mod).__name__, kind,
                            _shape(w) if w is not None else (),
                            (lambda w=w, n=longname: _to_numpy(w, n)) if analysed else (lambda: None)))
    return layers


def _statedict_layers(keys, shape_of, getter, start_id=1):
    keys = list(keys)
    weight_keys = [k for k in keys if k.endswith(".weight")]
    layers = []
    if weight_keys:
        names = [(k, k[: -len(".weight")]) for k in weight_keys]
    else:  # plain arrays (an .npz of matrices): every key is a layer
        names = [(k, k) for k in keys]
    for lid, (key, name) in enumerate(names, start=start_id):
        shape = shape_of(key)
        kind = {2: "dense", 4: "conv2d"}.get(len(shape), "unknown")
        layers.append(Layer(lid, name, name, kind, shape, (lambda key=key: _to_numpy(getter(key), key))))
    return layers


def _torch_load(path):
    try:
        import torch
    except ImportError:
        raise SourceError(f"{path}: reading a PyTorch checkpoint needs torch (pip install torch==2.13.0); "
                          "safetensors and .npz files need none") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for damaged files
        raise SourceError(f"{path}: cannot load PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise SourceError(f"{path}: expected a state dict (a dict of tensors); got {type(obj).__name__}")
    return obj


def list_layers(source) -> list[Layer]:
    """All layers of ``source`` with their ids, names and types, before any filtering."""
    if hasattr(source, "named_modules"):
        return _module_layers(source)
    if isinstance(source, dict):
        return _statedict_layers(source.keys(), lambda k: _shape(source[k]), source.__getitem__)
    if not isinstance(source, (str, os.PathLike)):
        raise InputTypeError("source must be a safetensors file or folder, a .pt/.bin/.pth or .npz file, a dict of "
                             f"arrays or a torch nn.Module; got {type(source).__name__}")
    path = os.fspath(source)
    files = source_files(path)
    if all(f.endswith(".safetensors") for f in files):
        readers = [SafetensorsFile(f) for f in files]
        where = {}
        for r in readers:
            for k in r.keys():
                if k in where:
                    _repeated(path, k, where[k].path, r.path)
                where[k] = r
        return _statedict_layers(where.keys(), lambda k: where[k].shape(k), lambda k: where[k].get(k))
    if len(files) == 1 and files[0].endswith(".npz"):
        try:
            z = np.load(files[0], allow_pickle=False)
            keys = list(z.keys())
        except Exception as e:  # noqa: BLE001 - zipfile / numpy raise several types
            raise SourceError(f"{files[0]}: cannot read .npz ({type(e).__name__}: {e})") from None
        return _statedict_layers(keys, lambda k: z[k].shape, z.__getitem__)
    if all(f.endswith((".bin", ".pt", ".pth")) for f in files):
        state, origin = {}, {}
        for f in files:
            part = _torch_load(f)
            for k in part:
                if k in state:
                    _repeated(path, k, origin[k], f)
                origin[k] = f
            state.update(part)
        return _statedict_layers(state.keys(), lambda k: _shape(state[k]), state.__getitem__)
    raise SourceError(f"{path}: unknown model format; expected .safetensors, .npz, .pt, .bin or .pth")


def source_files(path) -> list[str]:
    """The files a path source is read from: the file itself, or a folder's shards (its
    ``.safetensors`` files, else its ``.bin/.pt/.pth`` files), sorted."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SourceNotFoundError(f"{path}: no such file or folder")
    if not os.path.isdir(path):
        return [path]
    shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not shards:
        shards = sorted(f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth")))
    if not shards:
        raise SourceNotFoundError(f"{path}: folder holds no .safetensors, .bin, .pt or .pth files")
    return [os.path.join(path, f) for f in shards]


def _repeated(path, key, first, second):
    raise SourceError(f"{path}: tensor {key!r} is in both {os.path.basename(first)} and {os.path.basename(second)}; "
                      "the files of a folder are read as shards of one model, whose tensor names are unique "
                      "(pass separate models as separate sources)")


def fingerprint(source, block=1 << 24) -> str:
    """A content fingerprint of a path source: BLAKE2b (128 bits) over, for each of its files
    (:func:`source_files`), the file's name within the source, its size and every byte. It
    ignores modification times and where the source lies, so a copy has the same fingerprint
    and any changed byte gives another. Reads the whole source once (BLAKE2b runs at about
    1 GB/s on one core)."""
    import hashlib

    path = os.fspath(source)
    h = hashlib.blake2b(b"distsketch-model-v1", digest_size=16)
    for f in source_files(path):
        name = os.path.basename(f) if os.path.isdir(path) else ""
        try:
            size = os.path.getsize(f)
            h.update(f"{name}\0{size}\0".encode())
            with open(f, "rb") as fh:
                while chunk := fh.read(block):
                    h.update(chunk)
        except OSError as e:
            raise SourceError(f"{f}: cannot be read ({e.strerror})") from None
    return h.hexdigest()


def describe_source(source) -> str:
    """A short label for a source (its path, or its type)."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return type(source).__name__
