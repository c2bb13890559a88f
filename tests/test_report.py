"""The report: self-contained HTML (every image embedded and decodable, every table non-empty) + report.md."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcicl.analysis.engine.embedding_plots import EMBEDDING_CAPTION, embedding_figure
from mcicl.analysis.ood_map import OOD_MAP_CAPTION, MapPoint, ood_map_figure
from mcicl.core.plotting import save_figure
from mcicl.core.runs import RunFolder
from mcicl.core.vectors import LabelledVectors
from tests.conftest import mcicl_cli


class ReportParser(HTMLParser):
    """Collects <img> sources, tables (rows of cells) and any external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.external: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.external.append(attrs.get("href") or attrs.get("src"))
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def check_report(html_path: Path) -> ReportParser:
    """Parse the HTML; assert every image is an embedded PNG that decodes and every table has data rows."""

    parser = ReportParser()
    parser.feed(html_path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.images, "the report has no figures"
    assert not parser.external, f"the report references external files: {parser.external}"
    for src in parser.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        image.load()
        assert image.size[0] > 100 and image.size[1] > 100
    assert parser.tables, "the report has no tables"
    for table in parser.tables:
        header, rows = table[0], table[1:]
        assert header and rows, f"empty table with header {header}"
        assert all(len(r) == len(header) for r in rows)
        assert any(cell.strip() for r in rows for cell in r)
    return parser


@pytest.fixture
def runs(tmp_path):
    """Two small run folders: one with an embedding figure, summary and a CSV; one 'sweep' with an OOD map."""

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20))
    vectors = np.vstack([c + 0.4 * rng.normal(size=(10, 20)) for c in centres])
    labels = np.repeat(["a", "b", "c"], 10)
    words = LabelledVectors(vectors, [f"w{i}" for i in range(30)], labels)
    poly = LabelledVectors(np.array([centres[0] + centres[1]]), ["ab"], ["a|b"])

    first = RunFolder.create(tmp_path / "first", "probe geometry")
    first.save_config({"model": "toy", "permutations": 10})
    first.write_summary({"within_concept_cosine": {"value": 0.5, "null": 0.1, "p_value": 0.01}, "layer": "3"})
    first.write_csv("layers.csv", [{"layer": "0", "within": 0.4}, {"layer": "1", "within": 0.5}])
    fig, info = embedding_figure(words, polysemy=poly, seed=7, use_umap=False)
    png = save_figure(fig, first.figures, "embedding", caption=EMBEDDING_CAPTION)
    assert info["umap_seed"] == 7 and info["n_polysemous"] == 1 and png.is_file()
    assert (first.figures / "embedding.pdf").is_file()

    second = RunFolder.create(tmp_path / "second", "synthetic sweep")
    rows = [{"within_cosine": str(w), "cross_overlap": str(c), "test_zero_one": "0.0",
             "ood.flipped_labels.test_zero_one": str(w * c)} for w in (0.1, 0.5) for c in (0.0, 0.2)]
    second.write_csv("sweep.csv", rows)
    save_figure(ood_map_figure(rows, [MapPoint("toy layer 3", 0.3, 0.1)]), second.figures, "ood_map",
                caption=OOD_MAP_CAPTION)
    return first.path, second.path


