"""Exponential-convergence fits and the run summary, computed from the saved metrics rows.

The 0-1 fit uses the decaying window: test evaluations from the first with error <= 0.2 up to (not
including) the first with error 0; the logistic fit uses evaluations from the first below 0.9 x the initial
loss to the first below 0.1 x it (or the end). Both fit log(loss) = c - rate * step by least squares. Decade
times are interpolated in log error between evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from mcicl.synthetic.config import SyntheticConfig
from scipy import stats

ZERO_ONE_WINDOW_START = 0.2


@dataclass
class ExpFit:
    """log(y) = intercept - rate * step on the window [start, end] (steps), with its R^2 and point count."""

    rate: float
    intercept: float
    r2: float
    start: float
    end: float
    points: int


def fit_exponential(steps: np.ndarray, values: np.ndarray) -> ExpFit:
    """Least-squares fit of log(values) against steps (NaN fit with fewer than 3 positive points)."""
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    keep = values > 0
    steps, values = steps[keep], values[keep]
    if len(steps) < 3:
        return ExpFit(math.nan, math.nan, math.nan, math.nan, math.nan, len(steps))
    y = np.log(values)
    slope, intercept = np.polyfit(steps, y, 1)
    resid = y - (slope * steps + intercept)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else math.nan
    return ExpFit(float(-slope), float(intercept), r2, float(steps[0]), float(steps[-1]), len(steps))


def zero_one_window(steps: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decaying window of a 0-1 error curve: from the first error <= 0.2 to before the first 0."""
    start = np.nonzero(err <= ZERO_ONE_WINDOW_START)[0]
    if len(start) == 0:
        return steps[:0], err[:0]
    i = start[0]
    zeros = np.nonzero(err[i:] == 0)[0]
    j = i + zeros[0] if len(zeros) else len(err)
    return steps[i:j], err[i:j]


def logistic_window(steps: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decaying window of a logistic-loss curve: from 0.9 x to 0.1 x the initial loss (or the end)."""
    start = np.nonzero(loss <= 0.9 * loss[0])[0]
    if len(start) == 0:
        return steps[:0], loss[:0]
    i = start[0]
    below = np.nonzero(loss[i:] <= 0.1 * loss[0])[0]
    j = i + below[0] + 1 if len(below) else len(loss)
    return steps[i:j], loss[i:j]


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
    """Exponential fits of the test 0-1 and logistic losses per seed, decade times, means and 95% intervals."""
    steps, err = series(rows, "test", "zero_one")
    _, loss = series(rows, "test", "logistic_loss")
    floor = 0.5 / n_test
    per_seed: dict[str, list] = {k: [] for k in ("rate", "r2", "window", "loss_rate", "loss_r2", "loss_window",
                                                  "step_10pct", "step_1pct", "step_01pct")}
    for s in range(err.shape[1]):
        fit = fit_exponential(*zero_one_window(steps, err[:, s]))
        lfit = fit_exponential(*logistic_window(steps, loss[:, s]))
        per_seed["rate"].append(fit.rate)
        per_seed["r2"].append(fit.r2)
        per_seed["window"].append([fit.start, fit.end, fit.points])
        per_seed["loss_rate"].append(lfit.rate)
        per_seed["loss_r2"].append(lfit.r2)
        per_seed["loss_window"].append([lfit.start, lfit.end, lfit.points])
        for key, level in (("step_10pct", 0.1), ("step_1pct", 0.01), ("step_01pct", 0.001)):
            per_seed[key].append(crossing_step(steps, err[:, s], level, floor))
    d1 = [b - a for a, b in zip(per_seed["step_10pct"], per_seed["step_1pct"], strict=True)]
    d2 = [b - a for a, b in zip(per_seed["step_1pct"], per_seed["step_01pct"], strict=True)]
    m1, m2 = _mean(d1), _mean(d2)
    clean = {k: [None if isinstance(x, float) and not math.isfinite(x) else x for x in v]
             for k, v in per_seed.items()}
    return {
        "rate": _mean(per_seed["rate"]), "rate_ci95": ci95(per_seed["rate"]), "r2": _mean(per_seed["r2"]),
        "loss_rate": _mean(per_seed["loss_rate"]), "loss_rate_ci95": ci95(per_seed["loss_rate"]),
        "loss_r2": _mean(per_seed["loss_r2"]),
        "window_rule": f"0-1: first test error <= {ZERO_ONE_WINDOW_START} to before the first 0; "
                       "logistic: 0.9x to 0.1x the initial loss",
        "steps_to_1pct": _mean(per_seed["step_1pct"]),
        "steps_10_to_1pct": m1, "steps_1_to_01pct": m2,
        "decade_ratio": (max(m1, m2) / min(m1, m2)) if m1 and m2 else None,
        "per_seed": clean,
    }


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
    return {"final": final, "final_per_seed": per_seed, "ood": ood,
            "convergence": convergence(rows, config.n_test), "seeds": config.seeds, "bayes_error": config.label_noise}
