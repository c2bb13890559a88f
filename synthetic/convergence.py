"""Convergence statistics and the run summary, computed from the saved metrics rows.

The claim tested is the paper's: the test 0-1 error decays at least exponentially. Per seed, the tail of the
test 0-1 error is fitted as error *counts* out of n_test prompts with a binomial GLM (logit link, maximum
likelihood, so evaluations with zero errors count):

    exponential   logit p_t = c - rate * t
    power law     logit p_t = c - p * log t
    quadratic     logit p_t = c + b1 (t - t0) + b2 (t - t0)^2,   curvature = 2 b2 (d^2 logit p / dt^2)

on the tail window: from the first evaluation with test error <= TAIL_START (10%) to the first evaluation
after the last one with any error (so a run that reaches 0 contributes exactly one zero), or the end. The
exponential is compared with the power law by AIC per seed (both have 2 parameters); negative curvature means
faster than a single exponential. Across seeds: mean rate and curvature with Student-t 95% intervals. Decade
times (10% -> 1% -> 0.1%) are interpolated in log error between evaluations and reported as description only.

The logistic loss is not claimed to decay exponentially: its log-log slope over the second half of training
is reported (a slope near -1 is the 1/t of a logistic loss on separable data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mcicl.synthetic.config import SyntheticConfig

TAIL_START = 0.1
WINDOW_STARTS = (0.1, 0.05, 0.01)  # the rate is also reported from these window starts, side by side


@dataclass
class BinomialFit:
    """A binomial GLM (logit link): coefficients, their covariance, log-likelihood, AIC and point count; and the
    quasi-binomial view of the same fit: the Pearson dispersion phi = X^2 / (points - parameters) and the
    covariance scaled by it (the coefficients are the same)."""

    coef: np.ndarray
    cov: np.ndarray
    loglik: float
    aic: float
    points: int
    dispersion: float = math.nan

    @property
    def quasi_cov(self) -> np.ndarray:
        """The quasi-binomial covariance phi * cov (R's quasibinomial; statsmodels' GLM(k / n, var_weights=n)
        .fit(scale='X2'), checked in tests/test_convergence_glm.py)."""
        return self.cov * self.dispersion


def pearson_dispersion(k: np.ndarray, n: np.ndarray, p: np.ndarray, parameters: int) -> float:
    """Pearson X^2 / (points - parameters) of counts ``k`` out of ``n`` at fitted probabilities ``p`` (NaN when
    there are no residual degrees of freedom)."""
    dof = len(k) - parameters
    if dof <= 0:
        return math.nan
    var = n * p * (1 - p)
    return float(np.sum((k - n * p) ** 2 / np.maximum(var, 1e-300)) / dof)


def fit_binomial(design: np.ndarray, errors: np.ndarray, trials: np.ndarray, iterations: int = 100) -> BinomialFit:
    """Maximum-likelihood logistic regression of ``errors`` out of ``trials`` on ``design`` (Newton's method).

    ``design``'s first column is the intercept (all ones)."""
    X, k, n = np.asarray(design, float), np.asarray(errors, float), np.asarray(trials, float)
    # Standardise the columns for a well-conditioned Newton step; map back at the end.
    scale = np.where(X.std(0) > 0, X.std(0), 1.0)
    shift = np.where(X.std(0) > 0, X.mean(0), 0.0)
    Z = (X - shift) / scale  # column 0 is the intercept (all ones): unchanged
    start = np.clip((k.sum() + 0.5) / (n.sum() + 1), 1e-12, 1 - 1e-12)
    beta = np.zeros(Z.shape[1])
    beta[0] = math.log(start / (1 - start))
    for _ in range(iterations):
        eta = Z @ beta
        p = 1 / (1 + np.exp(-eta))
        grad = Z.T @ (k - n * p)
        hess = (Z * (n * p * (1 - p))[:, None]).T @ Z
        step = np.linalg.solve(hess + 1e-12 * np.eye(len(beta)), grad)
        # Damped: halve the step until the likelihood does not fall.
        ll = _loglik(Z @ beta, k, n)
        for _ in range(30):
            if _loglik(Z @ (beta + step), k, n) >= ll - 1e-12:
                break
            step = step / 2
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    eta = Z @ beta
    p = 1 / (1 + np.exp(-eta))
    hess = (Z * (n * p * (1 - p))[:, None]).T @ Z
    cov_z = np.linalg.pinv(hess)
    # beta_z on standardised columns -> coefficients on the original columns (intercept absorbs the shifts).
    T = np.diag(1 / scale)
    T[0, 0] = 1.0
    T[0, 1:] = -shift[1:] / scale[1:]
    coef = T @ beta
    ll = _loglik(eta, k, n)
    return BinomialFit(coef, T @ cov_z @ T.T, ll, 2 * len(coef) - 2 * ll, len(k),
                       pearson_dispersion(k, n, p, len(coef)))


def _loglik(eta: np.ndarray, k: np.ndarray, n: np.ndarray) -> float:
    """Binomial log-likelihood at logits ``eta`` without the constant log C(n, k)."""
    # k log p + (n - k) log(1 - p), with log p = -softplus(-eta) and log(1 - p) = -softplus(eta).
    return float(-(k * np.logaddexp(0, -eta) + (n - k) * np.logaddexp(0, eta)).sum())


def tail_window(steps: np.ndarray, err: np.ndarray, start_level: float = TAIL_START) -> slice:
    """The tail of a 0-1 error curve: from the first error <= ``start_level`` to the first 0 after the last
    error."""
    start = np.nonzero(err <= start_level)[0]
    if len(start) == 0:
        return slice(0, 0)
    nonzero = np.nonzero(err > 0)[0]
    last = nonzero[-1] if len(nonzero) else start[0]
    return slice(start[0], min(len(err), max(last, start[0]) + 2))


@dataclass
class TailFit:
    """One seed's tail fits: exponential rate (its binomial and quasi-binomial standard errors), power-law
    exponent, AIC and QAIC, curvature, and the Pearson dispersion of the exponential fit."""

    rate: float
    rate_se: float
    rate_se_quasi: float
    dispersion: float
    qaic_exponential: float
    qaic_power: float
    intercept: float
    power: float
    power_intercept: float
    aic_exponential: float
    aic_power: float
    curvature: float
    curvature_se: float
    start: float
    end: float
    points: int

    @property
    def exponential_wins(self) -> bool:
        """True when the exponential has the lower QAIC (NaN fits never win; the same sign as the AIC gap, which
        QAIC divides by the dispersion c)."""
        return bool(self.qaic_exponential < self.qaic_power)


def fit_tail(steps: np.ndarray, err: np.ndarray, n_test: int, start_level: float = TAIL_START) -> TailFit:
    """Binomial fits of one seed's test 0-1 error (a fraction of ``n_test``) on its tail window (from the first
    error <= ``start_level``). QAIC = -2 loglik / c + 2 parameters with c = max(1, the quadratic fit's Pearson
    dispersion), the most general model's, as usual for quasi-likelihood model selection."""
    window = tail_window(np.asarray(steps), np.asarray(err), start_level)
    t = np.asarray(steps, float)[window]
    k = np.rint(np.asarray(err, float)[window] * n_test)
    n = np.full(len(t), float(n_test))
    nan = math.nan
    if len(t) < 4 or k.sum() == 0 or t.min() <= 0:
        return TailFit(nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan,
                       float(t[0]) if len(t) else nan,
                       float(t[-1]) if len(t) else nan, len(t))
    one = np.ones(len(t))
    exp_fit = fit_binomial(np.column_stack([one, t]), k, n)
    pow_fit = fit_binomial(np.column_stack([one, np.log(t)]), k, n)
    centre = t.mean()
    quad = fit_binomial(np.column_stack([one, t - centre, (t - centre) ** 2]), k, n)
    c = max(1.0, quad.dispersion) if math.isfinite(quad.dispersion) else 1.0
    return TailFit(rate=float(-exp_fit.coef[1]), rate_se=float(math.sqrt(exp_fit.cov[1, 1])),
                   rate_se_quasi=float(math.sqrt(exp_fit.quasi_cov[1, 1])), dispersion=exp_fit.dispersion,
                   qaic_exponential=-2 * exp_fit.loglik / c + 4, qaic_power=-2 * pow_fit.loglik / c + 4,
                   intercept=float(exp_fit.coef[0]), power=float(-pow_fit.coef[1]),
                   power_intercept=float(pow_fit.coef[0]), aic_exponential=exp_fit.aic, aic_power=pow_fit.aic,
                   curvature=float(2 * quad.coef[2]), curvature_se=float(2 * math.sqrt(quad.cov[2, 2])),
                   start=float(t[0]), end=float(t[-1]), points=len(t))


def loglog_slope(steps: np.ndarray, loss: np.ndarray) -> float:
    """Least-squares slope of log(loss) on log(step) over the second half of training (NaN if < 3 points)."""
    steps, loss = np.asarray(steps, float), np.asarray(loss, float)
    keep = (steps >= steps.max() / 2) & (steps > 0) & (loss > 0)
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(np.log(steps[keep]), np.log(loss[keep]), 1)[0])


