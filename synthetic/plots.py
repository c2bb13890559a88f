"""Figures of a synthetic run, made from its saved metrics.jsonl (so `mcicl synthetic plot RUN` re-plots).

Multi-seed curves show the mean over seeds and a band from the minimum to the maximum seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.convergence import fit_exponential, logistic_window, series, zero_one_window

from mcicl.core.config import load_config
from mcicl.core.plotting import palette, save_figure, styled, subplots
from mcicl.core.runs import read_jsonl


def _band(ax: Axes, steps: np.ndarray, values: np.ndarray, label: str, color: str, ls: str = "-",
          zorder: float = 2) -> None:
    """Mean over seeds (line) and min-max over seeds (band)."""
    ax.plot(steps, values.mean(1), ls, color=color, label=label, lw=1.6, zorder=zorder)
    if values.shape[1] > 1:
        ax.fill_between(steps, values.min(1), values.max(1), color=color, alpha=0.2, lw=0)


@styled
def plot_dynamics(rows: list[dict], folder: Path, seeds: int) -> Path:
    """The 4-panel learning-dynamics figure: losses, correct attention, W_K^T W_Q products, MLP weights."""
    c = palette(4)
    fig, axes = subplots(2, 2, figsize=(10, 7), sharex=True)
    ax = axes[0, 0]
    for i, (split, key, label, ls) in enumerate([("train", "logistic_loss", "train logistic", "-"),
                                                ("test", "logistic_loss", "test logistic", "-"),
                                                ("train", "zero_one", "train 0-1", "--"),
                                                ("test", "zero_one", "test 0-1", "--")]):
        _band(ax, *series(rows, split, key), label, c[i], ls)
    ax.set(title="(a) Losses", ylabel="loss (mean over prompts)", ylim=(-0.02, None))
    ax.legend()
    ax = axes[0, 1]
    _band(ax, *series(rows, "test", "correct_attention"), "correct attention weight", c[0])
    _band(ax, *series(rows, "test", "polarisation"), "polarisation |2 correct - 1|", c[1], "--")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(title="(b) Attention on same-sign demonstrations (test)", ylabel="attention mass", ylim=(0, 1.02))
    ax.legend(loc="lower right")
    ax = axes[1, 0]
    for i, (key, label) in enumerate([("concept_product", r"concept: max $\langle W_Q\mu_k^s, W_K\mu_k^s\rangle$"),
                                      ("complement_product",
                                       r"complement: max $\langle W_Q\mu_k^s, W_K\mu_k^{-s}\rangle$"),
                                      ("noise_product", r"noise: max $|\langle W_Q x_q, W_K\xi_l\rangle|$")]):
        _band(ax, *series(rows, "weights", key), label, c[i])
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set(title=r"(c) Products through $W_K^\top W_Q$", xlabel="training step", ylabel="inner product")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    for i, (key, label, ls) in enumerate([("mlp_plus_correct", r"max$_r\langle w_{+,r}, q_k^+\rangle$", "-"),
                                          ("mlp_minus_correct", r"max$_r\langle w_{-,r}, q_k^-\rangle$", "-"),
                                          ("mlp_plus_wrong", r"max$_r\langle w_{+,r}, q_k^-\rangle$", "--"),
                                          ("mlp_minus_wrong", r"max$_r\langle w_{-,r}, q_k^+\rangle$", "--")]):
        _band(ax, *series(rows, "weights", key), label, c[i], ls)
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set(title="(d) MLP readout projections (mean over concepts k)", xlabel="training step",
           ylabel="inner product")
    ax.legend(fontsize=8)
    fig.suptitle(f"Learning dynamics of the one-layer transformer ({seeds} seed{'s' if seeds > 1 else ''}: "
                 "mean, band = min-max)")
    return save_figure(fig, folder, "dynamics")


@styled
def plot_decomposition(rows: list[dict], folder: Path) -> Path:
    """Coefficients of W_K^T W_Q on P_{a_k}, P_{b_k} and the noise subspace over training."""
    c = palette(3)
    fig, ax = subplots(figsize=(6, 4))
    for i, (key, label) in enumerate([("coef_a", r"$\hat a_k^\top W_K^\top W_Q \hat a_k$ (concept-common)"),
                                      ("coef_b", r"$\hat b_k^\top W_K^\top W_Q \hat b_k$ (semantic)"),
                                      ("coef_noise", r"$\|P_\perp W_K^\top W_Q P_\perp\|_F$ (noise subspace)")]):
        _band(ax, *series(rows, "weights", key), label, c[i])
    ax.set(title=r"Decomposition of $W_K^\top W_Q$ (mean over concepts)", xlabel="training step",
           ylabel="coefficient")
    ax.legend(fontsize=8)
    return save_figure(fig, folder, "decomposition")


@styled
def plot_ood(rows: list[dict], folder: Path, scenarios: list[str]) -> Path:
    """Every OOD scenario's test losses and correct attention over training, with in-distribution for reference."""
    names = ["in-distribution", *scenarios]
    colors = ["black"] + [c for c in palette(len(names) + 1) if c != "#000000"]
    styles = ["-", "-.", ":"]
    fig, axes = subplots(1, 3, figsize=(15, 4.6), sharex=True)
    ood_rows = [r for r in rows if "ood" in r]
    for i, name in enumerate(names):
        for ax, key in zip(axes, ("logistic_loss", "zero_one", "correct_attention"), strict=True):
            steps, vals = series(ood_rows, "test", key) if i == 0 else series(ood_rows, "ood", key, name)
            _band(ax, steps, vals, name, colors[i], "--" if i == 0 else styles[(i - 1) // 6],
                  zorder=3 if i == 0 else 2)
    axes[0].set(title="Test logistic loss", xlabel="training step", ylabel="loss")
    axes[1].set(title="Test 0-1 loss", xlabel="training step", ylabel="error rate", ylim=(-0.02, 0.75))
    axes[2].set(title="Correct attention weight", xlabel="training step", ylabel="attention mass", ylim=(0, 1.02))
    axes[2].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.suptitle("Out-of-distribution scenarios, evaluated along training on the same model")
    return save_figure(fig, folder, "ood")


@styled
def plot_convergence(rows: list[dict], folder: Path) -> Path:
    """Test 0-1 and logistic loss on a log scale per seed, with the exponential fits on their windows."""
    steps, err = series(rows, "test", "zero_one")
    _, loss = series(rows, "test", "logistic_loss")
    colors = palette(err.shape[1])
    fig, axes = subplots(1, 2, figsize=(11, 4.2))
    for s in range(err.shape[1]):
        for ax, vals, window in ((axes[0], err[:, s], zero_one_window), (axes[1], loss[:, s], logistic_window)):
            pos = vals > 0
            ax.semilogy(steps[pos], vals[pos], "o", ms=2.5, color=colors[s], alpha=0.6,
                        label=f"seed {s}" if s < 8 else None)
            w_steps, w_vals = window(steps, vals)
            fit = fit_exponential(w_steps, w_vals)
            if np.isfinite(fit.rate):
                xs = np.linspace(fit.start, fit.end, 20)
                ax.semilogy(xs, np.exp(fit.intercept - fit.rate * xs), "-", color=colors[s], lw=1.5,
                            label=f"fit: rate {fit.rate:.3g}/step, $R^2$ {fit.r2:.3f}" if s < 8 else None)
    axes[0].set(title="Test 0-1 loss (zeros not shown)", xlabel="training step", ylabel="error rate (log)")
    axes[1].set(title="Test logistic loss", xlabel="training step", ylabel="loss (log)")
    axes[0].legend(fontsize=7, loc="lower left")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle("Exponential convergence: log(loss) = c - rate x step fitted on the decaying window")
    return save_figure(fig, folder, "convergence")


def plot_run(run_dir: str | Path) -> list[Path]:
    """Make every figure of a train run from its metrics.jsonl; return the PNG paths."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} not found: is {run_dir} a synthetic train run folder?")
    config = load_config(SyntheticConfig, run_dir / "config.yaml")
    rows = read_jsonl(metrics)
    folder = run_dir / "figures"
    out = [plot_dynamics(rows, folder, config.seeds), plot_decomposition(rows, folder),
           plot_convergence(rows, folder)]
    if config.scenarios:
        out.append(plot_ood(rows, folder, config.scenarios))
    return out
