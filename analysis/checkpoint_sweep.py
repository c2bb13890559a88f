"""``mcicl probe checkpoints``: the ICL probe over a model's training checkpoints, its error fitted over steps.

Each checkpoint is a Hub revision of ``--model`` (``--checkpoints step1000,step2000``) or a local checkpoint folder;
its training step is given (``--steps``) or read from its name (the last number: ``step_1000``, ``checkpoint-1000``).
Every checkpoint runs the same ICL probe (:func:`mcicl.probing.icl.run.icl_probe`: the same seed, so the same
prompts, and the same readout), so the rows differ only in the weights. Per (condition, shots) cell the ICL error
over checkpoints is fitted by the synthetic world's own convergence statistics, the same functions
(:mod:`mcicl.synthetic.convergence`):

- :func:`~mcicl.synthetic.convergence.fit_tail` with ``start_level=1`` (the whole curve, from the first checkpoint
  with step > 0, since the power law needs log t, to the first zero error after the last error): binomial GLMs of
  the error counts (k of the cell's n prompts) with logit link, exponential ``logit p = c - rate * step`` against
  the power law ``logit p = c - p log step`` by QAIC, the curvature of a quadratic, the rate's binomial and
  quasi-binomial (Pearson dispersion) standard errors; the rate's 95% interval is the Wald interval with the
  quasi-binomial standard error;
- :func:`~mcicl.synthetic.convergence.crossing_step`: the step where the error first reaches each
  ``--error-levels`` value, interpolated in log error between checkpoints (step 0 included).

What the fit does not know: the checkpoints share their prompts (paired, not independent draws), and prompts of one
episode share demonstrations; the dispersion absorbs extra variation across checkpoints, not this within-checkpoint
clustering, which only the per-checkpoint cluster-bootstrap intervals account for.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mcicl.analysis.checkpoint_sweep_config import CheckpointsConfig
from mcicl.core.configuration import to_dict
from mcicl.core.io import read_json, write_json
from mcicl.core.jobs import JobContext
from mcicl.core.logs import progress
from mcicl.core.plotting import Caption, palette, save_figure, styled
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.icl.icl_config import IclConfig
from mcicl.probing.icl.run import convention_rows, icl_probe
from mcicl.probing.icl.tasks import CONDITIONS, load_suite
from mcicl.probing.models import ModelNotFoundError, resolve_model
from mcicl.probing.tiny import is_random_weights, is_tiny_trained
from mcicl.synthetic.convergence import crossing_step, finite_or_none, fit_tail

log = logging.getLogger("mcicl")
STEP_IN_NAME = re.compile(r"(\d+)(?!.*\d)")  # the last number in a name
Z95 = 1.959963984540054
FIT_RULE = ("per (condition, shots): synthetic.convergence.fit_tail(steps, error, n, start_level=1) over the "
            "checkpoints with step > 0 (binomial GLM of error counts, logit link; exponential vs power law by QAIC; "
            "rate interval: Wald with the quasi-binomial standard error); crossing steps: "
            "synthetic.convergence.crossing_step over every checkpoint, interpolated in log error")
PAIRING = ("every checkpoint is probed on the same prompts (same seed): the rows are paired; the binomial fit "
           "treats each checkpoint's errors as independent counts, its dispersion absorbs extra variation across "
           "checkpoints, not the clustering of prompts within an episode")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: as given, its training step, and what loads it (a folder, or the Hub id at a revision)."""

    name: str
    step: int
    model: str
    revision: str | None = None

    @property
    def folder(self) -> str:
        """Its folder name inside the run (``checkpoints/step_<N>``)."""
        return f"checkpoints/step_{self.step}"


def checkpoint_list(entries: list[str]) -> list[str]:
    """The checkpoints named by ``--checkpoints``: the entries, or the lines of the one text file given."""
    if len(entries) == 1 and Path(entries[0]).expanduser().is_file():
        lines = Path(entries[0]).expanduser().read_text(encoding="utf-8").splitlines()
        out = [line.split("#", 1)[0].strip() for line in lines]
        out = [line for line in out if line]
        if not out:
            raise ValueError(f"--checkpoints file {entries[0]} lists no checkpoint; accepted: one revision or "
                             "folder per line")
        return out
    return list(entries)


