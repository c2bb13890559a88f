"""The report: one self-contained HTML file (figures embedded as base64 PNG) plus ``report.md``.

A report is a list of :class:`Section` s (text, figures with a caption saying what they show and how to
read them, tables), built from saved run folders by :func:`sections_from_run`, so a report can be
regenerated at any time without re-running anything. ``mcicl report RUN...`` and the demo's last stage
call :func:`write_report`.

Which section a run gets is read from the command its ``run.json`` records, looked up in a
:class:`~mcicl.core.jobs.ReportCatalog` ({command: ReportSection}) that the application layer builds from the job
registry and hands in; one generic renderer turns any ReportSection into a report Section.
"""

from __future__ import annotations

import base64
import csv
import html
import logging
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcicl.core.io import read_json, versions
from mcicl.core.jobs import CsvTable, DemoContext, JobContext, ReportCatalog, ReportSection, Table, load
from mcicl.core.plotting import read_caption
from mcicl.core.runs import RUN_MARKER, RunFolder, require_run

log = logging.getLogger("mcicl")

MAX_TABLE_ROWS = 40  # long CSVs (one row per prompt) are summarised, the file itself stays in the run folder


@dataclass
class Figure:
    """A PNG with a title and a caption saying what it shows and how to read it."""

    path: Path
    title: str
    caption: str


@dataclass
class Section:
    """One part of the report: a heading, paragraphs, figures, tables and preformatted blocks."""

    title: str
    text: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (title, preformatted text)


def caption_for(png: Path, run_name: str) -> tuple[str, str]:
    """(title, caption) of a figure: the caption its drawing code saved in the PNG, or a generic one."""
    caption = read_caption(png)
    if caption is not None:
        return f"{caption.title} ({run_name}: {png.stem})", caption.text
    return f"{png.stem} ({run_name})", f"Figure {png.name} saved by the run {run_name}; see that run's docs."


# ----------------------------------------------------------------------------------------------- tables


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys (lists of scalars kept as a short string)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            if all(not isinstance(v, (Mapping, list, tuple)) for v in value) and len(value) <= 12:
                out[name] = ", ".join(_fmt(v) for v in value)
        else:
            out[name] = value
    return out


def summary_table(summary: Mapping[str, Any], title: str, *, skip: Iterable[str] = ()) -> Table:
    """A two-column (statistic, value) table of a summary.json, nested keys dotted."""
    skip = tuple(skip)
    rows = [{"statistic": k, "value": v} for k, v in flatten(summary).items()
            if not any(k.startswith(s) for s in skip)]
    return Table(title, rows)


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def csv_table(path: Path, title: str, caption: str = "", max_rows: int = MAX_TABLE_ROWS) -> Table:
    """A table of a CSV file, its first ``max_rows`` rows (the note says how many were left out)."""
    rows = read_csv_rows(path)
    note = f"first {max_rows} of {len(rows)} rows; the full table is {path}" if len(rows) > max_rows else ""
    return Table(title, rows[:max_rows], caption, note)


