"""The built-in curated concept set: 40 categories of monosemous common words, 69 polysemous words, controls.

Data lives in ``data/concepts.json`` (categories, hierarchy, proper-noun categories), ``data/polysemy.json``
(word -> sense concepts) and ``data/controls.json`` (held-out monosemous word -> concept).
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

from mcicl.probing.datasets.concepts import ConceptSet

DATA = Path(__file__).with_name("data")


@functools.lru_cache(maxsize=1)
def _raw() -> dict:
    concepts = json.loads((DATA / "concepts.json").read_text(encoding="utf-8"))
    concepts["polysemy"] = json.loads((DATA / "polysemy.json").read_text(encoding="utf-8"))
    concepts["controls"] = json.loads((DATA / "controls.json").read_text(encoding="utf-8"))
    return concepts


def proper_noun_concepts() -> list[str]:
    """The built-in categories whose words are proper nouns written with a capital (countries, cities, ...)."""
    return list(_raw()["proper_noun_concepts"])


def builtin_concepts() -> ConceptSet:
    """The curated set: >= 30 categories of >= 15 monosemous words, polysemy inventory, controls, parents."""
    raw = copy.deepcopy(_raw())
    return ConceptSet(raw["name"], raw["concepts"], raw["polysemy"], raw["controls"], raw["parents"])
