"""Figures of a synthetic run, made from its saved metrics.jsonl and summary.json (`mcicl synthetic plot RUN`).

Every plot function draws on the ``axes`` it is given (or on a new figure) and returns the Figure; saving is
separate (``save_figure``, done by ``plot_run``). Curves are drawn per seed (thin lines, one per seed), so a
bimodal set of seeds shows as two groups of lines, never as one mean between them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mcicl.core.configuration import load_config
from mcicl.core.io import read_json, read_jsonl
from mcicl.core.jobs import JobContext
from mcicl.core.plotting import Caption, palette, save_figure, styled, subplots
from mcicl.core.runs import RunFolder
from mcicl.synthetic.baselines import BASELINES
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.convergence import ci95, fit_tail, series

log = logging.getLogger("mcicl")
BASELINE_LABELS = {"query_only": "query only (context-blind)", "nearest_demonstration": "nearest demonstration",
                   "averaging": "averaging rule", "oracle": "oracle (known generator)"}
BASELINE_STYLE = {"query_only": ("#D55E00", "--"), "nearest_demonstration": ("#009E73", ":"),
                  "averaging": ("#CC79A7", "-."), "oracle": ("#000000", (0, (1, 3)))}


def readout_note(config: SyntheticConfig) -> str:
    """How the readout was initialised, for figure titles and headline numbers."""
    if config.readout_init == "aligned":
        return (f"readout_init=aligned (ORACLE warm start: w_+/w_- lean +/-{config.readout_align:g} along the true "
                "label directions)")
    return "readout_init=random (no ground truth in the init)"


def seeds_note(config: SyntheticConfig) -> str:
    """What varies across the seeds, for figure titles: with a shared dictionary intervals omit dictionary variation."""
    n = config.seeds
    what = "a fresh dictionary per seed" if config.dictionary == "per_seed" else "one dictionary shared by all seeds"
    return f"{n} seed{'s' if n > 1 else ''}, {what}"


def _seeds(ax: Axes, steps: np.ndarray, values: np.ndarray, label: str, color: str, ls: str = "-",
           lw: float = 1.2) -> None:
    """One line per seed (the label on the first only)."""
    for s in range(values.shape[1]):
        ax.plot(steps, values[:, s], ls=ls, color=color, lw=lw, alpha=0.85 if values.shape[1] == 1 else 0.6,
                label=label if s == 0 else None)


def _axes(axes, nrows: int, ncols: int, figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    if axes is None:
        fig, axes = subplots(nrows, ncols, figsize=figsize, squeeze=False)
        return fig, axes
    axes = np.asarray(axes).reshape(nrows, ncols)
    return axes.flat[0].get_figure(), axes


@styled
def plot_dynamics(rows: list[dict], config: SyntheticConfig, axes=None) -> Figure:
    """The 4-panel learning-dynamics figure: losses, correct attention, W_K^T W_Q products, MLP weights."""
    c = palette(5)
    fig, axes = _axes(axes, 2, 2, (11, 7.5))
    ax = axes[0, 0]
    for i, (split, key, label, ls) in enumerate([("train", "logistic_loss", "train logistic", "-"),
                                                ("test", "logistic_loss", "test logistic", "-"),
                                                ("train", "zero_one", "train 0-1", "--"),
                                                ("test", "zero_one", "test 0-1", "--")]):
        _seeds(ax, *series(rows, split, key), label, c[i], ls)
    ax.set(title="(a) Losses", ylabel="loss (mean over prompts)", ylim=(-0.02, None))
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    _seeds(ax, *series(rows, "test", "correct_attention"), "correct attention weight", c[0])
    _seeds(ax, *series(rows, "test", "polarisation"), "polarisation |2 correct - 1|", c[1], "--")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(title="(b) Attention on same-sign demonstrations (test)", ylabel="attention mass", ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[1, 0]
    for i, (key, label, ls) in enumerate([
            ("concept_product", r"concept: max $\langle W_Q\mu_k^s, W_K\mu_k^s\rangle$", "-"),
            ("complement_product", r"complement: max $\langle W_Q\mu_k^s, W_K\mu_k^{-s}\rangle$", "-"),
            ("noise_product_in_span", r"noise in feature span: max $|\langle W_Q x_q, W_K P\xi_l\rangle|$", "--"),
            ("noise_product_off_span", r"noise off span: max $|\langle W_Q x_q, W_K P_\perp\xi_l\rangle|$", "-")]):
        _seeds(ax, *series(rows, "weights", key), label, c[i], ls)
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set(title=rf"(c) Products through $W_K^\top W_Q$ (noise: {config.noise})", xlabel="training step",
           ylabel="inner product")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    for i, (key, label, ls) in enumerate([("mlp_plus_correct", r"max$_r\langle w_{+,r}, q_k^+\rangle$", "-"),
                                          ("mlp_minus_correct", r"max$_r\langle w_{-,r}, q_k^-\rangle$", "-"),
                                          ("mlp_plus_wrong", r"max$_r\langle w_{+,r}, q_k^-\rangle$", "--"),
                                          ("mlp_minus_wrong", r"max$_r\langle w_{-,r}, q_k^+\rangle$", "--")]):
        _seeds(ax, *series(rows, "weights", key), label, c[i], ls)
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set(title="(d) MLP readout projections (mean over concepts k)", xlabel="training step",
           ylabel="inner product")
    ax.legend(fontsize=8)
    fig.suptitle(f"Learning dynamics of the one-layer transformer ({seeds_note(config)}, one line each)\n"
                 + readout_note(config), fontsize=10)
    return fig


@styled
def plot_decomposition(rows: list[dict], ax: Axes | None = None) -> Figure:
    """Coefficients of W_K^T W_Q on P_{a_k}, P_{b_k} and the noise subspace over training (one line per seed)."""
    c = palette(3)
    fig, axes = _axes(None if ax is None else [ax], 1, 1, (6.5, 4))
    ax = axes[0, 0]
    for i, (key, label) in enumerate([("coef_a", r"$\hat a_k^\top W_K^\top W_Q \hat a_k$ (concept-common)"),
                                      ("coef_b", r"$\hat b_k^\top W_K^\top W_Q \hat b_k$ (semantic)"),
                                      ("coef_noise", r"$\|P_\perp W_K^\top W_Q P_\perp\|_F$ (noise subspace)")]):
        _seeds(ax, *series(rows, "weights", key), label, c[i])
    ax.set(title=r"Decomposition of $W_K^\top W_Q$ (mean over concepts)", xlabel="training step",
           ylabel="coefficient")
    ax.legend(fontsize=8)
    return fig


@styled
def plot_convergence(rows: list[dict], n_test: int, axes=None, note: str = "") -> Figure:
    """Test 0-1 error per seed (log scale) with the binomial exponential and power-law tail fits; the logistic
    loss on log-log axes. ``note`` (e.g. ``seeds_note(config)``) is added to the title."""
    steps, err = series(rows, "test", "zero_one")
    _, loss = series(rows, "test", "logistic_loss")
    colors = palette(err.shape[1])
    fig, axes = _axes(axes, 1, 2, (12, 4.5))
    ax0, ax1 = axes[0]
    floor = 0.5 / n_test
    wins = 0
    for s in range(err.shape[1]):
        col = colors[s]
        ax0.semilogy(steps, np.maximum(err[:, s], floor), "o", ms=2.5, color=col, alpha=0.5,
                     mfc="none" if s else col)
        fit = fit_tail(steps, err[:, s], n_test)
        if np.isfinite(fit.rate):
            wins += fit.exponential_wins
            xs = np.linspace(fit.start, fit.end, 50)
            ax0.semilogy(xs, 1 / (1 + np.exp(-(fit.intercept - fit.rate * xs))), "-", color=col, lw=1.5,
                         label=f"seed {s}: rate {fit.rate:.3f}/step, curv. {fit.curvature:.1e}; "
                               f"AIC exp {fit.aic_exponential:.0f} vs power {fit.aic_power:.0f}" if s < 8 else None)
            ax0.semilogy(xs, 1 / (1 + np.exp(-(fit.power_intercept - fit.power * np.log(xs)))), ":", color=col,
                         lw=1.2)
        ax1.loglog(steps[steps > 0], loss[steps > 0, s], "-", color=col, lw=1.2, alpha=0.8)
    ax0.axhline(floor, color="grey", lw=0.6, ls=":")
    ax0.set(title=f"Test 0-1 error (0 drawn at 0.5/n_test); solid: exponential, dotted: power law\n"
                  f"binomial fits on the tail window; exponential has the lower AIC in {wins}/{err.shape[1]} seeds",
            xlabel="training step", ylabel="error rate (log)")
    if ax0.get_legend_handles_labels()[0]:  # a run too short to reach the tail window has no fit to label
        ax0.legend(fontsize=6, loc="lower left", bbox_to_anchor=(0.0, 0.08))
    ax1.set(title="Test logistic loss (log-log: a straight line is a power law)", xlabel="training step (log)",
            ylabel="loss (log)")
    fig.suptitle("Convergence of the test error: is the tail at least exponential?" + (f" ({note})" if note else ""),
                 fontsize=11)
    return fig


def _baseline_lines(ax: Axes, values: dict | None) -> None:
    for name in BASELINES:
        if values and name in values:
            color, ls = BASELINE_STYLE[name]
            ax.axhline(float(np.mean(values[name])), color=color, ls=ls, lw=1.1, label=BASELINE_LABELS[name])


@styled
def plot_ood_grid(rows: list[dict], scenarios: list[str], baselines: dict | None = None, axes=None) -> Figure:
    """Figure 3 as a grid: one row per condition (in-distribution, then each OOD scenario) with four panels:
    losses (baselines' final 0-1 error as horizontal lines), correct attention, the attention-score gap
    (same-sign minus other demonstrations, on the scenario's own prompts) and the readout on the labels."""
    ood_rows = [r for r in rows if "ood" in r]
    names = ["in-distribution", *scenarios]
    fig, axes = _axes(axes, len(names), 4, (17, 2.3 * len(names) + 0.8))
    c = palette(4)
    for i, name in enumerate(names):

        def get(key: str, name: str = name) -> tuple[np.ndarray, np.ndarray]:
            return series(ood_rows, "test", key) if name == "in-distribution" else series(ood_rows, "ood", key, name)

        base = (baselines or {}).get("test") if name == "in-distribution" else \
            (baselines or {}).get("ood", {}).get(name)
        a, b, g, r = axes[i]
        _seeds(a, *get("logistic_loss"), "logistic loss", c[0])
        _seeds(a, *get("zero_one"), "0-1 loss (transformer)", c[1], lw=1.6)
        _baseline_lines(a, base)
        a.set(ylim=(-0.03, 1.03), ylabel=name)
        _seeds(b, *get("correct_attention"), "correct attention", c[0])
        b.axhline(0.5, color="grey", lw=0.6, ls=":")
        b.set(ylim=(-0.02, 1.02))
        _seeds(g, *get("score_gap"), "score gap", c[2])
        g.axhline(0, color="grey", lw=0.6, ls=":")
        _seeds(r, *get("readout_answer_label"), "answer's label", c[0])
        _seeds(r, *get("readout_other_label"), "other label", c[3], "--")
        r.axhline(0, color="grey", lw=0.6, ls=":")
        if i == 0:
            a.set_title("(a) losses; lines: baselines' final 0-1", fontsize=9)
            b.set_title("(b) correct attention weight", fontsize=9)
            g.set_title(r"(c) score gap: mean $x_l^\top W_K^\top W_Q x_q$, same-sign $-$ other", fontsize=9)
            r.set_title(r"(d) readout on labels, $s\cdot f_{MLP}(y_l)$", fontsize=9)
            a.legend(fontsize=6, loc="upper right")
            r.legend(fontsize=6, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    fig.suptitle("Out-of-distribution scenarios on the same trained model (one row per condition, one line per seed)",
                 fontsize=12, y=1.01)
    return fig


@styled
def plot_ood_overview(summary: dict, scenarios: list[str], ax: Axes | None = None) -> Figure:
    """Final test 0-1 error per condition: the transformer's seeds (dots, bar = mean) beside every baseline."""
    fig, axes = _axes(None if ax is None else [ax], 1, 1, (max(8.0, 0.9 * (len(scenarios) + 1) + 3), 4.6))
    ax = axes[0, 0]
    names = ["in-distribution", *scenarios]
    per_seed = [summary["final_per_seed"]["test_zero_one"]] + [summary["ood"][n]["per_seed_zero_one"]
                                                                for n in scenarios]
    base = summary.get("baselines", {})
    base_rows = [base.get("test", {})] + [base.get("ood", {}).get(n, {}) for n in scenarios]
    width = 0.8 / (1 + len(BASELINES))
    x = np.arange(len(names))
    means = [np.mean([v for v in vals if v is not None]) for vals in per_seed]
    ax.bar(x - 0.4 + width / 2, means, width, color="#0072B2", label="transformer (dots: seeds)")
    for j, vals in enumerate(per_seed):
        ax.plot(np.full(len(vals), x[j] - 0.4 + width / 2), vals, "o", ms=3, color="black", zorder=3)
    for b, name in enumerate(BASELINES):
        color, _ = BASELINE_STYLE[name]
        vals = [np.mean(r[name]) if name in r else np.nan for r in base_rows]
        ax.bar(x - 0.4 + width * (b + 1.5), vals, width, color=color, alpha=0.75, label=BASELINE_LABELS[name])
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set(ylabel="final test 0-1 error", ylim=(0, 1.02),
           title="Transformer beside baselines: a scenario a context-blind model solves is no test of ICL")
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    return fig


CAPTIONS = {
    "dynamics": Caption(
        "Learning dynamics",
        "The synthetic transformer during training: logistic and 0-1 loss (train and test), the correct attention "
        "weight, the concept-specific / complement / noise products through W_K^T W_Q, and the MLP weights' "
        "projections on the label features, the noise product inside and off the feature span; one line per "
        "seed. The title states the readout initialisation (aligned = warm start)."),
    "decomposition": Caption(
        "Idempotent decomposition of W_K^T W_Q",
        "The coefficients of the learned W_K^T W_Q on the projectors onto the concept-common directions a_k, the "
        "semantic directions b_k and the noise subspace, over training: the theory's key coefficients."),
    "convergence": Caption(
        "Convergence of the test error",
        "Test 0-1 error per seed on a log scale with binomial fits on the tail window: exponential (solid) and "
        "power law (dotted), compared by AIC; the logistic loss on log-log axes (a straight line is a power law)."),
    "ood": Caption(
        "OOD scenarios over training (Figure 3 as a grid)",
        "One row per condition, evaluated on the same model: losses with the baselines' final 0-1 error as "
        "horizontal lines, correct attention, the attention-score gap on that condition's prompts and the "
        "readout on the labels. A scenario the context-blind (query-only) baseline also solves is no test of ICL."),
    "ood_overview": Caption(
        "Transformer beside baselines",
        "Final test 0-1 error per condition: the transformer (dots: seeds) beside a context-blind query-only "
        "classifier, nearest-demonstration and averaging rules, and the known generator's oracle."),
}


def run_figures(rows: list[dict], config: SyntheticConfig, summary: dict) -> dict[str, Figure]:
    """Every figure of a train run by file name, from its metrics rows, config and summary."""
    figures = {"dynamics": plot_dynamics(rows, config), "decomposition": plot_decomposition(rows),
               "convergence": plot_convergence(rows, config.n_test, note=seeds_note(config))}
    if config.scenarios:
        figures["ood"] = plot_ood_grid(rows, config.scenarios, summary.get("baselines"))
        if "ood" in summary:
            figures["ood_overview"] = plot_ood_overview(summary, config.scenarios)
    return figures


@dataclass
class PlotResult:
    """A train run's figures re-drawn from its saved files: its config, metrics rows and summary.json (empty when
    the run wrote none)."""

    config: SyntheticConfig
    metrics: list[dict]
    summary: dict

    @classmethod
    def read(cls, run_dir: str | Path) -> PlotResult:
        """The saved metrics.jsonl, config.yaml and summary.json of the train run in ``run_dir``."""
        run_dir = Path(run_dir)
        metrics = run_dir / "metrics.jsonl"
        if not metrics.is_file():
            raise FileNotFoundError(f"{metrics} not found: is {run_dir} a synthetic train run folder?")
        config = load_config(SyntheticConfig, run_dir / "config.yaml")
        summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
        return cls(config, read_jsonl(metrics), summary)

    def figures(self) -> dict[str, Figure]:
        """The run's figures by file name (dynamics, decomposition, convergence, ood, ood_overview)."""
        return run_figures(self.metrics, self.config, self.summary)

    def save(self, run: RunFolder) -> None:
        """Write the figures (PNG, PDF and captions) into ``run``'s figures/."""
        self.save_figures(run.path)

    def save_figures(self, run_dir: str | Path) -> list[Path]:
        """Write the figures into ``run_dir``/figures; return the PNGs."""
        # The OOD grid as PNG only: the PDF of this many panels costs more time than the rest of the figures
        # together.
        return [save_figure(fig, Path(run_dir) / "figures", name,
                            formats=("png",) if name == "ood" else ("png", "pdf"), caption=CAPTIONS[name])
                for name, fig in self.figures().items()]


def plot_run(run_dir: str | Path) -> list[Path]:
    """Make and save every figure of a train run from its metrics.jsonl (and summary.json); return the PNGs."""
    return PlotResult.read(run_dir).save_figures(run_dir)


def execute_plot(config: None, ctx: JobContext) -> int:
    """``mcicl synthetic plot RUN``: re-draw the run's figures into RUN/figures (no config, no new run folder)."""
    run = ctx.options["run"]
    paths = plot_run(run)
    log.info("wrote %s", ", ".join(p.name for p in paths))
    print(f"output is in {Path(run) / 'figures'}")
    return 0


ALIGN_CAPTION = Caption(
    "Sensitivity to the oracle warm start",
    "Each panel against readout_align, the size of the component along the TRUE label directions added to the "
    "readout at initialisation (0 = a random readout, the default protocol; > 0 = an oracle start). Dots: seeds; "
    "bars: mean with Student-t 95% interval across seeds. (a) final test 0-1 error, (b) steps to 1% test error "
    "(seeds that never reach it are drawn at the top as crosses), (c) seeds whose exponential fit beats the power "
    "law (QAIC), (d) curvature of logit error (below 0: faster than one exponential).")


@styled
def plot_align_sensitivity(table: dict, axes=None) -> Figure:
    """The 4-panel figure of :func:`mcicl.synthetic.train.align_sensitivity`'s table."""
    fig, axes = _axes(axes, 1, 4, (15, 3.6))
    aligns = [float(a) for a in table["readout_align"]]
    c = palette(2)
    for ax, key, title in zip(axes.flat, ("final_zero_one", "step_1pct", None, "curvature"),
                              ("(a) final test 0-1", "(b) steps to 1%", "(c) exponential wins", "(d) curvature"),
                              strict=True):
        if key is None:
            wins = table["exponential_wins"]
            ax.bar(range(len(aligns)), wins, color=c[0])
            ax.axhline(table["seeds"], color="grey", lw=0.8, ls=":")
            ax.set(ylim=(0, table["seeds"] + 0.5), ylabel=f"seeds (of {table['seeds']})")
        else:
            top = max([v for vals in table[key] for v in vals if v is not None] + [1.0])
            for i, vals in enumerate(table[key]):
                fin = [v for v in vals if v is not None and np.isfinite(v)]
                ax.plot([i] * len(fin), fin, "o", color=c[0], alpha=0.6, ms=4)
                if key == "step_1pct" and len(fin) < len(vals):
                    ax.plot([i] * (len(vals) - len(fin)), [top * 1.05] * (len(vals) - len(fin)), "x", color="k")
                if fin:
                    lo, hi = ci95(fin)
                    mean = float(np.mean(fin))
                    ax.errorbar(i + 0.15, mean, yerr=None if lo is None else [[mean - lo], [hi - mean]],
                                fmt="s", color=c[1], capsize=3)
            if key == "curvature":
                ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(len(aligns)), [f"{a:g}" for a in aligns])
        ax.set(title=title, xlabel="readout_align (0 = no oracle)")
    fig.suptitle(f"Oracle warm start: {table['seeds']} seeds per value, {table['steps']} steps", fontsize=10)
    return fig
