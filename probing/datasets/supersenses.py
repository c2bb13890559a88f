"""WordNet noun supersenses as concepts: the 26 noun lexicographer files (noun.Tops, noun.act, ... noun.time).

``--concepts supersenses`` (:func:`supersense_concepts`). A noun's supersenses are the lexicographer files
of all its WordNet 3.0 noun senses (the synsets holding a lemma of that exact name, any case). Only single
lowercase alphabetic lemmas are considered (no multiword expressions, no proper names written with a capital).

- **concept words** of a supersense: nouns all of whose senses lie in it (monosemous at this level) and that
  are tagged at least ``min_count`` times in WordNet's sense counts (cntlist, counted in SemCor and the other
  tagged texts), the ``max_words`` most frequent of them (ties by name);
- **polysemous words**: nouns with senses in two or more supersenses (every sense counted), with those
  supersenses as their inventory;
- **controls**: held out of the concept lists, the ``n_controls`` most frequent nouns with exactly one WordNet
  noun sense, taken round robin over the supersenses while each list keeps ``min_words`` words.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.datasets.wordnet import LEXNAMES, wordnet_reader

SUPERSENSES = ("noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute", "noun.body",
               "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
               "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
               "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
               "noun.substance", "noun.time")


def _tag_counts(wn: Any) -> dict[str, int]:
    """Sense key -> tagged count, read once from the reader's cntlist.rev (``key sense_number count`` lines)."""
    out: dict[str, int] = {}
    try:
        with wn.open("cntlist.rev") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[2].isdigit():
                    out[parts[0]] = int(parts[2])
    except OSError:  # a reader without sense counts: every count is 0
        pass
    return out


def noun_senses(wn: Any) -> dict[str, tuple[list[str], int, int]]:
    """word -> (its noun senses' lexicographer files, total tagged count, number of noun senses), for single
    alphabetic nouns written in lowercase in at least one synset (read from data.noun directly: fast)."""
    counts = _tag_counts(wn)
    lexnames = {int(n): name for n, name, _ in (line.split() for line in LEXNAMES.read_text().splitlines()
                                                  if line.strip())}
    files: dict[str, list[str]] = {}
    tagged: dict[str, int] = {}
    n_senses: dict[str, int] = {}
    lowercase: set[str] = set()
    with wn.open("data.noun") as fh:
        for line in fh:
            if line.startswith(" "):
                continue  # the license header
            fields = line.split(" ", 4 + 2 * 255)
            lexfile = int(fields[1])
            lexname = lexnames[lexfile]
            for k in range(int(fields[3], 16)):
                # A name also written with a capital elsewhere (Turkey / turkey) has its senses there too.
                name, lex_id = fields[4 + 2 * k], int(fields[5 + 2 * k], 16)
                low = name.lower()
                if not (low.isalpha() and low.isascii()):
                    continue
                if lexname not in files.setdefault(low, []):
                    files[low].append(lexname)
                n_senses[low] = n_senses.get(low, 0) + 1
                tagged[low] = tagged.get(low, 0) + counts.get(f"{low}%1:{lexfile:02d}:{lex_id:02d}::", 0)
                if name == low:
                    lowercase.add(low)
    return {w: (files[w], tagged[w], n_senses[w]) for w in files if w in lowercase}


@functools.lru_cache(maxsize=4)
def _build(min_count: int, max_words: int, n_controls: int, min_words: int, source: str | None) -> ConceptSet:
    wn = wordnet_reader(source)
    senses = noun_senses(wn)
    ranked = sorted(senses, key=lambda w: (-senses[w][1], w))
    lists: dict[str, list[str]] = {s: [] for s in SUPERSENSES}
    polysemy: dict[str, list[str]] = {}
    for word in ranked:
        files, count, _ = senses[word]
        if len(files) >= 2:
            polysemy[word] = sorted(files)
        elif count >= min_count and files[0] in lists:
            lists[files[0]].append(word)
    lists = {s: ws[:max_words] for s, ws in lists.items()}
    # Controls: one WordNet noun sense, most frequent first, round robin over the supersenses.
    pools = {s: [w for w in ws if senses[w][2] == 1] for s, ws in lists.items()}
    controls: dict[str, str] = {}
    while len(controls) < n_controls and any(pools.values()):
        for s in SUPERSENSES:
            if len(controls) >= n_controls or not pools[s]:
                continue
            word = pools[s].pop(0)
            if len(lists[s]) - 1 >= min_words:
                lists[s].remove(word)
                controls[word] = s
    lists = {s: ws for s, ws in lists.items() if len(ws) >= min_words}
    polysemy = {w: [s for s in ss if s in lists] for w, ss in polysemy.items()}
    polysemy = {w: ss for w, ss in polysemy.items() if len(ss) >= 2}
    return ConceptSet("supersenses", lists, polysemy, {w: s for w, s in controls.items() if s in lists},
                      min_words=min_words)


def supersense_concepts(*, min_count: int = 1, max_words: int = 100, n_controls: int = 52, min_words: int = 2,
                        source: str | Path | None = None) -> ConceptSet:
    """The 26 noun supersenses as a ConceptSet (module doc): concept words, polysemous words, controls."""
    for name, value, low in (("min_count", min_count, 0), ("max_words", max_words, 2), ("n_controls", n_controls, 0),
                             ("min_words", min_words, 2)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r}: accepted values are integers >= {low}")
    cs = _build(min_count, max_words, n_controls, min_words, None if source is None else str(source))
    return ConceptSet(cs.name, {c: list(ws) for c, ws in cs.concepts.items()},
                      {w: list(s) for w, s in cs.polysemy.items()}, dict(cs.controls), min_words=cs.min_words)
