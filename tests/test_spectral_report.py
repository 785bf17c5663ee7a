"""distsketch.spectral._report: quality regression against scipy, and plots."""

import numpy as np
import pytest
from scipy import stats

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from distsketch.spectral import analyze, plot_alpha_by_layer, plot_zoo_metric, quality_regression, plot_esd  # noqa: E402

from ._spectral_ww import module_model  # noqa: E402


def test_quality_regression_against_scipy():
    rng = np.random.default_rng(3)
    rows = []
    for series in ("resnet", "vgg"):
        for k in range(8):
            alpha = rng.uniform(2, 5)
            rows.append({"model": f"{series}{k}", "series": series, "alpha": alpha,
                         "log_norm": rng.normal(), "acc": 90 - 4 * alpha + rng.normal(0, 0.5)})
    summ = pd.DataFrame(rows)
    table = quality_regression(summ, "acc", by="series", metrics=["alpha", "log_norm"])
    for series, g in summ.groupby("series"):
        lr = stats.linregress(g["alpha"], g["acc"])
        row = table[(table.series == series) & (table.metric == "alpha")].iloc[0]
        resid = g["acc"] - (lr.intercept + lr.slope * g["alpha"])
        np.testing.assert_allclose([row.slope, row.intercept, row.r2, row.rmse],
                                   [lr.slope, lr.intercept, lr.rvalue ** 2, np.sqrt(np.mean(resid ** 2))], rtol=1e-10)
        np.testing.assert_allclose(row.kendall_tau, stats.kendalltau(g["alpha"], g["acc"]).statistic, rtol=1e-12)
        assert row.kendall_tau < -0.5
    # accuracy given as a mapping
    t2 = quality_regression(summ.drop(columns="acc"), dict(zip(summ.model, summ.acc)), by=None, metrics=["alpha"])
    assert t2.n.iloc[0] == 16


def test_plots_written(tmp_path):
    df, ev = analyze(module_model("mixed"), return_evals=True)
    row = df.iloc[0]
    p = plot_esd(ev[row.layer_id], row, tmp_path / "esd.png")
    q = plot_alpha_by_layer(df, tmp_path / "alpha.png", title="mixed")
    summ = pd.DataFrame({"alpha": [2.1, 3.0, 4.0], "acc": [80, 75, 70], "series": ["a", "a", "b"]})
    z = plot_zoo_metric(summ, "acc", "alpha", tmp_path / "zoo.png", by="series")
    for f in (p, q, z):
        with open(f, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