def crossing_step(steps: np.ndarray, err: np.ndarray, level: float, floor: float) -> float:
    """The step where the error first reaches ``level``, interpolated in log error (NaN if never)."""
    hit = np.nonzero(err <= level)[0]
    if len(hit) == 0:
        return math.nan
    i = hit[0]
    if i == 0:
        return float(steps[0])
    e0, e1 = max(err[i - 1], floor), max(err[i], floor)
    # Clipped: with a floor above ``level`` (small test sets) the log interpolation would overshoot step i.
    frac = min(1.0, max(0.0, (math.log(e0) - math.log(level)) / (math.log(e0) - math.log(e1))))
    return float(steps[i - 1] + frac * (steps[i] - steps[i - 1]))


def ci95(values: list[float]) -> list[float | None]:
    """Student-t 95% interval of the mean across seeds ([None, None] with fewer than two finite values)."""

    v = np.asarray([x for x in values if math.isfinite(x)], float)
    if len(v) < 2:
        return [None, None]
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return [float(v.mean()) - half, float(v.mean()) + half]


def _mean(values: list[float]) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def series(rows: list[dict], split: str, key: str, scenario: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values (T, S)) of one metric over training; ``split`` is train, test, weights or ood."""
    if split == "ood":
        rows = [r for r in rows if "ood" in r and scenario in r["ood"]]
        vals = [r["ood"][scenario][key] for r in rows]
    else:
        vals = [r[split][key] for r in rows]
    return np.asarray([r["step"] for r in rows]), np.asarray(vals, float)


def convergence(rows: list[dict], n_test: int) -> dict:
    """Per-seed binomial tail fits of the test 0-1 error, AIC against a power law, curvature, decade times."""
    steps, err = series(rows, "test", "zero_one")
    _, loss = series(rows, "test", "logistic_loss")
    floor = 0.5 / n_test
    fits = [fit_tail(steps, err[:, s], n_test) for s in range(err.shape[1])]
    per_seed: dict[str, list] = {
        "rate": [f.rate for f in fits], "rate_se": [f.rate_se for f in fits],
        "power": [f.power for f in fits],
        "aic_exponential": [f.aic_exponential for f in fits], "aic_power": [f.aic_power for f in fits],
        "exponential_wins": [f.exponential_wins for f in fits],
        "curvature": [f.curvature for f in fits], "curvature_se": [f.curvature_se for f in fits],
        "rate_se_quasi": [f.rate_se_quasi for f in fits], "dispersion": [f.dispersion for f in fits],
        "qaic_exponential": [f.qaic_exponential for f in fits], "qaic_power": [f.qaic_power for f in fits],
        "window": [[f.start, f.end, f.points] for f in fits],
        "loss_loglog_slope": [loglog_slope(steps, loss[:, s]) for s in range(loss.shape[1])],
    }
    for key, level in (("step_10pct", 0.1), ("step_1pct", 0.01), ("step_01pct", 0.001)):
        per_seed[key] = [crossing_step(steps, err[:, s], level, floor) for s in range(err.shape[1])]
    d1 = [b - a for a, b in zip(per_seed["step_10pct"], per_seed["step_1pct"], strict=True)]
    d2 = [b - a for a, b in zip(per_seed["step_1pct"], per_seed["step_01pct"], strict=True)]
    fitted = [f for f in fits if math.isfinite(f.rate)]
    # The rate depends on where its window starts (the curve steepens): the same fit from 10%, 5% and 1%.
    by_start = {}
    for level in WINDOW_STARTS:
        rates = [fit_tail(steps, err[:, s], n_test, level).rate for s in range(err.shape[1])]
        by_start[f"{level:g}"] = {"rate": _mean(rates), "rate_ci95": ci95(rates), "per_seed": rates}
    return finite_or_none({
        "claim": "test 0-1 error decays at least exponentially",
        "window_rule": f"first test error <= {TAIL_START} to the first evaluation after the last error (or the end)",
        "model": "binomial GLM (logit link) on error counts out of n_test; standard errors quasi-binomial "
                 "(scaled by the Pearson dispersion), exponential vs power law by QAIC",
        "rate_meaning": f"the slope of logit(error) per step over the window from {TAIL_START:g} error on; the "
                        "curve is not one exponential (it steepens under the oracle start, flattens from the "
                        "random default), so the rate depends on the window start: see rate_by_window_start",
        "rate": _mean(per_seed["rate"]), "rate_ci95": ci95(per_seed["rate"]),
        "rate_by_window_start": by_start,
        "dispersion": _mean(per_seed["dispersion"]),
        "curvature": _mean(per_seed["curvature"]), "curvature_ci95": ci95(per_seed["curvature"]),
        "seeds_fitted": len(fitted),
        "exponential_beats_power_law": sum(f.exponential_wins for f in fitted),
        "loss_loglog_slope": _mean(per_seed["loss_loglog_slope"]),
        "loss_loglog_slope_ci95": ci95(per_seed["loss_loglog_slope"]),
        "steps_to_1pct": _mean(per_seed["step_1pct"]),
        "steps_10_to_1pct": _mean(d1), "steps_1_to_01pct": _mean(d2),
        "per_seed": per_seed,
    })


def finite_or_none(obj):
    """``obj`` with every non-finite float replaced by None (summary.json stays strict JSON)."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float | np.floating) and not math.isfinite(obj):
        return None
    return obj