def _fmt(value: Any) -> str:
    """Numbers to 4 significant digits, everything else as text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return value if number.is_integer() or len(value) <= 8 else f"{number:.4g}"
    return str(value)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row))


# ----------------------------------------------------------------------------------------- run folders

# Runs the analysis layer itself writes inside a compare folder (not jobs of their own): their sections and
# where they sit among the demo's stages (the comparison stage, 60, writes its sweep and matched world).
_ANALYSIS_SECTIONS: dict[str, ReportSection] = {
    # Written by the compare job's matched world (analysis/matched.py:run_matched) inside its compare folder.
    "synthetic train (geometry-matched)": ReportSection(
        "Geometry-matched synthetic world",
        "A synthetic world whose generator parameters were estimated from the real model's geometry.",
        csv_tables=(CsvTable("matched.csv", "Matched world: synthetic errors beside the real model's ICL",
                             "Each row a condition: the matched synthetic model's 0-1 error and the real model's "
                             "ICL error (1 - accuracy) on the matching condition."),
                    CsvTable("estimate.csv", "Estimated generator parameters", "Target and achieved moments."))),
}
_ANALYSIS_DEMO_ORDER: dict[str, int] = {"synthetic sweep": 60, "synthetic train (geometry-matched)": 60}

# Bulky summary entries shown as their own tables or kept in the files, never as headline numbers.
_BULKY = ("per_layer", "table", "embedding_figures", "rows", "matched.conditions", "ood_map.points", "cells",
          "top_heads", "attention")


def run_command(path: Path) -> str:
    """The command that ``run.json`` says wrote the run folder ``path`` ('' when it has none)."""
    if not (path / RUN_MARKER).is_file():
        return ""
    return str(read_json(path / RUN_MARKER).get("command", ""))


def section_for(command: str, catalog: ReportCatalog | None = None) -> ReportSection | None:
    """The ReportSection of runs of ``command``: the catalog's, else the analysis layer's own; a command
    written with a suffix ("synthetic train (geometry-matched)") falls back to its longest known prefix."""
    known = {**_ANALYSIS_SECTIONS, **dict((catalog or ReportCatalog()).sections)}
    if command in known:
        return known[command]
    prefixes = [c for c in known if command.startswith(c + " ")]
    return known[max(prefixes, key=len)] if prefixes else None


def reported_commands(catalog: ReportCatalog | None = None) -> tuple[str, ...]:
    """Every run.json command the report has a section for (``mcicl report`` accepts runs of these)."""
    return tuple(dict.fromkeys([*(catalog or ReportCatalog()).sections, *_ANALYSIS_SECTIONS]))


def sections_from_run(path: str | Path, title: str | None = None, *,
                      catalog: ReportCatalog | None = None) -> list[Section]:
    """Report sections for one run folder, described by the ReportSection of the command its run.json records
    (a demo folder yields its overview, then one section per stage subfolder in demo-stage order)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder not found: {path}")
    catalog = catalog or ReportCatalog()
    command = run_command(path)
    spec = section_for(command, catalog)
    if spec is None:
        # An unknown command (a plugin's without a report section, an old folder) still shows what it saved.
        spec = ReportSection(command or path.name, f"No report section is registered for the command "
                                                   f"{command or '(none: no run.json)'!r}; its saved files follow.")
    sections = [_run_section(path, spec, title or spec.title)]
    if spec.stages:
        for sub in _stage_folders(path, catalog):
            sections += sections_from_run(sub, catalog=catalog)
    return sections


def _stage_folders(path: Path, catalog: ReportCatalog) -> list[Path]:
    """The run folders inside ``path`` (a report's own folder left out), in the order of the demo stages that
    wrote them, then their start times."""
    order = {**_ANALYSIS_DEMO_ORDER, **dict(catalog.demo_order)}
    subs = [p for p in path.iterdir() if p.is_dir() and (p / RUN_MARKER).is_file() and run_command(p) != "report"]

    def key(p: Path) -> tuple[int, str, str]:
        return order.get(run_command(p), 99), str(read_json(p / RUN_MARKER).get("started", "")), p.name

    return sorted(subs, key=key)


