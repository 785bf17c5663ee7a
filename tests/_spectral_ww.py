"""WeightWatcher 0.7.7's stored outputs (tests/data/ww, made by scripts/make_ww_fixtures.py) and the
fixture models as module trees and state dicts, without torch: shared by the spectral tests."""

import json
import os

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from distsketch.spectral._sources import SafetensorsFile  # noqa: E402


DATA = os.path.join(os.path.dirname(__file__), "data", "ww")


MODELS = ("mixed", "traps")


with open(os.path.join(DATA, "cases.json")) as _f:  # the option sets the fixtures were made with
    CASES = {k: v for k, v in json.load(_f).items() if k != "randomize"}  # randomize: compared statistically


EXACT_1E9 = ["alpha", "xmin", "xmax", "D", "sigma", "alpha_weighted", "log_norm", "log_spectral_norm", "log_alpha_norm",
             "stable_rank", "entropy", "lambda_max", "sv_max", "norm", "spectral_norm", "raw_alpha",
             "detX_val", "detX_val_unrescaled", "Q"]


MP_1E6 = ["sigma_mp", "mp_softrank", "bulk_max", "bulk_min", "W_scale"]


INTS = ["layer_id", "N", "M", "rf", "num_evals", "num_pl_spikes", "matrix_rank", "rank_loss", "weak_rank_loss",
        "num_spikes", "num_fingers", "detX_num", "num_ERG_spikes", "ERG_gap"]


STRINGS = ["name", "longname", "layer_type", "status", "warning"]


class _Module:
    """Stand-in for a torch module: WeightWatcher types layers by their class name."""

    def __init__(self, weight=None):
        if weight is not None:
            self.weight = weight


class _Model:
    def __init__(self, entries):
        self.entries = entries

    def named_modules(self):
        return iter(self.entries)


def module_model(name):
    """The fixture model as a module tree (class names from the torch model), no torch needed."""
    with open(os.path.join(DATA, f"{name}.modules.json")) as f:
        manifest = json.load(f)
    st = SafetensorsFile(os.path.join(DATA, f"{name}.safetensors"))
    entries = [(path, type(cls, (_Module,), {})(st.get(path + ".weight") if has_w else None))
               for path, cls, has_w in manifest]
    return _Model(entries)


def state_dict(name):
    """The fixture's state dict in module order (the order torch's state_dict() had)."""
    with open(os.path.join(DATA, f"{name}.modules.json")) as f:
        manifest = json.load(f)
    st = SafetensorsFile(os.path.join(DATA, f"{name}.safetensors"))
    return {p + ".weight": st.get(p + ".weight") for p, _, has_w in manifest if has_w}


def reference(name, case):
    path = os.path.join(DATA, f"{name}.{case}.csv")
    if os.path.getsize(path) <= 1:
        return pd.DataFrame()
    return pd.read_csv(path, dtype={"name": str, "longname": str, "warning": str}, keep_default_na=False,
                       na_values=[""])


def assert_matches(got, ref):
    assert list(got["layer_id"]) == list(ref["layer_id"])
    checked = 0
    for col in ref.columns:
        if col in EXACT_1E9 or col in MP_1E6:
            rtol = 1e-9 if col in EXACT_1E9 else 1e-6
            np.testing.assert_allclose(got[col].astype(float), ref[col].astype(float), rtol=rtol, atol=0,
                                       err_msg=col)
        elif col == "sv_min":  # small singular values: relative accuracy eps * (sv_max / sv_min)^2
            rtol = np.maximum(1e-9, 1e-15 * (ref["sv_max"] / ref["sv_min"]) ** 2)
            assert np.all(np.abs(got[col] - ref[col]) <= rtol * ref[col]), col
        elif col in INTS:
            np.testing.assert_array_equal(got[col].astype(int), ref[col].astype(int), err_msg=col)
        elif col in STRINGS:
            assert list(got[col].fillna("").astype(str)) == list(ref[col].fillna("").astype(str)), col
        else:
            continue
        checked += 1
    return checked


def _with_spectrum(rng, n, m, tail):
    """n x m matrix whose eigenvalues of W^T W are a flat bulk in [0.05, 1] and ``tail``."""
    U, _ = np.linalg.qr(rng.standard_normal((n, m)))
    V, _ = np.linalg.qr(rng.standard_normal((m, m)))
    lam = np.concatenate([rng.uniform(0.05, 1.0, m - len(tail)), tail])
    return (U * np.sqrt(lam)) @ V.T
