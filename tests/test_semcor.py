"""SemCor 3.0 reader, sentence rebuilding, supersense labelling and the WiC-style pair AUC.

Counts are checked against regular expressions over the raw file; rebuilt sentences against hand-written
text; the pair AUC against a Mann-Whitney U computed by hand with numpy. The real data (../shared/data/semcor3.0)
is optional: those tests skip when it is absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.semcor import (
    SKIP_REASONS,
    SemcorFormatError,
    read_semcor,
    read_tagfile,
    rebuild,
    semcor_contexts,
    tag_files,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ rebuilding
# (tokens as SemCor writes them, the sentence written by hand)
REBUILT = [
    ("( He left ) .", "(He left)."),
    ("It cost $ 100 .", "It cost $100."),
    ("About 15 % of them", "About 15% of them"),
    ("I do n't know , I 'll see .", "I don't know, I'll see."),
    ("`` Yes '' , he said .", '"Yes", he said.'),
    ("Why ? No ! Stop ; go : now .", "Why? No! Stop; go: now."),
    ("the [ West_Berlin ] line", "the [West Berlin] line"),
    ("the taxpayers ' pockets", "the taxpayers' pockets"),
    ("one - two", "one - two"),
    ("`` Go '' !", '"Go"!'),
    ("the boy 's dog", "the boy's dog"),
    ("They 're here , are n't they ?", "They're here, aren't they?"),
    ("New_York_City is big .", "New York City is big."),
    ("A & B", "A & B"),
]
# Real sentences of br-a01 (snum -> text written by hand from the tag file).
REAL_A01 = {
    10: 'It urged that the city "take steps to remedy" this problem.',
    11: "Implementation of Georgia's automobile title law was also recommended by the outgoing jury.",
    13: "The grand jury took a swipe at the State Welfare Department's handling of federal funds granted for "
        "child welfare services in foster homes.",
    23: "On other matters, the jury recommended that:",
    29: "The couple was married Aug. 2, 1913.",
    30: "They have a son, William Berry Jr., and a daughter, Mrs. J. M. Cheshire of Griffin.",
    33: "It listed his wife's age as 74 and place of birth as Opelika, Ala..",
}


@pytest.mark.parametrize("tokens,expected", REBUILT)
def test_rebuild_spacing(tokens: str, expected: str) -> None:
    text, spans = rebuild(tokens.split())
    assert text == expected
    # Each token's span holds the token as displayed (quotes as ", multiword parts spaced).
    for tok, (a, b) in zip(tokens.split(), spans, strict=True):
        assert text[a:b].replace(" ", "") == tok.replace("_", "").replace("``", '"').replace("''", '"')


def test_real_sentences_rebuilt(semcor_root: Path) -> None:
    sentences = {s.snum: s for s in read_tagfile(semcor_root / "brown1" / "tagfiles" / "br-a01")}
    for snum, text in REAL_A01.items():
        assert sentences[snum].text == text


def test_counts_match_regular_expressions(semcor_root: Path) -> None:
    path = semcor_root / "brown1" / "tagfiles" / "br-a01"
    raw = path.read_text(encoding="ascii")
    sentences = read_tagfile(path)
    tokens = [t for s in sentences for t in s.tokens]
    assert len(sentences) == len(re.findall(r"^<s snum=\d+>$", raw, flags=re.M))
    assert sum(not t.punc for t in tokens) == len(re.findall(r"^<wf ", raw, flags=re.M))
    assert sum(t.punc for t in tokens) == len(re.findall(r"^<punc>", raw, flags=re.M))
    assert sum(t.tagged for t in tokens) == len(re.findall(r"^<wf [^>]*lemma=[^>]*lexsn=", raw, flags=re.M))
    assert sum(t.tagged and ";" in t.attrs["wnsn"] for t in tokens) == len(re.findall(r"wnsn=\d+;", raw))
    assert sum(t.tagged and t.attrs["wnsn"] == "0" for t in tokens) == len(re.findall(r"wnsn=0[ >]", raw))
    assert len(tag_files(semcor_root)) == len(list((semcor_root / "brown1" / "tagfiles").iterdir()))


# ------------------------------------------------------------------------------------------ malformed input
GOOD = """<contextfile concordance=brown>
<context filename=t1 paras=yes>
<p pnum=1>
<s snum=1>
<wf cmd=ignore pos=DT>The</wf>
<wf cmd=done pos=NN lemma=bank wnsn=1 lexsn=1:17:01::>bank</wf>
<wf cmd=done pos=VB lemma=rise wnsn=1 lexsn=2:38:00::>rose</wf>
<punc>.</punc>
</s>
<s snum=2>
<wf cmd=done pos=NN lemma=bank wnsn=2;1 lexsn=1:14:00::;1:17:01::>bank</wf>
<wf cmd=done pos=NN lemma=bank wnsn=0 lexsn=1:06:00::>bank</wf>
<wf cmd=done pos=NN lemma=bank wnsn=3 lexsn=1:14:00::>bank</wf>
<wf cmd=done pos=NN lemma=bank wnsn=1 lexsn=1:17:01::>banks</wf>
<wf cmd=done pos=NN lemma=river_bank wnsn=1 lexsn=1:17:00::>river_bank</wf>
<wf cmd=done pos=NN lemma=cat wnsn=1 lexsn=1:05:00::>cat</wf>
<wf cmd=done pos=NN lemma=bank wnsn=3 lexsn=1:14:00::>Bank</wf>
<wf cmd=done pos=NN lemma=bank wnsn=1 lexsn=1:17:01::>bank</wf>
<wf cmd=done pos=NN lemma=bank wnsn=1;2 lexsn=1:17:01::;1:17:02::>bank</wf>
<wf cmd=done pos=NN lemma=bank wnsn=4 lexsn=1:14:99::>bank</wf>
</s>
</p>
</context>
</contextfile>
"""


@pytest.mark.parametrize("old,new,line,says", [
    ("<s snum=2>", "<s snum=two>", 10, "<s snum=N>"),
    ("</s>\n<s snum=2>", "<s snum=2>", 9, "opens inside sentence 1"),
    ("wnsn=2;1 lexsn", "wnsn=2 lexsn", 11, "do not pair up"),
    ("<punc>.</punc>", "<punc>.", 8, "<punc>.</punc>"),
    ("<wf cmd=ignore pos=DT>The</wf>", "<wf cmd=ignore pos=DT>The", 5, "cannot read"),
    ("<wf cmd=ignore pos=DT>The</wf>", "<foo>The</foo>", 5, "unknown line"),
    ("lexsn=2:38:00::", "lexsn=2:38", 7, "lex_filenum"),
    ("TRUNCATE", "", 10, "sentence 2 is never closed"),
])
def test_malformed_file_names_file_and_line(tmp_path: Path, old: str, new: str, line: int, says: str) -> None:
    text = "\n".join(GOOD.splitlines()[:20]) if old == "TRUNCATE" else GOOD.replace(old, new, 1)
    path = tmp_path / "br-x01"
    path.write_text(text)
    with pytest.raises(SemcorFormatError) as err:
        read_tagfile(path)
    assert f"{path}: line {line}:" in str(err.value) and says in str(err.value)


# ------------------------------------------------------------------------------------------ labelling
class _Synset:
    def __init__(self, name: str, lexname: str) -> None:
        self._name, self._lexname = name, lexname

    def name(self) -> str:
        return self._name

    def lexname(self) -> str:
        return self._lexname

    def closure(self, _f: object) -> list:
        return []


class _Lemma:
    def __init__(self, key: str, synset: _Synset) -> None:
        self._key, self._synset = key, synset

    def key(self) -> str:
        return self._key

    def synset(self) -> _Synset:
        return self._synset


class _FakeWordNet:
    """Sense keys of bank (object, group, a second object sense), cat (animal); 1:14:99:: is unknown."""

    KEYS = {"bank%1:17:01::": ("bank.n.01", "noun.object"), "bank%1:14:00::": ("bank.n.02", "noun.group"),
            "bank%1:17:02::": ("bank.n.03", "noun.object"), "cat%1:05:00::": ("cat.n.01", "noun.animal")}

    def lemmas(self, name: str) -> list[_Lemma]:
        return [_Lemma(k, _Synset(*v)) for k, v in self.KEYS.items() if k.startswith(name + "%")]


def test_labelling_counts_every_tagged_noun(tmp_path: Path) -> None:
    path = tmp_path / "br-x01"
    path.write_text(GOOD)
    cs = ConceptSet("toy", {"noun.object": ["rock", "hill"], "noun.group": ["team", "army"],
                            "noun.animal": ["dog", "horse"]},
                    polysemy={"bank": ["noun.group", "noun.object"]}, controls={"cat": "noun.animal"})
    ctx = semcor_contexts(read_semcor(path), cs, _FakeWordNet(), min_per_sense=1)
    rep = ctx.report
    assert (rep.sentences, rep.words, rep.punctuation, rep.tagged, rep.tagged_nouns) == (2, 13, 1, 12, 11)
    # bank 2;1 spans group and object: ambiguous; wnsn=0: dropped; 1:14:99:: unknown; river_bank: multiword.
    # Kept: cat, Bank (group), banks (object: the plural, kept with its written form), bank (object, sentence 2),
    # bank 1;2 (both object), bank 1.
    assert dict(rep.skipped) == {"ambiguous_tag": 1, "dropped_sense": 1, "unknown_key": 1, "multiword": 1}
    assert rep.kept == len(ctx) == 7 and rep.kept + sum(rep.skipped.values()) == rep.tagged_nouns
    assert set(rep.skipped) <= set(SKIP_REASONS)
    assert ctx.counts() == {("bank", "noun.object"): 4, ("bank", "noun.group"): 2, ("cat", "noun.animal"): 1}
    assert rep.inflected_found == rep.inflected_kept == 1
    plural = [c for c in ctx.contexts if c.surface]
    assert [(c.word, c.surface, c.context[c.start:c.end]) for c in plural] == [("bank", "banks", "banks")]
    for c in ctx.contexts:  # the span is the word (or its written form), in the rebuilt sentence
        assert c.context[c.start:c.end].lower() == (c.surface or c.word).lower()
    first = next(c for c in ctx.contexts if c.source == "br-x01:6")
    assert first.context == "The bank rose." and first.start == 4 and first.source == "br-x01:6"
    # The cap keeps max_per_sense per (word, sense), seeded; too few for min_per_sense are skipped, counted.
    capped = semcor_contexts(read_semcor(path), cs, _FakeWordNet(), min_per_sense=2, max_per_sense=2, seed=3)
    assert capped.counts() == {("bank", "noun.object"): 2, ("bank", "noun.group"): 2}
    assert capped.report.skipped["over_cap"] == 2 and capped.report.skipped["short_sense"] == 1
    again = semcor_contexts(read_semcor(path), cs, _FakeWordNet(), min_per_sense=2, max_per_sense=2, seed=3)
    assert [c.source for c in again.contexts] == [c.source for c in capped.contexts]
    # A polysemous word left with one sense is skipped, counted.
    one = semcor_contexts(read_semcor(path), cs, _FakeWordNet(), min_per_sense=3)
    assert one.report.skipped["one_sense_left"] == 4 and len(one) == 0


# ------------------------------------------------------------------------------------------ WiC-style pair AUC
def _mann_whitney_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """U / (n_pos n_neg) by brute force over every (positive, negative) pair, ties 1/2."""
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def test_pair_auc_equals_mann_whitney_by_hand() -> None:
    from mcicl.analysis.engine.wic import make_pairs, pair_auc, pair_cosines, weighted_auc

    rng = np.random.default_rng(0)
    words = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 3          # d: one sense only (no negative pair)
    labels = ["x", "x", "y", "y", "y", "x", "y", "y", "z", "p", "q", "p", "s", "s", "s"]
    vectors = rng.normal(size=(len(words), 6))
    pairs = make_pairs(words, labels)
    assert pairs.i.size == 10 + 6 + 3 + 3 and np.all(pairs.i < pairs.j)
    scores = pair_cosines(vectors, pairs)
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    pos, neg = [], []
    for i in range(len(words)):
        for j in range(i + 1, len(words)):
            if words[i] == words[j] and words[i] != "d":
                (pos if labels[i] == labels[j] else neg).append(float(v[i] @ v[j]))
    res = pair_auc(scores, pairs, n_bootstrap=200, seed=1)
    assert res.auc == pytest.approx(_mann_whitney_auc(np.array(pos), np.array(neg)))
    assert (res.n_words, res.n_positive, res.n_negative) == (3, len(pos), len(neg))
    # Ties count 1/2 (rounded scores), and integer weights equal repeating pairs.
    x = np.round(rng.normal(size=40), 1)
    y = rng.random(40) < 0.4
    assert weighted_auc(x, y, np.ones(40)) == pytest.approx(_mann_whitney_auc(x[y], x[~y]))
    w = rng.integers(0, 3, 40)
    rep = np.repeat(np.arange(40), w)
    assert weighted_auc(x, y, w.astype(float)) == pytest.approx(_mann_whitney_auc(x[rep][y[rep]], x[rep][~y[rep]]))
    # The cluster bootstrap resamples words: recompute one draw by hand from the same generator.
    informative = np.array([0, 1, 2])                               # a, b, c (d has no negative pair)
    draws = np.random.default_rng(1).choice(informative, size=(200, 3), replace=True)
    first = draws[0]
    keep = np.concatenate([np.flatnonzero(pairs.word == w) for w in first])
    by_hand = _mann_whitney_auc(scores[keep][pairs.same[keep]], scores[keep][~pairs.same[keep]])
    mult = np.bincount(first, minlength=4)[pairs.word].astype(float)
    assert weighted_auc(scores, pairs.same, mult) == pytest.approx(by_hand)
    assert res.ci_low <= res.auc <= res.ci_high


def test_pair_auc_separates_constructed_senses() -> None:
    from mcicl.analysis.engine.wic import make_pairs, pair_auc, pair_cosines

    rng = np.random.default_rng(2)
    words, labels, rows = [], [], []
    for w in range(8):
        centres = rng.normal(size=(2, 16))
        for k in range(6):
            words.append(f"w{w}")
            labels.append(f"s{k % 2}")
            rows.append(centres[k % 2] + 0.1 * rng.normal(size=16))
    pairs = make_pairs(words, labels)
    assert pair_auc(pair_cosines(np.array(rows), pairs), pairs, n_bootstrap=100).auc == 1.0
    noise = rng.normal(size=(len(words), 16))
    res = pair_auc(pair_cosines(noise, pairs), pairs, n_bootstrap=300)
    assert res.ci_low < 0.5 < res.ci_high


# ------------------------------------------------------------------------------------------ datasets round trip
def test_contexts_round_trip_through_datasets(tmp_path: Path) -> None:
    from mcicl.probing.contexts import builtin_contexts
    from mcicl.probing.datasets.hub import read_dataset
    from mcicl.probing.hf_contexts import from_dataset, load_dataset_contexts, to_dataset

    ctx = builtin_contexts()
    ctx = type(ctx)(ctx.name, ctx.contexts[:40])
    to_dataset(ctx).save_to_disk(str(tmp_path / "saved"))
    back = load_dataset_contexts(f"dataset:{tmp_path / 'saved'}")
    assert back.contexts == ctx.contexts
    to_dataset(ctx).to_parquet(str(tmp_path / "c.parquet"))
    assert from_dataset(read_dataset(f"dataset:{tmp_path / 'c.parquet'}"), "p").contexts == ctx.contexts
    # Columns by name, start optional (the first whole-word occurrence), other columns ignored.
    (tmp_path / "c.csv").write_text("note,sense,word,context\nx,animal,bat,The [bat] flew.\n")
    got = load_dataset_contexts(f"dataset:{tmp_path / 'c.csv'}").contexts[0]
    assert (got.word, got.sense, got.context, got.start) == ("bat", "animal", "The bat flew.", 4)
    (tmp_path / "bad.csv").write_text("word,context\nbat,The bat.\n")
    with pytest.raises(Exception, match="lack \\['sense'\\]"):
        load_dataset_contexts(f"dataset:{tmp_path / 'bad.csv'}")


def test_semcor_result_saves_tables_and_figures(tmp_path: Path) -> None:
    from mcicl.core.runs import RunFolder
    from mcicl.probing.semcor_config import SemcorConfig
    from mcicl.probing.semcor_job import SemcorResult

    counts = [{"word": "bank", "sense": "noun.object", "found": 14, "kept": 5, "share": 0.74, "word_total": 19},
              {"word": "bank", "sense": "noun.group", "found": 5, "kept": 5, "share": 0.26, "word_total": 19}]
    acc = [{"model": m, "group": "polysemous", "layer": str(k), "stat": s, "value": 0.6, "ci_low": 0.5,
            "ci_high": 0.7, "null": 0.5, "p_value": 0.01, "n_words": 3}
           for m in ("trained", "random") for k in range(3) for s in ("in_context", "out_of_context")]
    pairs = [{"model": m, "label": lab, "layer": str(k), "auc": 0.6 + 0.01 * k, "ci_low": 0.55, "ci_high": 0.65,
              "per_word_mean": 0.6, "n_words": 3, "n_positive": 10, "n_negative": 8}
             for m in ("trained", "random") for lab in ("supersense", "synset") for k in range(3)]
    res = SemcorResult(SemcorConfig(), {"kept": 10}, counts, acc, pairs,
                       {"source": "toy", "n_polysemous_words": 1, "n_contexts": 10})
    run = RunFolder.create(tmp_path / "run", "probe semcor")
    res.save(run)
    assert {"sense_counts.csv", "sense_accuracy.csv", "pair_auc.csv", "summary.json"} <= {
        p.name for p in run.path.iterdir()}
    assert res.summary["pair_auc_best_layer"]["layer"] == "2"
    assert {p.stem for p in run.figures.glob("*.png")} == {"sense_counts", "semcor_layers"}
