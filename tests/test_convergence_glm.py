"""synthetic/convergence.py's binomial and quasi-binomial GLM equal statsmodels' GLM(Binomial) on fixed data.

The fit is written by hand (Newton's method on standardised columns); statsmodels fits the same model by IRLS.
Coefficients, standard errors, log-likelihood (statsmodels adds the constant sum log C(n, k)), deviance, the
Pearson dispersion and the quasi-binomial standard errors must agree to tight tolerance.

The quasi-binomial reference is ``GLM(k / n, X, family=Binomial(), var_weights=n).fit(scale='X2')`` (R's
``quasibinomial``: phi = Pearson X^2 / residual degrees of freedom). statsmodels' two-column endog ``[k, n - k]``
gives the same coefficients, standard errors and Pearson X^2, but its ``scale='X2'`` comes out divided by n
(statsmodels 0.15), so it is not the quasi reference here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import gammaln

from mcicl.synthetic.convergence import fit_binomial, fit_tail, pearson_dispersion

sm = pytest.importorskip("statsmodels.api", reason="statsmodels is in the test extra (pip install 'mcicl[test]')")

# A decaying 0-1 error curve of error counts out of 400 test prompts, over-dispersed on purpose (the evaluations
# share one model, so the counts scatter more than a binomial), with zeros at the end.
STEPS = np.array([40, 80, 120, 160, 200, 240, 280, 320, 360, 400, 440, 480], float)
N_TEST = 400
ERRORS = np.array([41, 22, 30, 9, 17, 3, 9, 1, 4, 0, 1, 0], float)


def _designs():
    t = STEPS
    one = np.ones_like(t)
    centre = t.mean()
    return {"exponential": np.column_stack([one, t]), "power law": np.column_stack([one, np.log(t)]),
            "quadratic": np.column_stack([one, t - centre, (t - centre) ** 2])}


def _quasi(k, n, X):
    """statsmodels' quasi-binomial fit (proportions weighted by their trials, scale = Pearson X^2 / dof)."""
    return sm.GLM(k / n, X, family=sm.families.Binomial(), var_weights=n).fit(scale="X2", tol=1e-13, maxiter=200)


def _log_binomial_constant(k, n):
    return float(np.sum(gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)))


@pytest.mark.parametrize("name", ["exponential", "power law", "quadratic"])
def test_binomial_fit_equals_statsmodels(name):
    X = _designs()[name]
    k, n = ERRORS, np.full(len(ERRORS), float(N_TEST))
    ours = fit_binomial(X, k, n)
    endog = np.column_stack([k, n - k])
    ref = sm.GLM(endog, X, family=sm.families.Binomial()).fit(tol=1e-13, maxiter=200)
    np.testing.assert_allclose(ours.coef, ref.params, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(np.sqrt(np.diag(ours.cov)), ref.bse, rtol=1e-6)
    np.testing.assert_allclose(ours.cov, ref.cov_params(), rtol=1e-6, atol=1e-14)
    assert ours.loglik + _log_binomial_constant(k, n) == pytest.approx(ref.llf, rel=1e-10)
    p = 1 / (1 + np.exp(-(X @ ours.coef)))
    with np.errstate(divide="ignore", invalid="ignore"):  # the saturated model's 0 log 0 terms are 0
        sat = (np.where(k > 0, k * np.log(k / (n * p)), 0.0)
               + np.where(n - k > 0, (n - k) * np.log((n - k) / (n - n * p)), 0.0))
    assert 2 * sat.sum() == pytest.approx(ref.deviance, rel=1e-8)
    # Quasi-binomial: the Pearson dispersion X^2 / (points - parameters), covariance scaled by it.
    assert ours.dispersion == pytest.approx(ref.pearson_chi2 / ref.df_resid, rel=1e-8)
    assert ours.dispersion == pytest.approx(pearson_dispersion(k, n, p, X.shape[1]), rel=1e-12)
    quasi = _quasi(k, n, X)
    np.testing.assert_allclose(quasi.params, ref.params, rtol=1e-10)  # the same coefficients
    assert quasi.scale == pytest.approx(ours.dispersion, rel=1e-8)
    np.testing.assert_allclose(np.sqrt(np.diag(ours.quasi_cov)), quasi.bse, rtol=1e-6)
    assert ours.aic == pytest.approx(ref.aic + 2 * _log_binomial_constant(k, n), rel=1e-10)


def test_tail_fit_rate_and_its_standard_errors_equal_statsmodels_on_the_tail_window():
    fit = fit_tail(STEPS, ERRORS / N_TEST, N_TEST)
    # The window: from the first error <= 10% (step 80: 22/400) to the first zero after the last error (step 440
    # has 1 error, so it ends at 480).
    keep = STEPS >= 80
    assert (fit.start, fit.end, fit.points) == (80.0, 480.0, 11)
    t, k = STEPS[keep], ERRORS[keep]
    endog = np.column_stack([k, N_TEST - k])
    X = np.column_stack([np.ones_like(t), t])
    ref = sm.GLM(endog, X, family=sm.families.Binomial()).fit(tol=1e-13, maxiter=200)
    quasi = _quasi(k, np.full(len(k), float(N_TEST)), X)
    assert fit.rate == pytest.approx(-ref.params[1], rel=1e-7)
    assert fit.rate_se == pytest.approx(ref.bse[1], rel=1e-6)
    assert fit.rate_se_quasi == pytest.approx(quasi.bse[1], rel=1e-6)
    assert fit.dispersion == pytest.approx(quasi.scale, rel=1e-8)
    assert math.isfinite(fit.curvature) and fit.dispersion > 1  # the data are over-dispersed on purpose