def step_of(name: str) -> int | None:
    """The training step in a checkpoint's name: its last number (``step_1000``, ``step1000``, ``ckpt-1000``)."""
    found = STEP_IN_NAME.search(Path(name.rstrip("/")).name)
    return int(found.group(1)) if found else None


def resolve_checkpoints(config: CheckpointsConfig) -> list[Checkpoint]:
    """The checkpoints of ``config`` in step order: each a local folder, or a revision of the Hub ``--model``; one
    clear error for a name that is neither, a missing step, or two checkpoints at one step."""
    names = checkpoint_list(config.checkpoints)
    if len(names) < 2:
        raise ValueError(f"--checkpoints {','.join(names) or '(none)'}: a sweep needs at least 2 checkpoints; "
                         "accepted: revisions of the Hub --model (step1000,step2000) or checkpoint folders")
    if config.steps and len(config.steps) != len(names):
        raise ValueError(f"--steps lists {len(config.steps)} steps for {len(names)} checkpoints; accepted: one step "
                         "per checkpoint, in the same order, or no --steps (read from the names)")
    base = config.icl.extraction.model
    hub = None
    out = []
    for i, name in enumerate(names):
        path = Path(name).expanduser()
        if path.is_dir():
            model, revision = str(path), None
        else:
            if hub is None:
                try:
                    hub = resolve_model(base).source == "hub"
                except ModelNotFoundError:
                    hub = False
            if not hub or name.startswith((".", "/", "~")):
                raise ValueError(f"checkpoint {name!r} is not a local model folder, and --model {base!r} is not a "
                                 "Hub id it could be a revision of; accepted: folders saved by save_pretrained, or "
                                 "revisions (branches such as step1000, tags, commits) of a Hub --model")
            model, revision = base, name
        step = config.steps[i] if config.steps else step_of(name)
        if step is None:
            raise ValueError(f"checkpoint {name!r} has no number in its name to read its training step from; "
                             "accepted: --steps with one step per checkpoint")
        out.append(Checkpoint(name, int(step), model, revision))
    steps = [c.step for c in out]
    twice = sorted({s for s in steps if steps.count(s) > 1})
    if twice:
        raise ValueError(f"checkpoints at the same step {twice}: {[c.name for c in out if c.step in twice]}; "
                         "accepted: one checkpoint per step (or --steps to say which step each one is)")
    return sorted(out, key=lambda c: c.step)


def probe_config(config: CheckpointsConfig, checkpoint: Checkpoint) -> IclConfig:
    """The ICL config of one checkpoint: the sweep's, loading that checkpoint."""
    ext = replace(config.icl.extraction, model=checkpoint.model, revision=checkpoint.revision)
    return replace(config.icl, extraction=ext)


def weights_of(checkpoint: Checkpoint) -> str:
    """What the checkpoint's weights are, for every table and figure: 'random init (tiny)', 'tiny-trained' or
    'checkpoint'."""
    if checkpoint.revision is None and is_random_weights(checkpoint.model):
        return "random init (tiny)"
    if checkpoint.revision is None and is_tiny_trained(checkpoint.model):
        return "tiny-trained"
    return "checkpoint"


def accuracy_tree(summary: dict[str, Any], convention: str = "acc") -> dict[str, dict[str, dict[str, Any]]]:
    """{condition: {shots: {mean, ci_low, ci_high, n}}} of one probe under ``convention`` (acc: the readout's own
    accuracy; acc_norm / acc_calibrated: the lm readout's scoring conventions); a clear error where there is none."""
    if convention == "acc":
        return summary["accuracy"]
    tree = summary.get("scoring_conventions", {}).get("accuracy", {}).get(convention)
    if tree is None:
        raise ValueError(f"--convention {convention} needs the lm readout's scoring conventions, but this probe's "
                         f"readout is {summary.get('readout')!r}; accepted: --convention acc, or a causal LM with "
                         "--readout lm")
    return tree