def test_report_html_is_self_contained_and_markdown_links_exist(runs, tmp_path):
    out = tmp_path / "report"
    result = mcicl_cli("report", *map(str, runs), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    html_path = out / "report.html"
    assert str(html_path) in result.stdout
    parser = check_report(html_path)
    assert len(parser.images) == 2
    text = html_path.read_text()
    assert "Concept words: UMAP and PCA" in text and "Geometry-to-OOD map" in text  # captions say what they show
    assert "permutations: 10" in text  # the run's config is in the report
    assert "torch" in text  # and the versions
    md = (out / "report.md").read_text()
    links = [line.split("](", 1)[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert len(links) == 2 and all((out / link).is_file() for link in links)
    assert "| statistic | value |" in md


def test_report_refuses_a_missing_run(tmp_path):
    result = mcicl_cli("report", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), "--quiet")
    assert result.returncode == 2
    assert "run folder not found" in result.stderr and "nope" in result.stderr


def test_report_dispatches_on_the_command_in_run_json(tmp_path):
    """Files that look like a sweep and a comparison do not matter: run.json says probe geometry."""
    from mcicl.analysis.report import sections_from_run
    from mcicl.app.registry import report_catalog

    run = RunFolder.create(tmp_path / "looks-like-a-sweep", "probe geometry")
    run.write_summary({"layer": "3", "per_layer": {"0": {"x": 1}}})
    run.write_csv("sweep.csv", [{"within_cosine": "0.1", "test_zero_one": "0.0"}])
    run.write_csv("comparison.csv", [{"space": "s", "geometry": "raw", "statistic": "w", "value": "1", "null": ""}])
    run.write_csv("layers.csv", [{"layer": "0", "within": 0.4}])
    (section,) = sections_from_run(run.path, catalog=report_catalog())
    assert section.title.startswith("Real model: concept geometry")
    titles = [t.title for t in section.tables]
    assert "Statistics per layer" in titles  # the geometry section's csv table
    assert "Sweep results" not in titles and "Side-by-side geometry statistics" not in titles
    headline = next(t for t in section.tables if t.title.startswith("Summary"))
    assert [r["statistic"] for r in headline.rows] == ["layer"]  # per_layer is in the section's skip


def test_report_of_an_unknown_command_is_a_plain_section_and_the_cli_refuses_it(tmp_path, capsys):
    from mcicl.analysis.report import sections_from_run
    from mcicl.app.cli import main

    run = RunFolder.create(tmp_path / "m", "mystery job")
    run.write_summary({"value": 1.5})
    (section,) = sections_from_run(run.path)
    assert section.title.startswith("mystery job") and "No report section" in section.text[0]
    assert [r["statistic"] for r in section.tables[0].rows] == ["value"]
    assert main(["report", str(run.path), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "mystery job" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_report_renders_the_section_of_a_registered_toy_job(tmp_path):
    from mcicl.app import registry
    from mcicl.app.cli import main
    from mcicl.core.jobs import CsvTable, Job, ReportSection

    job = Job(command="toyreport", help="toy", description="toy", execute="tests.test_report:_never",
              report=ReportSection("Toy world section", "What the toy job measured.",
                                   csv_tables=(CsvTable("toy.csv", "Toy rows", "One row per toy."),)))
    run = RunFolder.create(tmp_path / "toy", "toyreport")
    run.write_summary({"toy_value": 0.25})
    run.write_csv("toy.csv", [{"toy": "a", "n": 1}])
    out = tmp_path / "r"
    registry.register(job)
    try:
        assert main(["report", str(run.path), "--out", str(out), "--quiet"]) == 0
    finally:
        registry.unregister("toyreport")
    text = (out / "report.html").read_text()
    assert "Toy world section (toy)" in text and "What the toy job measured." in text
    assert "Toy rows" in text and "One row per toy." in text and "toy_value" in text


def test_demo_stage_folders_follow_the_stage_order_handed_in(tmp_path):
    from mcicl.analysis.report import sections_from_run
    from mcicl.app.registry import report_catalog
    from mcicl.core.jobs import ReportCatalog

    demo = RunFolder.create(tmp_path / "demo", "demo")
    demo.write_summary({"stages": {"real geometry": {"layer": "3", "folder": "/x/y", "seconds": 1.0}}})
    # Folder names that sort the other way round: the order comes from the stages, not from the names.
    RunFolder.create(demo.path / "a_compare", "compare").write_summary({"spaces": ["s"]})
    RunFolder.create(demo.path / "b_geometry", "probe geometry").write_summary({"layer": "3"})
    RunFolder.create(demo.path / "report", "report").write_summary({"html": "x"})
    catalog = report_catalog()
    sections = sections_from_run(demo.path, catalog=catalog)
    assert [s.title for s in sections] == ["Demo overview (demo)", "Real model: concept geometry (b_geometry)",
                                           "Synthetic vs real: comparison, geometry-to-OOD map, matched world "
                                           "(a_compare)"]
    stages = next(t for t in sections[0].tables if t.title == "Stages")
    assert stages.rows == [{"stage": "real geometry", "seconds": 1.0, "headline": "layer=3"}]
    # Another order handed in reorders them.
    swapped = ReportCatalog(catalog.sections, {**catalog.demo_order, "compare": 1})
    assert [s.title.rsplit(" ", 1)[-1] for s in sections_from_run(demo.path, catalog=swapped)][1:] == \
        ["(a_compare)", "(b_geometry)"]


def _never(config, ctx):  # the toy job's entry point: the report test never runs it
    raise AssertionError("not run")
