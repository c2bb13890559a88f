"""``mcicl probe extract``: save word vectors of a model (per layer) for other tools.

:func:`execute` reads the words (a words file, or a concept set's words with their labels), extracts them
(:func:`probing.extract.extract_words`) and saves the :class:`~probing.extract.Extraction`: ``vectors/<layer>.npz``
(one LabelledVectors file per layer), ``vectors.npz`` (the last extracted layer), ``words.txt``, ``labels.csv``,
``layers.csv``, ``words.csv``, ``summary.json`` (with the words left out and why), ``config.yaml`` and the
overview figure. The config is :class:`~probing.extract_config.ExtractConfig`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mcicl.core.jobs import JobContext
from mcicl.core.textfiles import read_user_text
from mcicl.probing.datasets import load_concept_set
from mcicl.probing.extract import extract_words, load_for
from mcicl.probing.extract_config import ExtractConfig, refuse_ignored
from mcicl.probing.extract_figures import OVERVIEW_CAPTION, layer_stats, overview_figure  # noqa: F401 (public here)

log = logging.getLogger("mcicl")


def read_words_file(path: str | Path) -> list[str]:
    """Words of a text file, one per line (surrounding whitespace stripped; blank lines kept as empty words)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--words file not found: {path}")
    lines = read_user_text(path, "--words file").splitlines()  # UTF-8, a BOM dropped
    while lines and not lines[-1].strip():  # trailing blank lines are file endings, not words
        lines.pop()
    if not any(line.strip() for line in lines):
        raise ValueError(f"--words file {path} holds no words; accepted: a UTF-8 text file with one word per line")
    return [line.strip() for line in lines]


def words_from_concepts(spec: str, polysemy: str | None = None
                        ) -> tuple[list[str], list[tuple[str, str]], dict[str, Any]]:
    """(words to extract, (word, concept) label pairs, extra summary) from a concept-set spec (+ polysemy file)."""
    concept_set = load_concept_set(spec, polysemy=polysemy)
    words, labels = concept_set.words_and_labels()
    pairs = list(zip(words, labels, strict=True))
    labelled = {w for w, _ in pairs}
    for word, concept in concept_set.controls.items():
        if word not in labelled:
            pairs.append((word, concept))
            labelled.add(word)
    extra = [w for w in concept_set.polysemy if w not in labelled]  # unlabelled rows: senses are in the summary
    pairs += [(w, "") for w in extra]
    # A word listed under several concepts is extracted once and stored once per label.
    unique = list(dict.fromkeys(w for w, _ in pairs))
    return unique, pairs, {"concept_set": concept_set.name, "n_concepts": len(concept_set.concepts),
                           "polysemy": concept_set.polysemy, "controls": concept_set.controls}


def _where(field: str, sources: dict[str, str]) -> str:
    """'--config' for a value read from the config file, else 'the command line' (an option or --set)."""
    return "--config" if sources.get(field, "").startswith("config") else "the command line"


def execute(cfg: ExtractConfig, ctx: JobContext) -> int:
    """``mcicl probe extract``: check the word sources, load the model, open the run folder, extract, save, print."""
    words_file, concepts, polysemy_file = cfg.words, cfg.concepts, cfg.polysemy
    refuse_ignored(ctx.sources, cfg.extraction.space)
    if words_file and concepts:  # checked after merging: one may come from --config, the other from the CLI
        raise ValueError(f"words {words_file!r} (from {_where('words', ctx.sources)}) and concepts {concepts!r} "
                         f"(from {_where('concepts', ctx.sources)}): pass either --words FILE or --concepts SPEC, "
                         "not both")
    if polysemy_file and not concepts:
        raise ValueError("--polysemy FILE goes with --concepts (it names concepts of the set)")
    if not words_file and not concepts:
        raise ValueError("no words: pass --words FILE (one word per line) or --concepts builtin|wordnet|FILE")
    config = cfg.extraction
    if words_file:
        words = read_words_file(words_file)
        pairs, source = [(w, "") for w in dict.fromkeys(words)], {}
    else:
        words, pairs, source = words_from_concepts(concepts, polysemy_file)
    loaded = load_for(config)  # a missing model fails here, before any run folder is made
    folder = ctx.create_run(inputs={"--model": config.model, "--words": words_file, "--concepts": concepts,
                                    "--polysemy": polysemy_file, "--cache-dir": config.cache_dir})
    folder.save_config(cfg)
    start = time.perf_counter()
    extraction = extract_words(words, config, loaded=loaded)
    extraction.seconds = time.perf_counter() - start
    if not extraction.words:
        raise ValueError(f"model {config.model!r}: none of the {len(words)} words could be represented "
                         f"({ {k: len(v) for k, v in extraction.report.items() if v} }); accepted: words the "
                         "model's tokenizer can encode (does the model folder hold its tokenizer files?)")
    extraction.pairs, extraction.n_given, extraction.source = pairs, len(words), source
    extraction.save(folder)
    log.info("extracted %d words x %d layer(s) (%s space); left out: %s", len(extraction.words),
             len(extraction.layers), config.space, extraction.summary["dropped"])
    print(f"output is in {folder.path}")
    return 0
