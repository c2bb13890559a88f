"""Concept datasets: the curated built-in set, WordNet sets (Park et al. 2024), user files, HF datasets.

Every loader returns a :class:`probing.concepts.ConceptSet`. ``load_concept_set`` is the one entry point the
commands use for ``--concepts builtin|wordnet|FILE`` and ``--polysemy FILE``.
"""

from __future__ import annotations

from pathlib import Path

from mcicl.probing.datasets.builtin import builtin_concepts, proper_noun_concepts
from mcicl.probing.datasets.concepts import ConceptSet, ConceptSetError
from mcicl.probing.datasets.files import ConceptFileError, from_hf_dataset, load_concept_file, load_polysemy
from mcicl.probing.datasets.hub import DATASET_PREFIXES, load_dataset_concepts
from mcicl.probing.datasets.sets import descendants, extension, polysemous_task_pairs, vocabulary_problems
from mcicl.probing.datasets.supersenses import supersense_concepts
from mcicl.probing.datasets.wordnet import WordNetNotFoundError, single_token_vocab, wordnet_concepts, wordnet_reader

__all__ = [
    "DATASET_PREFIXES", "ConceptFileError", "ConceptSet", "ConceptSetError", "WordNetNotFoundError",
    "builtin_concepts", "descendants",
    "extension", "from_hf_dataset", "load_concept_file", "load_concept_set", "load_dataset_concepts", "load_polysemy",
    "polysemous_task_pairs", "proper_noun_concepts", "single_token_vocab", "supersense_concepts", "vocabulary_problems",
    "wordnet_concepts", "wordnet_reader",
]

NAMED_SETS = ("builtin", "wordnet", "supersenses")


def load_concept_set(spec: str | Path | ConceptSet = "builtin", *, polysemy: str | Path | None = None,
                     columns: str | None = None) -> ConceptSet:
    """The ConceptSet named by ``spec`` ('builtin', 'wordnet', 'supersenses', a JSON/CSV file, a dataset
    ``dataset:PATH`` / ``hf:NAME[:CONFIG][@SPLIT]`` with columns mapped by ``columns``, or a ConceptSet), plus
    polysemy.

    ``polysemy`` is a JSON file ``{"word": ["concept_a", "concept_b"]}`` merged over the set's own inventory.
    """
    if isinstance(spec, ConceptSet):
        cs = spec
    elif str(spec) == "builtin":
        cs = builtin_concepts()
    elif str(spec) == "wordnet":
        cs = wordnet_concepts()
    elif str(spec) == "supersenses":
        cs = supersense_concepts()
    elif str(spec).startswith(DATASET_PREFIXES):
        cs = load_dataset_concepts(str(spec), columns)
    else:
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"concepts={str(spec)!r}: not a named set or dataset and no such file; "
                                    "accepted: builtin, wordnet, supersenses, or a .json/.csv file (or a dataset: "
                                    "dataset:PATH, hf:NAME[:CONFIG][@SPLIT])")
        cs = load_concept_file(path)
    if polysemy is not None:
        cs = load_polysemy(polysemy, cs)
    return cs
