"""The README's "What it finds" block and docs/findings.md are renders of the committed docs/findings.json, and
every number they state is one that docs/findings.json contains (the exempt list: sizes, levels, versions)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mcicl.analysis.findings import README_BEGIN, README_END, fmt, render_docs, render_readme_block

REPO = Path(__file__).resolve().parents[1]
FINDINGS = REPO / "docs" / "findings.json"
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
# Numbers findings prose may state that are not measurements: the interval level, the 80/20 skew, model names.
EXEMPT = {"95", "80", "20", "6", "2", "1", "0", "-1"}


def allowed_numbers(data) -> set[str]:
    """Every number docs/findings.json holds, as findings text writes it, and the numbers inside its strings."""
    out: set[str] = set()

    def walk(x) -> None:
        if isinstance(x, bool) or x is None:
            return
        if isinstance(x, int):
            out.add(str(x))
        elif isinstance(x, float):
            out.update({fmt(x), str(x)})
        elif isinstance(x, str):
            out.update(NUMBER.findall(x))
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(data)
    return out


def block(text: str) -> str:
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    return text[start:end]


def stated_numbers(text: str) -> set[str]:
    text = re.sub(r"`[^`]*`", " ", text)  # ids and commands (icl.x.16shots) are names, not statements
    return set(NUMBER.findall(text)) - EXEMPT


def test_readme_block_is_the_render_of_docs_findings_json():
    data = json.loads(FINDINGS.read_text())
    readme = (REPO / "README.md").read_text()
    assert block(readme) == render_readme_block(data), \
        "README's findings block differs from docs/findings.json: run `mcicl findings --readme`"
    assert (REPO / "docs" / "findings.md").read_text() == render_docs(data), \
        "docs/findings.md differs from docs/findings.json: run `mcicl findings --readme`"


def test_findings_prose_states_only_numbers_findings_json_contains():
    allowed = allowed_numbers(json.loads(FINDINGS.read_text()))
    for name, text in (("README block", block((REPO / "README.md").read_text())),
                       ("docs/findings.md", (REPO / "docs" / "findings.md").read_text())):
        unknown = sorted(stated_numbers(text) - allowed)
        assert not unknown, f"{name} states numbers docs/findings.json does not contain: {unknown[:20]}"


def test_number_check_catches_an_invented_number():
    data = {"findings": [{"value": 0.904, "interval": [0.88, 0.93]}]}
    assert stated_numbers("accuracy 0.904 [0.880, 0.930]") - allowed_numbers(data) == set()
    assert stated_numbers("accuracy 0.960 [0.910, 0.990]") - allowed_numbers(data) == {"0.960", "0.910", "0.990"}