def _cells(summary: dict[str, Any]) -> list[tuple[str, str]]:
    acc = summary["accuracy"]
    return [(cond, shots) for cond in CONDITIONS if cond in acc for shots in sorted(acc[cond], key=int)]


def checkpoint_row(checkpoint: Checkpoint, summary: dict[str, Any], convention: str = "acc") -> dict[str, Any]:
    """checkpoints.csv's row: the checkpoint, its step and weights, accuracy (under ``convention``) and interval per
    condition@shots."""
    tree = accuracy_tree(summary, convention)
    row: dict[str, Any] = {"checkpoint": checkpoint.name, "step": checkpoint.step, "revision": checkpoint.revision,
                           "weights": weights_of(checkpoint), "model": summary.get("model"),
                           "readout": summary.get("readout"), "convention": convention,
                           "prompts": summary.get("prompts")}
    for cond, shots in _cells(summary):
        cell = tree[cond][shots]
        key = f"{cond}@{shots}"
        row.update({key: cell["mean"], f"{key}_ci_low": cell["ci_low"], f"{key}_ci_high": cell["ci_high"]})
    return row


def cell_rows(checkpoint: Checkpoint, summary: dict[str, Any], convention: str = "acc") -> list[dict[str, Any]]:
    """cells.csv's rows of one checkpoint: one per (condition, shots), accuracy under ``convention`` with its
    interval and the error count the fit reads, and, for the lm readout, every convention's accuracy."""
    tree = accuracy_tree(summary, convention)
    conventions = summary.get("scoring_conventions", {}).get("accuracy", {})
    out = []
    for cond, shots in _cells(summary):
        cell = tree[cond][shots]
        row = {"checkpoint": checkpoint.name, "step": checkpoint.step, "weights": weights_of(checkpoint),
               "condition": cond, "shots": int(shots), "convention": convention, "accuracy": cell["mean"],
               "ci_low": cell["ci_low"], "ci_high": cell["ci_high"], "n": cell["n"],
               "errors": int(round((1 - cell["mean"]) * cell["n"]))}
        for name, other in conventions.items():
            row[f"accuracy_{name}"] = other[cond][shots]["mean"]
        out.append(row)
    return out


def fit_cell(steps: np.ndarray, errors: np.ndarray, n: int, levels: list[float]) -> dict[str, Any]:
    """One cell's error over checkpoints fitted with the synthetic convergence functions (:data:`FIT_RULE`)."""
    steps, err = np.asarray(steps, float), np.asarray(errors, float) / n
    positive = steps > 0
    fit = fit_tail(steps[positive], err[positive], n, start_level=1.0)
    half = Z95 * fit.rate_se_quasi if math.isfinite(fit.rate_se_quasi) else math.nan
    return {"n": n, "checkpoints_fitted": int(positive.sum()), "error_first": float(err[0]),
            "error_last": float(err[-1]), "rate": fit.rate, "rate_se": fit.rate_se,
            "rate_se_quasi": fit.rate_se_quasi, "rate_ci95_quasi": [fit.rate - half, fit.rate + half],
            "dispersion": fit.dispersion, "power": fit.power, "aic_exponential": fit.aic_exponential,
            "aic_power": fit.aic_power, "qaic_exponential": fit.qaic_exponential, "qaic_power": fit.qaic_power,
            "exponential_wins": fit.exponential_wins if math.isfinite(fit.rate) else None,
            "curvature": fit.curvature, "curvature_se": fit.curvature_se,
            "window": [fit.start, fit.end, fit.points],
            "crossing": {f"{lv:g}": crossing_step(steps, err, lv, 0.5 / n) for lv in levels}}


def fit_cells(cells: list[dict[str, Any]], levels: list[float]) -> dict[str, dict[str, dict[str, Any]]]:
    """{condition: {shots: fit}} over the checkpoints of cells.csv's rows (a cell whose prompt count differs
    between checkpoints is not fitted: its error counts are not out of one n)."""
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in cells:
        by.setdefault((r["condition"], int(r["shots"])), []).append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (cond, shots), rows in by.items():
        rows = sorted(rows, key=lambda r: r["step"])
        ns = {int(r["n"]) for r in rows}
        if len(ns) != 1:
            out.setdefault(cond, {})[str(shots)] = {"not_fitted": f"prompt counts differ between checkpoints: "
                                                                  f"{sorted(ns)}"}
            continue
        out.setdefault(cond, {})[str(shots)] = fit_cell(np.array([r["step"] for r in rows]),
                                                        np.array([r["errors"] for r in rows]), ns.pop(), levels)
    return out


