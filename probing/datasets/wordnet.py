"""WordNet concept sets: noun-hierarchy concepts in the manner of Park et al. (2024), polysemy from lexnames.

The reader is NLTK's. NLTK's own data (``python -m nltk.downloader wordnet``) is used when found; otherwise
Debian's ``wordnet-base`` files in ``/usr/share/wordnet`` (``apt-get install wordnet-base``), which lack the
``lexnames`` file NLTK needs: we copy them once into a reader root under the mcicl cache
(``$MCICL_CACHE``, default ``~/.cache/mcicl``) next to our ``lexnames`` (data/lexnames.txt, lexnames(5WN)).
NLTK only opens files under its data path, so that root's ``nltk_data`` folder is added to ``nltk.data.path``.

A concept is a noun synset; its words are the single-word lemmas of the synset and of every synset below
it (hyponym and, by default, instance-hyponym closure) that pass the ``vocab`` predicate, as in Park et al.;
synsets with at least ``min_words`` such words are kept, and each kept synset's parent is its nearest kept
ancestor. A word is polysemous when its frequent noun senses fall in two or more lexicographer files
(noun.animal, noun.artifact, ...) and map to two or more kept concepts not nested in each other.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import nltk
from nltk.corpus import wordnet
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from mcicl.probing.datasets.concepts import ConceptSet

log = logging.getLogger("mcicl")

DEBIAN_WORDNET = Path("/usr/share/wordnet")
LEXNAMES = Path(__file__).with_name("data") / "lexnames.txt"
# The files NLTK's WordNetCorpusReader opens (cntlist.rev gives the sense counts, Lemma.count()).
_WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv", "index.noun", "index.verb", "index.adj",
                  "index.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc", "cntlist.rev")
INSTALL_HINT = ("WordNet not found: install Debian's files with `apt-get install wordnet-base` (they go to "
                "/usr/share/wordnet) or NLTK's with `python -m nltk.downloader wordnet`")


class WordNetNotFoundError(LookupError):
    """Neither NLTK's WordNet data nor Debian's wordnet-base files were found."""


def cache_dir() -> Path:
    """The mcicl cache folder: $MCICL_CACHE, else $XDG_CACHE_HOME/mcicl, else ~/.cache/mcicl."""
    if os.environ.get("MCICL_CACHE"):
        return Path(os.environ["MCICL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "mcicl"


def _nltk_own_wordnet() -> Any | None:

    ours = cache_dir().resolve()
    for resource in ("corpora/wordnet", "corpora/wordnet.zip"):
        try:
            found = nltk.data.find(resource)
        except LookupError:
            continue
        if Path(str(getattr(found, "path", found))).resolve().is_relative_to(ours):
            continue  # our own copy of Debian's files, found because we put it on NLTK's path: not NLTK's

        wordnet.ensure_loaded()
        return wordnet
    return None


def _prepare_root(source: Path) -> Path:
    """A reader root holding copies of the WordNet files in ``source`` plus lexnames; built once, atomically."""
    missing = [f for f in _WORDNET_FILES if not (source / f).is_file()]
    if missing:
        raise WordNetNotFoundError(f"{source} lacks WordNet file(s) {missing}. {INSTALL_HINT}")
    root = cache_dir() / "nltk_data" / "corpora" / "wordnet"
    if not (root / "lexnames").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=root.parent))
        for name in _WORDNET_FILES:
            # Copies, not symlinks: NLTK refuses files that resolve outside its data path.
            shutil.copyfile(source / name, tmp / name)
        shutil.copyfile(LEXNAMES, tmp / "lexnames")
        try:
            tmp.rename(root)  # atomic: a root either is complete or does not exist
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("WordNet reader root prepared in %s from %s", root, source)
    return root


def wordnet_reader(source: str | Path | None = None) -> Any:
    """NLTK's WordNet reader (cached per process): NLTK's own data if found, else Debian's wordnet-base files.

    ``source`` forces a folder holding WordNet 3.0 database files (data.noun, index.noun, ...); without it,
    ``$MCICL_WORDNET_DIR`` or /usr/share/wordnet is used when NLTK has no WordNet of its own.
    """
    return _reader(None if source is None else str(Path(source).expanduser().resolve()))


@functools.lru_cache(maxsize=4)
def _reader(source: str | None) -> Any:

    if source is None:
        own = _nltk_own_wordnet()
        if own is not None:
            return own
        source = os.environ.get("MCICL_WORDNET_DIR") or DEBIAN_WORDNET
        if not (Path(source) / "data.noun").is_file():
            raise WordNetNotFoundError(f"{INSTALL_HINT} (looked in NLTK's data path and {source})")
    source = Path(source)
    if not (source / "data.noun").is_file():
        raise WordNetNotFoundError(f"{source} holds no WordNet database (data.noun). {INSTALL_HINT}")
    root = source if (source / "lexnames").is_file() else _prepare_root(source)
    # NLTK opens only files under its data path; allow the folder above corpora/ (or the root itself).
    allowed = str(root.parent.parent) if root.parent.name == "corpora" else str(root)
    if allowed not in nltk.data.path:
        nltk.data.path.append(allowed)
    class _Reader(WordNetCorpusReader):
        # NLTK maps synsets from its own downloaded "wordnet" to the loaded version (for OMW, when reading
        # WordNet 3.1 and the like); that needs NLTK's download. These files are WordNet 3.0 and English only.
        def map_wn(self, version: str = "wordnet") -> None:
            return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": we use English only
        return _Reader(str(root), None)


def single_token_vocab(tokenizer: Any) -> Callable[[str], bool]:
    """A ``vocab`` predicate: True for words the tokenizer encodes as one token (alone or after a space)."""
    def keep(word: str) -> bool:
        return len(tokenizer.tokenize(word)) == 1 or len(tokenizer.tokenize(" " + word)) == 1
    return keep


def _vocab_predicate(vocab: Callable[[str], bool] | Collection[str] | None) -> Callable[[str], bool]:
    if vocab is None:
        return lambda w: True
    if callable(vocab):
        return vocab
    return set(vocab).__contains__


def wordnet_concepts(*, root: str = "entity.n.01", min_words: int = 50,
                     vocab: Callable[[str], bool] | Collection[str] | None = None, include_instances: bool = True,
                     max_depth: int | None = None, min_sense_count: int = 1, n_controls: int = 50,
                     source: str | Path | None = None) -> ConceptSet:
    """Concepts = noun synsets below ``root`` with >= ``min_words`` in-vocabulary single-word lemmas (Park et al.).

    - ``vocab``: a predicate or a collection; only words it accepts count (e.g. ``single_token_vocab(tok)``).
    - ``include_instances``: also follow instance hyponyms (France under country, Mercury under planet).
    - ``max_depth``: ignore synsets deeper than this below ``root``.
    - ``min_sense_count``: a word's noun sense is used when it is the word's first (most frequent) sense or
      has at least this many tagged occurrences (WordNet's cntlist), so rare senses (dog: "a dull unattractive
      person") neither place a word in a concept nor make it polysemous. 0 uses every sense.
    - ``n_controls``: up to this many monosemous words (one noun sense in all WordNet) are held out as
      controls, taken round-robin over their most specific concepts while each keeps ``min_words`` words.

    Concept names are synset names (``mammal.n.01``); lists are nested (a word is in every concept above its
    senses), parents link each kept synset to its nearest kept ancestor; polysemous words (module doc) are
    removed from the lists and listed in ``polysemy`` with their most specific concept per sense.
    """
    if not isinstance(min_words, int) or min_words < 2:
        raise ValueError(f"min_words={min_words!r}: accepted values are integers >= 2")
    wn = wordnet_reader(source)
    try:
        top = wn.synset(root)
    except Exception as err:  # NLTK raises WordNetError (a plain Exception) for unknown names
        raise ValueError(f"root={root!r}: not a WordNet synset name (e.g. 'entity.n.01', 'animal.n.01'): "
                         f"{err}") from None
    keep_word = _vocab_predicate(vocab)

    # Breadth-first over the DAG below root; the first-found parent gives a tree for the hierarchy.
    depth: dict[Any, int] = {top: 0}
    tree_parent: dict[Any, Any] = {}
    order = [top]
    for s in order:
        if max_depth is not None and depth[s] >= max_depth:
            continue
        for c in s.hyponyms() + (s.instance_hyponyms() if include_instances else []):
            if c not in depth:
                depth[c], tree_parent[c] = depth[s] + 1, s
                order.append(c)

    @functools.cache
    def ancestors(s: Any) -> frozenset:
        # s and every synset above it (all hypernym paths) that lies below root.
        out = {s}
        for u in s.hypernyms() + s.instance_hypernyms():
            if u in depth:
                out |= ancestors(u)
        return frozenset(out)

    # Candidate words: single alphabetic lemmas in the subtree that pass vocab, keyed case-insensitively.
    forms: dict[str, str] = {}
    for s in order:
        for lemma in s.lemmas():
            name = lemma.name()
            if name.isalpha() and name.isascii() and name.lower() not in forms and keep_word(name):
                forms[name.lower()] = name
    senses: dict[str, list[Any]] = {}
    for key in list(forms):
        lemmas = [lem for lem in wn.lemmas(key, pos="n") if lem.name().lower() == key]
        used = [lem.synset() for i, lem in enumerate(lemmas)
                if i == 0 or min_sense_count <= 0 or lem.count() >= min_sense_count]
        used = [s for s in used if s in depth]
        if used:
            # The word as usually written is the lemma name of its most frequent sense (turkey, not Turkey).
            forms[key] = lemmas[0].name() if keep_word(lemmas[0].name()) else forms[key]
            senses[key] = used
    members: dict[Any, set[str]] = {}
    for key, syns in senses.items():
        for s in syns:
            for a in ancestors(s):
                members.setdefault(a, set()).add(key)

    kept_set = {s for s in order if len(members.get(s, ())) >= min_words}

    def kept_parent(s: Any) -> Any | None:
        p = tree_parent.get(s)
        while p is not None and p not in kept_set:
            p = tree_parent.get(p)
        return p

    # A synset with the same words as a kept child adds nothing (a chain of single children): drop it.
    redundant = set()
    for s in kept_set:
        p = kept_parent(s)
        if p is not None and members[p] == members[s]:
            redundant.add(p)
    kept = [s for s in order if s in kept_set and s not in redundant]
    kept_set = set(kept)
    if not kept:
        raise ValueError(f"no synset below {root!r} has {min_words} in-vocabulary words; lower min_words or "
                         f"widen vocab")

    def most_specific(s: Any, allowed: set | None = None) -> Any | None:
        cands = [a for a in ancestors(s) if a in (kept_set if allowed is None else allowed)]
        return max(cands, key=lambda a: (depth[a], a.name())) if cands else None

    def sense_concepts(syns: list[Any], allowed: set) -> list[Any]:
        # The most specific allowed concept of each sense, when the senses span >= 2 lexicographer files and
        # >= 2 concepts not nested in each other (an ancestor of another target is dropped); else [].
        targets: dict[Any, set[str]] = {}
        for s in syns:
            t = most_specific(s, allowed)
            if t is not None:
                targets.setdefault(t, set()).add(s.lexname())
        specific = [t for t in targets if not any(o is not t and t in ancestors(o) for o in targets)]
        lexnames = set().union(*(targets[t] for t in specific)) if specific else set()
        return specific if len(specific) >= 2 and len(lexnames) >= 2 else []

    poly_keys = {k for k, syns in senses.items()
                 if len({s.lexname() for s in syns}) >= 2 and sense_concepts(syns, kept_set)}
    lists = {s.name(): sorted(forms[k] for k in members[s] if k not in poly_keys) for s in kept}
    controls = _pick_controls(wn, senses, forms, poly_keys, lists, most_specific, min_words, n_controls)
    held_out = set(controls)
    lists = {c: [w for w in ws if w not in held_out] for c, ws in lists.items()}
    # Removing polysemous words and controls can leave a concept short: drop it, then map senses and
    # controls onto the concepts that remain.
    lists = {c: ws for c, ws in lists.items() if len(ws) >= min_words}
    survivors = {s for s in kept if s.name() in lists}
    parents: dict[str, str] = {}
    for s in survivors:
        p = kept_parent(s)
        while p is not None and p not in survivors:
            p = kept_parent(p)
        if p is not None:
            parents[s.name()] = p.name()
    polysemy = {}
    for key in sorted(poly_keys):
        targets = sense_concepts(senses[key], survivors)
        if targets:
            polysemy[forms[key]] = [t.name() for t in targets]
    controls = {w: c for w, c in controls.items() if c in lists}
    log.info("WordNet below %s: %d concepts, %d polysemous words, %d controls (min_words=%d)", root, len(lists),
             len(polysemy), len(controls), min_words)
    return ConceptSet(f"wordnet:{root}", lists, polysemy, controls, parents, min_words=min_words)


def _pick_controls(wn: Any, senses: dict[str, list[Any]], forms: dict[str, str], poly_keys: set[str],
                   lists: dict[str, list[str]], most_specific: Callable[[Any], Any], min_words: int,
                   n_controls: int) -> dict[str, str]:
    # Controls: words with exactly one noun sense in all of WordNet, spread over concepts (round robin over
    # the most specific concepts), held out of the lists while each list keeps min_words words.
    by_concept: dict[str, list[str]] = {}
    for key in sorted(senses):
        if key in poly_keys or len(senses[key]) != 1 or len(wn.synsets(key, pos="n")) != 1:
            continue
        target = most_specific(senses[key][0])
        if target is not None:
            by_concept.setdefault(target.name(), []).append(forms[key])
    removed: Counter[str] = Counter()
    controls: dict[str, str] = {}
    while len(controls) < n_controls and any(by_concept.values()):
        for concept, words in by_concept.items():
            if len(controls) >= n_controls or not words:
                continue
            word = words.pop(0)
            if len(lists[concept]) - removed[concept] - 1 >= min_words:
                controls[word] = concept
                removed[concept] += 1
    return controls