def _run_section(path: Path, spec: ReportSection, title: str) -> Section:
    section = Section(title=f"{title} ({path.name})")
    if spec.text:
        section.text.append(spec.text)
    summary: Mapping[str, Any] = {}
    if not (path / "summary.json").is_file():  # every finished run writes one: its absence is stated, not skipped
        log.warning("report: %s has no summary.json, so its headline numbers are missing; it is shown as an "
                    "incomplete run (rerun it to restore them)", path)
        section.text.append(f"Incomplete run: {path / 'summary.json'} is missing, so this run's headline numbers "
                            "are not shown; what it saved follows.")
    else:
        loaded = read_json(path / "summary.json")
        summary = loaded if isinstance(loaded, Mapping) else {}
        if summary:
            # {condition: {shots: {mean, ci_low, ci_high}}} trees (ICL accuracies, baselines) as wide tables.
            trees = [k for k, v in summary.items() if _is_accuracy_tree(v)]
            for key in trees:
                what = {"accuracy": "ICL accuracy"}.get(key, key.replace("_", " ").capitalize())
                section.tables.append(_wide_icl(summary[key], what))
            table = summary_table(summary, "Summary (headline numbers)", skip=(*_BULKY, *spec.skip, *trees))
            if len(table.rows) > MAX_TABLE_ROWS:
                table.note = f"first {MAX_TABLE_ROWS} of {len(table.rows)} entries; see {path / 'summary.json'}"
                table.rows = table.rows[:MAX_TABLE_ROWS]
            if table.rows:
                section.tables.append(table)
    if spec.tables:
        section.tables += [t for t in load(spec.tables)(path, summary) if t.rows]
    for csv_spec in spec.csv_tables:
        if (path / csv_spec.file).is_file():
            table = csv_table(path / csv_spec.file, csv_spec.title, csv_spec.caption)
            if table.rows:
                section.tables.append(table)
    for png in sorted((path / "figures").glob("*.png")) if (path / "figures").is_dir() else []:
        section.figures.append(Figure(png, *caption_for(png, path.name)))
    if (path / "config.yaml").is_file():
        section.blocks.append(("config.yaml", (path / "config.yaml").read_text()))
    if (path / RUN_MARKER).is_file():
        info = read_json(path / RUN_MARKER)
        section.blocks.append(("command and versions", "\n".join(
            [f"command: {info.get('command', '')}", f"started: {info.get('started', '')}"]
            + [f"{k}: {v}" for k, v in (info.get("versions") or {}).items()])))
    return section


def comparison_tables(path: Path, summary: Mapping[str, Any]) -> list[Table]:
    """The ``tables`` hook of compare runs: comparison.csv side by side (one row per space and geometry)."""
    return [_wide_comparison(path / "comparison.csv")] if (path / "comparison.csv").is_file() else []


def demo_tables(path: Path, summary: Mapping[str, Any]) -> list[Table]:
    """The ``tables`` hook of demo runs: one row per stage with its time and first headline numbers."""
    rows = []
    for stage, numbers in (summary.get("stages") or {}).items():
        # Paths are in the sections below; the overview keeps the numbers.
        shown = {k: v for k, v in flatten(numbers).items() if not (isinstance(v, str) and ("/" in v or len(v) > 60))}
        rows.append({"stage": stage, "seconds": shown.pop("seconds", ""),
                     "headline": "; ".join(f"{k}={_fmt(v)}" for k, v in list(shown.items())[:8])})
    return [Table("Stages", rows)]


def _wide_comparison(path: Path) -> Table:
    """comparison.csv as one row per (space, geometry) and one 'value (null)' column per statistic."""
    wide: dict[tuple[str, str], dict[str, Any]] = {}
    for r in read_csv_rows(path):
        row = wide.setdefault((r["space"], r["geometry"]), {"space": r["space"], "geometry": r["geometry"]})
        value = _fmt(r["value"]) if r["value"] not in ("", "nan") else "n/a"
        row[r["statistic"]] = value + (f" ({_fmt(r['null'])})" if r.get("null") not in ("", None, "nan") else "")
    return Table("Side-by-side geometry statistics", list(wide.values()),
                 "Cells: value (null mean). Raw: cosines as they are (the synthetic generator's geometry); centred: "
                 "each space's mean removed. Null: permutation null (labels shuffled); for sense cosines, the "
                 f"cosines of other concepts' words with the same centroid. Full table with p-values and CIs: {path}")


def _is_accuracy_tree(value: Any) -> bool:
    """True for {condition: {shots: {"mean": ...}}}."""
    return (isinstance(value, Mapping) and bool(value)
            and all(isinstance(v, Mapping) and v and all(isinstance(a, Mapping) and "mean" in a for a in v.values())
                    for v in value.values()))