def convergence_rows(fits: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """convergence.csv: one row per (condition, shots) fit."""
    out = []
    for cond, by_shots in fits.items():
        for shots, f in by_shots.items():
            row: dict[str, Any] = {"condition": cond, "shots": int(shots)}
            if "not_fitted" in f:
                out.append({**row, "not_fitted": f["not_fitted"]})
                continue
            low, high = f["rate_ci95_quasi"]
            row.update({k: f[k] for k in ("n", "checkpoints_fitted", "error_first", "error_last", "rate", "rate_se",
                                          "rate_se_quasi")})
            row.update({"rate_ci95_low": low, "rate_ci95_high": high})
            row.update({k: f[k] for k in ("dispersion", "power", "qaic_exponential", "qaic_power",
                                          "exponential_wins", "curvature", "curvature_se")})
            row.update({f"step_to_error_{lv}": v for lv, v in f["crossing"].items()})
            out.append(row)
    return out


ACCURACY_STEP_CAPTION = Caption(
    "ICL accuracy over training checkpoints",
    "ICL accuracy of the same probe (same prompts, same readout) on each training checkpoint against its training "
    "step: (a) every condition at its largest number of shots (zero_shot at 0), (b) the in-distribution condition at "
    "each number of shots; bars: cluster-bootstrap 95% intervals (episodes, query words, query concepts); dashed: "
    "chance. Checkpoints marked random init or tiny-trained are tiny test models, not pretrained checkpoints.")


def _step_axis(ax: Axes, steps: list[int]) -> None:
    """A symlog step axis where the steps span decades (Pythia's 0, 1, 2, 4, ..., 143000), else linear."""
    positive = [s for s in steps if s > 0]
    if positive and max(positive) / min(positive) >= 20:
        ax.set_xscale("symlog", linthresh=min(positive))


@styled
def accuracy_vs_step_figure(cells: list[dict[str, Any]], *, chance: float, title: str,
                            axes: tuple[Axes, Axes] | None = None) -> Figure:
    """ICL accuracy against checkpoint step with intervals: (a) each condition at its largest shots, (b) the first
    condition with demonstrations (in_distribution) at each shots; drawn from cells.csv's rows."""
    if axes is None:
        fig = Figure(figsize=(12.5, 4.6))
        ax_a, ax_b = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    else:
        ax_a, ax_b = axes
        fig = ax_a.figure
    conditions = [c for c in CONDITIONS if any(r["condition"] == c for r in cells)]
    colours = [c for c in palette(len(conditions) + 8) if c != "#F0E442"]
    steps = sorted({int(r["step"]) for r in cells})

    gaps = np.diff(steps) if len(steps) > 1 else np.array([1.0])

    def line(ax: Axes, rows: list[dict[str, Any]], colour: str, label: str, marker: str, shift: float) -> None:
        rows = sorted(rows, key=lambda r: r["step"])
        y = np.array([float(r["accuracy"]) for r in rows])
        err = [y - [float(r["ci_low"]) for r in rows], [float(r["ci_high"]) for r in rows] - y]
        # Lines side by side by a fraction of the smallest gap (linear axis), so intervals do not hide each other.
        x = [int(r["step"]) + (shift * float(gaps.min()) if ax.get_xscale() == "linear" else 0.0) for r in rows]
        ax.errorbar(x, y, yerr=err, color=colour, marker=marker, ms=5, lw=1.5, capsize=2.5, label=label)

    def shift(k: int, count: int) -> float:
        return 0.0 if count < 2 else 0.25 * (k - (count - 1) / 2) / (count - 1)

    _step_axis(ax_a, steps)
    _step_axis(ax_b, steps)

    for k, cond in enumerate(conditions):
        top = max(int(r["shots"]) for r in cells if r["condition"] == cond)
        line(ax_a, [r for r in cells if r["condition"] == cond and int(r["shots"]) == top], colours[k],
             f"{cond.replace('_', ' ')} ({top} shots)", "osD^vP*Xph"[k % 10], shift(k, len(conditions)))
    with_demos = [c for c in conditions if any(int(r["shots"]) > 0 for r in cells if r["condition"] == c)]
    focus = "in_distribution" if "in_distribution" in with_demos else (with_demos or conditions)[0]
    shots = sorted({int(r["shots"]) for r in cells if r["condition"] == focus})
    shades = palette(len(shots) + 8)[len(conditions):len(conditions) + len(shots)] if len(shots) > 1 else [
        colours[conditions.index(focus)]]
    for k, s in enumerate(shots):
        line(ax_b, [r for r in cells if r["condition"] == focus and int(r["shots"]) == s], shades[k],
             f"{s} shots", "osD^vP*Xph"[k % 10], shift(k, len(shots)))
    for ax, what in ((ax_a, "(a) every condition at its largest shots"),
                     (ax_b, f"(b) {focus.replace('_', ' ')} at each number of shots")):
        ax.axhline(chance, color="0.3", ls="--", lw=1, label=f"chance ({chance:.2f})")
        ax.set_xlabel("training step of the checkpoint" + (" (symlog)" if ax.get_xscale() == "symlog" else ""))
        ax.set_ylabel("accuracy (fraction correct)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(what, fontsize=10)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title + "; bars: cluster-bootstrap 95% CI", fontsize=11)
    return fig


@dataclass
class CheckpointSweepResult:
    """A finished sweep: its config, the checkpoints in step order, one row per checkpoint, one per (checkpoint,
    condition, shots), the fits, and summary.json's content."""

    config: CheckpointsConfig
    checkpoints: list[Checkpoint]
    rows: list[dict[str, Any]]
    cells: list[dict[str, Any]]
    fits: dict[str, dict[str, dict[str, Any]]]
    summary: dict[str, Any]

    def figures(self) -> dict[str, Figure]:
        """{"accuracy_vs_step": accuracy against checkpoint step, per condition, with intervals}."""
        weights = sorted({r["weights"] for r in self.rows})
        tag = " [TINY TEST MODEL: " + ", ".join(weights) + "]" if any(w != "checkpoint" for w in weights) else ""
        title = (f"ICL accuracy over training checkpoints: {self.summary.get('model', '?')}{tag}\n"
                 f"{self.summary.get('readout', '?')} readout, {self.summary.get('convention', 'acc')}, "
                 f"{self.summary.get('ways', 2)}-way")
        return {"accuracy_vs_step": accuracy_vs_step_figure(self.cells, chance=self.summary["chance"], title=title)}

    def save(self, run: RunFolder) -> None:
        """Write config.yaml, checkpoints.csv, cells.csv, convergence.csv, summary.json and the figure into ``run``
        (each checkpoint's own probe is in checkpoints/step_<N>/, written as it finishes)."""
        run.save_config(self.config)
        run.write_csv("checkpoints.csv", self.rows)
        run.write_csv("cells.csv", self.cells)
        if conv := convergence_rows(self.fits):
            run.write_csv("convergence.csv", conv)
        run.write_summary(self.summary)
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=ACCURACY_STEP_CAPTION)


def _finished(run: RunFolder, checkpoint: Checkpoint, icl: IclConfig) -> dict[str, Any] | None:
    """The saved probe summary of ``checkpoint`` if it was written completely with these settings, else None."""
    marker = run.path / checkpoint.folder / "checkpoint.json"
    if not marker.is_file():
        return None
    saved = read_json(marker)
    if saved.get("checkpoint") != asdict(checkpoint) or saved.get("config") != to_dict(icl):
        return None
    return read_json(run.path / checkpoint.folder / "summary.json")


def _write_checkpoint(run: RunFolder, checkpoint: Checkpoint, icl: IclConfig, result: Any) -> None:
    """The checkpoint's probe into checkpoints/step_<N>/ (config, results, conventions, summary; checkpoint.json
    last: its presence with the same settings marks the checkpoint finished)."""
    sub = RunFolder.create(run.path / checkpoint.folder, "probe icl", overwrite=True)
    sub.save_config({**to_dict(icl), "readout_resolved": result.readout})
    sub.write_csv("results.csv", result.rows)
    if conv := convention_rows(result.summary):
        sub.write_csv("scoring_conventions.csv", conv)
    sub.write_summary(result.summary)
    write_json(sub.path / "checkpoint.json", {"checkpoint": asdict(checkpoint), "config": to_dict(icl)})


def run_checkpoints(config: CheckpointsConfig, run: RunFolder, *, resume: bool = False,
                    concept_set: ConceptSet | None = None) -> CheckpointSweepResult:
    """Probe every checkpoint into ``run`` (``resume``: keep those finished there with the same settings), fit the
    error over steps, write the sweep's tables, summary and figure; return the result."""
    checkpoints = resolve_checkpoints(config)
    cs = concept_set if concept_set is not None else load_suite(config.icl.prompts.suite, config.icl.prompts.polysemy)
    summaries: dict[int, dict[str, Any]] = {}
    probed = 0
    for checkpoint in progress(checkpoints, desc="checkpoints"):
        icl = probe_config(config, checkpoint)
        found = _finished(run, checkpoint, icl) if resume else None
        if found is None:
            log.info("checkpoint %s (step %d): probing", checkpoint.name, checkpoint.step)
            result = icl_probe(icl, concept_set=cs)
            _write_checkpoint(run, checkpoint, icl, result)
            found = result.summary
            probed += 1
        else:
            log.info("checkpoint %s (step %d): kept from %s", checkpoint.name, checkpoint.step, checkpoint.folder)
        summaries[checkpoint.step] = found
    rows = [checkpoint_row(c, summaries[c.step], config.convention) for c in checkpoints]
    cells = [r for c in checkpoints for r in cell_rows(c, summaries[c.step], config.convention)]
    fits = fit_cells(cells, list(config.error_levels))
    first = summaries[checkpoints[0].step]
    summary = finite_or_none({
        "model": (config.icl.extraction.model if any(c.revision for c in checkpoints)
                  else str(Path(checkpoints[-1].model).parent)),  # local folders: the folder holding them
        "readout": first.get("readout"), "convention": config.convention, "ways": first.get("ways"),
        "chance": first.get("chance"), "concept_set": first.get("concept_set"),
        "n_checkpoints": len(checkpoints), "probed_now": probed, "kept_from_resume": len(checkpoints) - probed,
        "weights": {c.name: weights_of(c) for c in checkpoints},
        "checkpoints": rows, "convergence": fits, "fit_rule": FIT_RULE, "pairing": PAIRING,
        "error_levels": list(config.error_levels),
    })
    result = CheckpointSweepResult(config, checkpoints, rows, cells, fits, summary)
    result.save(run)
    return result


def execute(config: CheckpointsConfig, ctx: JobContext) -> int:
    """``mcicl probe checkpoints``: resolve the checkpoints (bad names fail before the folder exists), probe each,
    fit, save, print the headline cell per checkpoint."""
    seed_everything(config.icl.seed)
    checkpoints = resolve_checkpoints(config)
    concept_set = load_suite(config.icl.prompts.suite, config.icl.prompts.polysemy)
    inputs: dict[str, str | None] = {"--model": config.icl.extraction.model, "--suite": config.icl.prompts.suite}
    inputs.update({f"--checkpoints {c.name}": c.model for c in checkpoints if c.revision is None})
    run = ctx.create_run(inputs=inputs, resumable=True)
    result = run_checkpoints(config, run, resume=ctx.resume, concept_set=concept_set)
    for row in result.rows:
        cells = [k for k in row if "@" in k and not k.endswith(("_ci_low", "_ci_high"))]
        head = next((k for k in reversed(cells) if k.startswith("in_distribution@")), cells[-1] if cells else None)
        if head:
            print(f"step {row['step']:>8} ({row['weights']}): {head} accuracy {row[head]:.3f} "
                  f"[{row[head + '_ci_low']:.3f}, {row[head + '_ci_high']:.3f}]")
    print(f"output is in {run.path}")
    return 0
