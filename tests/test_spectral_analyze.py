"""distsketch.spectral._analyze: every option set against WeightWatcher 0.7.7's stored outputs, both
layer conventions, and the layers it skips."""

import os

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from distsketch.errors import ParameterError  # noqa: E402
from distsketch.spectral import analyze, summary  # noqa: E402

from ._spectral_ww import DATA, MODELS, CASES, _Module, _Model, module_model, state_dict, reference, assert_matches  # noqa: E402


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("model", MODELS)
def test_matches_weightwatcher(model, case):
    ref = reference(model, case)
    got = analyze(module_model(model), **CASES[case])
    if len(ref) == 0:
        assert len(got) == 0
        return
    n = assert_matches(got, ref)
    assert n >= 25
    # WeightWatcher's model summary: means over the layers
    s = summary(got)
    for m, v in s.items():
        np.testing.assert_allclose(v, ref[m].mean(), rtol=1e-9)


@pytest.mark.parametrize("model", MODELS)
def test_state_dict_conventions_match_weightwatcher(model, tmp_path):
    ref = reference(model, "statedict")
    got = analyze(state_dict(model))
    assert_matches(got, ref)
    # the same weights from a safetensors file (keys sorted there) and from an .npz
    by_name = got.set_index("name")
    st = analyze(os.path.join(DATA, f"{model}.safetensors")).set_index("name")
    np.savez(tmp_path / "m.npz", **state_dict(model))
    nz = analyze(tmp_path / "m.npz").set_index("name")
    for other in (st, nz):
        assert sorted(other.index) == sorted(by_name.index)
        np.testing.assert_allclose(other.loc[by_name.index, "alpha"], by_name["alpha"], rtol=1e-12)


def test_zero_layers_skipped_swapped_conv_topk_and_thread_errors():
    rng = np.random.default_rng(8)
    src = {"a.weight": rng.standard_normal((80, 40)), "z.weight": np.zeros((80, 40)),
           "b.weight": rng.standard_normal((60, 50))}
    df = analyze(src, threads=2)
    assert list(df["name"]) == ["a", "b"]
    assert any(name == "z" and "all-zero" in why for _, name, why in df.attrs["skipped"])
    ref = analyze({k: v for k, v in src.items() if k != "z.weight"}, threads=1)
    np.testing.assert_allclose(df["alpha"], ref["alpha"], rtol=1e-12)
    # conv2d with out < in and an even kh*kw: WeightWatcher's M is the larger side, the spectrum
    # has 4 x 8 values; the top-k path sees it whole and says so
    Wc = rng.standard_normal((8, 16, 2, 2))
    conv = _Model([("", type("Net", (_Module,), {})()), ("c", type("Conv2d", (_Module,), {})(Wc))])
    full = analyze(conv).iloc[0]
    top = analyze(conv, max_evals=10, large_layers="randomized", topk=4, seed=0).iloc[0]
    assert top["num_evals"] == full["num_evals"] == 32 and bool(top["topk_converged"])
    np.testing.assert_allclose(top["alpha"], full["alpha"], rtol=1e-9)
    # a bad layer met in a worker thread is raised, not lost
    bad = dict(src, **{"n.weight": np.full((70, 40), np.nan)})
    with pytest.raises(ParameterError, match="non-finite"):
        analyze(bad, threads=2)