def init_description(config: SyntheticConfig) -> dict:
    """How the model was initialised, and whether that used the true label directions (summary.json ``init``)."""
    if config.oracle_init:
        rule = (f"oracle warm start: Gaussian (sigma0={config.sigma0:g}) plus {config.readout_align:g} x the sum of "
                "the TRUE label directions d_k/|d_k| on w_+ (minus on w_-)")
    else:
        rule = f"every weight Gaussian N(0, sigma0^2), sigma0={config.sigma0:g}; no data or ground truth used"
    return {"readout_init": config.readout_init,
            "readout_align": config.readout_align if config.readout_init == "aligned" else None,
            "oracle_init": config.oracle_init, "rule": rule}


def summarize(rows: list[dict], config: SyntheticConfig) -> dict:
    """summary.json: final losses and attention, OOD errors, convergence (means over seeds)."""
    last = rows[-1]
    final = {
        "train_zero_one": _mean(last["train"]["zero_one"]), "test_zero_one": _mean(last["test"]["zero_one"]),
        "train_logistic_loss": _mean(last["train"]["logistic_loss"]),
        "test_logistic_loss": _mean(last["test"]["logistic_loss"]),
        "correct_attention": _mean(last["test"]["correct_attention"]),
        "polarisation": _mean(last["test"]["polarisation"]),
        "step": last["step"],
    }
    per_seed = {"test_zero_one": last["test"]["zero_one"], "correct_attention": last["test"]["correct_attention"]}
    ood = {name: {"test_zero_one": _mean(m["zero_one"]), "test_logistic_loss": _mean(m["logistic_loss"]),
                  "correct_attention": _mean(m["correct_attention"]), "per_seed_zero_one": m["zero_one"]}
           for name, m in last.get("ood", {}).items()}
    return finite_or_none({
        "final": final, "final_per_seed": per_seed, "ood": ood, "convergence": convergence(rows, config.n_test),
        "seeds": config.seeds, "readout_init": config.readout_init, "noise": config.noise,
        "oracle_init": config.oracle_init,  # did ground truth (the true label directions) enter the initialisation?
        "init": init_description(config),
        "bayes_error": config.label_noise})