def _wide_icl(accuracy: Mapping[str, Any], what: str = "ICL accuracy") -> Table:
    """Accuracies as one row per condition and one 'mean [ci_low, ci_high]' column per number of shots."""
    per_condition = {c: v for c, v in accuracy.items() if isinstance(v, Mapping)}
    shots = sorted({str(k) for v in per_condition.values() for k in v},
                   key=lambda x: (int(x) if x.isdigit() else 10**6, x))
    rows = []
    for condition, per_shot in per_condition.items():
        row: dict[str, Any] = {"condition": condition}
        for k in shots:
            a = per_shot.get(k)
            ok = isinstance(a, Mapping) and "mean" in a
            row[f"{k} shots"] = f"{_fmt(a['mean'])} [{_fmt(a.get('ci_low'))}, {_fmt(a.get('ci_high'))}]" if ok else ""
        rows.append(row)
    return Table(f"{what} per condition and number of shots", rows,
                 "Mean accuracy [bootstrap 95% interval]; compare with the chance level in the summary.")


# ---------------------------------------------------------------------------------------------- render

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #0072B2}h2{margin-top:2em;border-bottom:1px solid #ccc}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.92em;color:#444}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:2px 6px;
text-align:left}th{background:#f3f6fa}pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em}
.note{font-size:.85em;color:#666}nav li{margin:.1em 0}
"""


def render_html(title: str, sections: Sequence[Section], intro: Sequence[str] = ()) -> str:
    """One self-contained HTML page: every figure embedded as a base64 PNG, no external resources."""
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(p)}</p>" for p in intro]
    parts.append("<nav><ul>" + "".join(f"<li><a href=\"#s{i}\">{html.escape(s.title)}</a></li>"
                                       for i, s in enumerate(sections)) + "</ul></nav>")
    for i, section in enumerate(sections):
        parts.append(f"<section id=\"s{i}\"><h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.text]
        for fig in section.figures:
            data = base64.b64encode(Path(fig.path).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt=\"{html.escape(fig.title)}\" src=\"data:image/png;base64,{data}\">"
                         f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}</figcaption>"
                         "</figure>")
        for table in section.tables:
            parts.append(_html_table(table))
        for block_title, text in section.blocks:
            parts.append(f"<details><summary>{html.escape(block_title)}</summary><pre>{html.escape(text)}</pre>"
                         "</details>")
        parts.append("</section>")
    parts.append("<h2>Software versions</h2><pre>" + html.escape(
        "\n".join(f"{k}: {v}" for k, v in versions().items())) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_table(table: Table) -> str:
    cols = _columns(table.rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for row in table.rows)
    out = f"<h3>{html.escape(table.title)}</h3>"
    if table.caption:
        out += f"<p class=\"note\">{html.escape(table.caption)}</p>"
    out += f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if table.note:
        out += f"<p class=\"note\">{html.escape(table.note)}</p>"
    return out


def render_markdown(title: str, sections: Sequence[Section], figure_links: Mapping[Path, str],
                    intro: Sequence[str] = ()) -> str:
    """The report as Markdown; figures are linked by the relative paths in ``figure_links``."""
    lines = [f"# {title}", ""] + [p + "\n" for p in intro]
    for section in sections:
        lines += [f"## {section.title}", ""] + [p + "\n" for p in section.text]
        for fig in section.figures:
            lines += [f"![{fig.title}]({figure_links[Path(fig.path)]})", "", f"*{fig.title}.* {fig.caption}", ""]
        for table in section.tables:
            cols = _columns(table.rows)
            lines += [f"### {table.title}", ""] + ([table.caption, ""] if table.caption else [])
            lines.append("| " + " | ".join(cols) + " |")
            lines.append("|" + "---|" * len(cols))
            lines += ["| " + " | ".join(_fmt(r.get(c, "")).replace("|", "\\|") for c in cols) + " |"
                      for r in table.rows]
            lines += [""] + ([table.note, ""] if table.note else [])
        for block_title, text in section.blocks:
            lines += [f"<details><summary>{block_title}</summary>", "", "```", text.rstrip(), "```", "",
                      "</details>", ""]
    lines += ["## Software versions", "", "```"] + [f"{k}: {v}" for k, v in versions().items()] + ["```", ""]
    return "\n".join(lines)


@dataclass
class ReportResult:
    """A report: its title, intro and sections (built from saved run folders). Its figures are its runs' own,
    copied in by ``save``; it draws none of its own."""

    title: str
    sections: list[Section]
    intro: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        return {"sections": len(self.sections), "figures": sum(len(s.figures) for s in self.sections),
                "tables": sum(len(s.tables) for s in self.sections)}

    def figures(self) -> dict[str, Any]:
        return {}

    def save(self, run: RunFolder) -> None:
        """Write ``report.html`` (self-contained), ``report.md`` (+ figures/ copies) and summary.json into ``run``."""
        links: dict[Path, str] = {}
        for i, section in enumerate(self.sections):
            for fig in section.figures:
                target = run.figures / f"{i:02d}-{Path(fig.path).name}"
                if Path(fig.path).resolve() != target.resolve():
                    shutil.copyfile(fig.path, target)
                links[Path(fig.path)] = f"figures/{target.name}"
        html_path = run.path / "report.html"
        html_path.write_text(render_html(self.title, self.sections, self.intro), encoding="utf-8")
        (run.path / "report.md").write_text(render_markdown(self.title, self.sections, links, self.intro),
                                            encoding="utf-8")
        run.write_summary({"html": str(html_path), "markdown": str(run.path / "report.md"), **self.summary})


def write_report(run: RunFolder, sections: Sequence[Section], title: str = "mcicl report",
                 intro: Sequence[str] = ()) -> Path:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ figures/ copies) into ``run``; return the HTML."""
    ReportResult(title, list(sections), list(intro)).save(run)
    return run.path / "report.html"


def report_runs(run_dirs: Sequence[str | Path], run: RunFolder, title: str = "mcicl report", *,
                catalog: ReportCatalog | None = None) -> Path:
    """Build the report of saved run folders into ``run``, each run's section chosen by its run.json command in
    ``catalog`` (the registered jobs' sections); return the HTML path."""
    if not run_dirs:
        raise ValueError("mcicl report needs at least one RUN folder")
    sections: list[Section] = []
    for d in run_dirs:
        sections += sections_from_run(d, catalog=catalog)
    intro = ["Made by mcicl from the saved run folders " + ", ".join(str(d) for d in run_dirs) + ". Every "
             "figure was drawn from saved metrics; every number is in the runs' summary.json and CSV files."]
    return write_report(run, sections, title, intro)


def execute(config: None, ctx: JobContext) -> int:
    """``mcicl report RUN...``: check every run, open the output folder, write the report, print where it is."""
    runs = list(ctx.options.get("runs") or [])
    accepted = reported_commands(ctx.reports)
    for run_dir in runs:  # check before creating the output folder, so a typo leaves nothing behind
        require_run(run_dir, "run", accepted)
    out = ctx.create_run(inputs={f"run[{i}]": run_dir for i, run_dir in enumerate(runs)})
    html_path = report_runs(runs, out, title=ctx.options.get("title") or "mcicl report", catalog=ctx.reports)
    print(f"report: {html_path}  (markdown: {out.path / 'report.md'}); output is in {out.path}")
    return 0


def demo_stage(ctx: DemoContext) -> dict[str, Any]:
    """Demo stage "report": the report of the demo folder itself, into its ``report`` subfolder; returns the
    report's path and how many figures and tables it has."""
    out = ctx.stage_run("report", "report")
    # The demo's summary.json is written after the last stage; write the current one so the overview has it.
    ctx.run.write_summary({"stages": ctx.results})
    html_path = report_runs([ctx.run.path], out, title="mcicl demo report", catalog=ctx.reports)
    summary = read_json(out.path / "summary.json")
    return {"report": str(html_path), "figures": summary["figures"], "tables": summary["tables"]}
