"""distsketch.spectral._powerlaw: the fit recovers known power laws and equals WeightWatcher's loop."""

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from distsketch.spectral import fit_power_law  # noqa: E402


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_power_law_fit_recovers_alpha(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    xmin = 0.5
    x = xmin * (1 - rng.random(4000)) ** (-1 / (alpha - 1))       # Pareto, p(x) ~ x^-alpha, x >= xmin
    body = rng.uniform(0.01, xmin, 2000)                           # a bulk below the tail
    fit = fit_power_law(np.concatenate([x, body]))
    assert abs(fit.alpha - alpha) < 4 * fit.sigma + 0.05
    assert 0.8 * xmin <= fit.xmin <= 3 * xmin


def _ww_fit_loop(x):
    """WeightWatcher's fit written as its plain loop (the reference for the vectorised fit)."""
    x = np.sort(x)
    N = len(x)
    L = np.log(x)
    Ds = np.ones(N - 1)
    alphas = np.zeros(N - 1)
    for i in range(N - 1):
        n = float(N - i)
        if N < 20:
            if N - i < 8 or np.sum(L[i:]) - n * L[i] <= 1e-12:
                continue
            a = 1 + (n - 1) / (np.sum(L[i:]) - n * L[i])
        else:
            a = 1 + n / (np.sum(L[i:]) - n * L[i])
        alphas[i] = a
        if a > 1:
            Ds[i] = np.max(np.abs(1 - (x[i:] / x[i]) ** (1 - a) - np.arange(n) / n))
    i = int(np.argmin(Ds))
    return alphas[i], x[i], Ds[i]


@pytest.mark.parametrize("n", [10, 19, 20, 64, 700])
def test_vectorised_fit_equals_loop(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        x = rng.gamma(0.7, 2.0, n) + 1e-3
        fit = fit_power_law(x)
        a, xmin, D = _ww_fit_loop(x)
        np.testing.assert_allclose([fit.alpha, fit.xmin, fit.D], [a, xmin, D], rtol=1e-12)


def _spectra(rng):
    """Spectra the pruned KS sweep must handle: heavy tails, Marchenko-Pastur bulks, smooth
    log-normal ones, and many exact ties (rounded values)."""
    W = rng.standard_normal((900, 1100)) / 30.0
    return {"pareto": np.sort(rng.pareto(1.5, 3000) + 1e-2),
            "mp": np.sort(np.linalg.eigvalsh(W @ W.T)),
            "lognormal": np.sort(np.exp(1.5 * rng.standard_normal(2500))),
            "ties": np.sort(np.round(rng.pareto(2.0, 2000) * 10) / 10 + 0.1),
            "short": np.sort(rng.gamma(0.7, 2.0, 300) + 1e-3)}


@pytest.mark.parametrize("kind", ["pareto", "mp", "lognormal", "ties", "short"])
def test_pruned_ks_sweep_picks_the_full_sweeps_minimum(kind):
    """_ks_distances prunes candidates by lower bounds from a strided sweep; the first minimum
    (index and value) must be the full sweep's, and every pruned entry a bound below its D."""
    from distsketch.spectral import _powerlaw as pl

    x = _spectra(np.random.default_rng(5))[kind]
    x = x[x > pl.EVALS_THRESH]
    N = len(x)
    L = np.log(x)
    n = (N - np.arange(N - 1)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = 1.0 + n / (np.cumsum(L[::-1])[::-1][:-1] - n * L[:-1])
    cand = np.flatnonzero(alphas > 1)
    full = pl._ks_distances(x, alphas, cand, stride=1)
    pruned = pl._ks_distances(x, alphas, cand)
    assert int(np.argmin(pruned)) == int(np.argmin(full)) and pruned.min() == full.min()
    computed = pruned == full
    assert np.all(pruned[~computed] <= full[~computed] * (1 + 1e-12))
    assert np.all(pruned[~computed] > full.min())
    if kind != "short":  # the pruning prunes: most of the O(N^2) work is left out
        assert np.sum(N - cand[computed]) < 0.5 * np.sum(N - cand)
    a, xmin, D = _ww_fit_loop(x)
    fit = fit_power_law(x)
    np.testing.assert_allclose([fit.alpha, fit.xmin, fit.D], [a, xmin, D], rtol=1e-12)
