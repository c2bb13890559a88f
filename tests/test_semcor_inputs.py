"""Inputs around SemCor: WiC files (TSV + gold, SuperGLUE JSONL), NLTK's XML rendering, datasets specs, plurals,
and the ICL probe with queries in real sentences (majority vs minority sense).

Each reader is checked on hand-written fixtures against values worked out by hand or another way (regular
expressions, numpy); the WiC AUC against a Mann-Whitney U computed by hand.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mcicl.probing import contextual
from mcicl.probing.contexts import ContextsError, SenseContext
from mcicl.probing.contextual import extract_contexts, prepare_contexts, sentence_chunks
from mcicl.probing.datasets import ConceptSet, ConceptSetError, hub, load_concept_set
from mcicl.probing.datasets.hub import parse_columns, parse_hub_spec
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.forward import padding_token_id, pool_vectors
from mcicl.probing.hf_contexts import load_dataset_contexts, to_dataset, vectors_dataset
from mcicl.probing.icl.episodes import EpisodeConfig
from mcicl.probing.icl.icl_config import IclConfig
from mcicl.probing.icl.run import icl_probe, majority_minority_difference, sense_frequency, sense_frequency_summary
from mcicl.probing.semcor import read_tagfile
from mcicl.probing.wic_input import WicFormatError, read_wic, wic_contexts, wic_pair_auc

# ------------------------------------------------------------------------------------------ WiC
WIC_TSV = ("bank\tN\t1-3\tThe bank was steep .\tShe opened three banks downtown .\n"
           "bank\tN\t0-1\tBanks lend money .\tThe bank refused the loan .\n"
           "play\tV\t2-0\tThey will play chess .\tPlayed well , he won .\n")
WIC_GOLD = "F\nT\nT\n"
# The same three items in SuperGLUE's JSONL (character offsets worked out by hand).
WIC_JSONL = [
    {"word": "bank", "sentence1": "The bank was steep .", "sentence2": "She opened three banks downtown .",
     "start1": 4, "end1": 8, "start2": 17, "end2": 22, "label": False, "idx": 0},
    {"word": "bank", "sentence1": "Banks lend money .", "sentence2": "The bank refused the loan .",
     "start1": 0, "end1": 5, "start2": 4, "end2": 8, "label": True, "idx": 1},
    {"word": "play", "sentence1": "They will play chess .", "sentence2": "Played well , he won .",
     "start1": 10, "end1": 14, "start2": 0, "end2": 6, "label": True, "idx": 2},
]


def test_wic_tsv_and_jsonl_read_the_same_pairs(tmp_path: Path) -> None:
    (tmp_path / "dev.data.txt").write_text(WIC_TSV)
    (tmp_path / "dev.gold.txt").write_text(WIC_GOLD)
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in WIC_JSONL) + "\n")
    tsv, jsonl = read_wic(tmp_path / "dev.data.txt"), read_wic(tmp_path / "val.jsonl")
    assert [p.label for p in tsv] == [p.label for p in jsonl] == [False, True, True]
    spans = [(p.first.context[p.first.start:p.first.end], p.second.context[p.second.start:p.second.end])
             for p in tsv]
    assert spans == [("bank", "banks"), ("Banks", "bank"), ("play", "Played")]
    for a, b in zip(tsv, jsonl, strict=True):
        assert (a.word, a.first.start, a.first.end, a.second.start, a.second.end) == (
            b.word, b.first.start, b.first.end, b.second.start, b.second.end)
    # The written form is the occurrence where it differs from the lemma (plural, capital, inflection).
    assert tsv[0].second.surface == "banks" and tsv[0].first.surface == ""
    # Without the gold file the pairs are unlabelled, and measuring them is refused.
    (tmp_path / "test.data.txt").write_text(WIC_TSV)
    assert all(p.label is None for p in read_wic(tmp_path / "test.data.txt"))
    with pytest.raises(WicFormatError, match="no labelled"):
        wic_contexts(read_wic(tmp_path / "test.data.txt"))


@pytest.mark.parametrize("text,gold,says", [
    ("bank\tN\t1-9\tThe bank .\tA bank .\n", "T\n", "line 1: indices '1-9'"),
    ("bank\tN\t1-1\tThe bank .\n", "T\n", "line 1: 4 tab-separated fields"),
    ("bank\tN\t1-1\tThe bank .\tA bank .\n", "yes\n", "label 'yes'"),
    ("bank\tN\t1-1\tThe bank .\tA bank .\n", "T\nF\n", "2 labels for the 1 lines"),
])
def test_wic_malformed_names_file_and_line(tmp_path: Path, text: str, gold: str, says: str) -> None:
    (tmp_path / "x.data.txt").write_text(text)
    (tmp_path / "x.gold.txt").write_text(gold)
    with pytest.raises(WicFormatError, match=re.escape(says)):
        read_wic(tmp_path / "x.data.txt")


def test_wic_auc_is_mann_whitney_over_all_pairs() -> None:
    rng = np.random.default_rng(0)
    words = ["a", "b", "c", "d", "e", "f", "g", "h"]
    from mcicl.probing.wic_input import WicPair
    pairs = [WicPair(words[k % 8], "N", SenseContext(words[k % 8], "", "x", 0), SenseContext(words[k % 8], "", "y", 0),
                     bool(k % 3)) for k in range(20)]
    _, P = wic_contexts(pairs)
    vectors = {"0": rng.normal(size=(40, 5))}
    row = wic_pair_auc(vectors, P, n_bootstrap=200)[0]
    v = vectors["0"] / np.linalg.norm(vectors["0"], axis=1, keepdims=True)
    cos = (v[0::2] * v[1::2]).sum(1)
    pos, neg = cos[[bool(k % 3) for k in range(20)]], cos[[not (k % 3) for k in range(20)]]
    by_hand = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert row["auc"] == pytest.approx(by_hand)
    assert row["n_words"] == 8 and row["n_positive"] == pos.size and row["ci_low"] <= row["auc"] <= row["ci_high"]


# ------------------------------------------------------------------------------------------ NLTK XML
PLAIN = """<contextfile concordance=brown>
<context filename=br-x01 paras=yes>
<p pnum=1>
<s snum=1>
<wf cmd=ignore pos=DT>The</wf>
<wf cmd=done pos=NN lemma=bank wnsn=1 lexsn=1:17:01::>banks</wf>
<wf cmd=done pos=VB lemma=rise wnsn=1 lexsn=2:38:00::>rose</wf>
<wf cmd=ignore pos=CC>&</wf>
<wf cmd=done rdf=group pos=NNP lemma=group wnsn=1 lexsn=1:03:00:: pn=group>Fulton_County_Grand_Jury</wf>
<wf cmd=done pos=NN lemma=bank wnsn=2;1 lexsn=1:14:00::;1:17:01::>bank</wf>
<punc>.</punc>
</s>
</p>
</context>
</contextfile>
"""


def _as_nltk_xml(plain: str) -> str:
    """The tag file as NLTK's XML rendering writes it: quoted attribute values, entities escaped."""
    def quote(m: re.Match) -> str:
        return re.sub(r'(\w+)=([^\s>]+)', r'\1="\2"', m.group(0))
    text = re.sub(r"<(?:wf|s|p|context|contextfile)\b[^>]*>", quote, plain)
    text = text.replace(">&<", ">&amp;<")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + text


def test_nltk_xml_rendering_reads_like_the_distribution(tmp_path: Path) -> None:
    (tmp_path / "br-x01").write_text(PLAIN)
    (tmp_path / "br-x01.xml").write_text(_as_nltk_xml(PLAIN))
    assert 'lemma="bank"' in (tmp_path / "br-x01.xml").read_text()
    plain, xml = read_tagfile(tmp_path / "br-x01"), read_tagfile(tmp_path / "br-x01.xml")
    assert [s.text for s in xml] == [s.text for s in plain] == ["The banks rose & Fulton County Grand Jury bank."]
    assert [(t.text, t.attrs) for t in xml[0].tokens] == [(t.text, t.attrs) for t in plain[0].tokens]
    raw = (tmp_path / "br-x01.xml").read_text()
    tokens = xml[0].tokens
    assert sum(t.tagged for t in tokens) == len(re.findall(r'<wf [^>]*lemma="[^"]*"[^>]*lexsn=', raw))
    assert sum(t.tagged and ";" in t.attrs["wnsn"] for t in tokens) == len(re.findall(r'wnsn="\d+;', raw))


# ------------------------------------------------------------------------------------------ plurals pooled
def test_written_form_is_pooled_over_its_own_tokens(minilm) -> None:
    tok = minilm.tokenizer
    text = "Two umbrellas stood there."
    pieces = tok.tokenize("umbrellas")
    assert len(pieces) >= 2 and len(tok.tokenize("umbrella")) < len(pieces)  # the plural adds a token
    lemma_only = SenseContext("umbrella", "noun.artifact", text, 4)
    written = SenseContext("umbrella", "noun.artifact", text, 4, surface="umbrellas")
    same_span = SenseContext("umbrellas", "noun.artifact", text, 4)
    a, b, c = prepare_contexts(tok, [lemma_only, written, same_span])
    assert b.positions == c.positions and len(b.positions) == len(pieces) > len(a.positions)
    ext = extract_contexts(minilm.model, tok, [written, same_span, lemma_only], layers=[6], show_progress=False)
    np.testing.assert_allclose(ext.vectors["6"][0], ext.vectors["6"][1], atol=1e-5)
    assert not np.allclose(ext.vectors["6"][0], ext.vectors["6"][2], atol=1e-3)


def test_occurrences_of_one_sentence_share_a_forward_pass_and_equal_single(minilm) -> None:
    text = "The bank by the river bank lent money to the plant."
    occ = [SenseContext("bank", "a", text, 4), SenseContext("bank", "b", text, 22),
           SenseContext("plant", "c", text, 45), SenseContext("river", "d", "A river.", 2)]
    together = extract_contexts(minilm.model, minilm.tokenizer, occ, layers="all", batch_size=2, show_progress=False)
    for k, c in enumerate(occ):
        alone = extract_contexts(minilm.model, minilm.tokenizer, [c], layers="all", show_progress=False)
        for layer in together.layers:
            np.testing.assert_allclose(together.vectors[layer][k], alone.vectors[layer][0], atol=2e-5)


POOL_SENTENCES = ["The bank by the river bank lent money to the plant.", "A plant grew.",
                  "Paper mills along the bank made paper for the bank's ledgers, and the plant hummed all night.",
                  "She read the paper under two umbrellas."]


def _occurrences(word_sentences: list[str]) -> list[SenseContext]:
    """Every occurrence of bank, plant, paper (one token each), ledgers and umbrellas (several) in the sentences."""
    return [SenseContext(m.group(0).lower(), "s", text, m.start()) for text in word_sentences
            for m in re.finditer(r"(?i)\b(bank|plant|paper|ledgers|umbrellas)\b", text)]


def _per_occurrence(lm, contexts: list[SenseContext]) -> dict[str, list[np.ndarray]]:
    """A straightforward loop: each occurrence's sentence run alone (no padding), its word tokens found from the
    offsets here, pooled by hand: layer -> [mean, last, every token] per occurrence."""
    tok = lm.tokenizer
    out: dict[str, list] = {}
    for c in contexts:
        enc = tok(c.context, return_offsets_mapping=True, return_tensors="pt")
        spans = enc.pop("offset_mapping")[0].tolist()
        positions = [t for t, (a, b) in enumerate(spans) if b > a and a < c.end and b > c.start]
        with torch.inference_mode():
            hidden = lm.model(**enc, output_hidden_states=True).hidden_states
        for layer, h in enumerate(hidden):
            rows = h[0, positions].numpy()
            out.setdefault(str(layer), []).append((rows.mean(0), rows[-1], rows))
    return out


def test_batched_pooling_equals_a_per_occurrence_loop(minilm) -> None:
    contexts = _occurrences(POOL_SENTENCES)
    assert len(contexts) == 12  # several per sentence, sentences of different lengths
    expected = _per_occurrence(minilm, contexts)
    ext = extract_contexts(minilm.model, minilm.tokenizer, contexts, layers="all", batch_size=3, show_progress=False)
    items = prepare_contexts(minilm.tokenizer, contexts)
    layers = list(range(7))
    pad = padding_token_id(minilm.tokenizer)
    last = pool_vectors(minilm.model, items, "hidden", layers, "last", 3, "right", pad, False)
    every = pool_vectors(minilm.model, items, "hidden", [0, 4, 6], "tokens", 2, "right", pad, False)
    bounds = np.cumsum([0] + [len(it.positions) for it in items])
    for layer, per in expected.items():
        for k, (mean, final, rows) in enumerate(per):
            np.testing.assert_allclose(ext.vectors[layer][k], mean, atol=2e-5, rtol=1e-5)
            np.testing.assert_allclose(last[layer][k], final, atol=2e-5, rtol=1e-5)
            if layer in every:
                np.testing.assert_allclose(every[layer][bounds[k]:bounds[k + 1]], rows, atol=2e-5, rtol=1e-5)
    assert ext.n_tokens == [len(p[2]) for p in expected["0"]] and max(ext.n_tokens) >= 2  # means of several tokens


def test_cache_chunks_keep_each_sentence_whole(minilm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 8 distinct sentences (batch 1): a sentence's occurrences never straddle two chunks, so each
    sentence has one forward pass; the cached vectors equal the uncached ones."""
    assert sentence_chunks(["a", "a", "b", "c", "c", "c", "d"], [5, 1, 0, 2, 3, 4, 6], 2) == [[5, 1, 0], [2, 3, 4, 6]]
    sentences = POOL_SENTENCES + [f"The {w} number {n} stood by the {w}." for n in range(5)
                                  for w in ("plant", "bank")]
    contexts = _occurrences(sentences)
    calls: list[list[tuple[int, ...]]] = []
    real = contextual.pool_vectors
    monkeypatch.setattr(contextual, "pool_vectors",
                        lambda model, part, *a, **k: calls.append([tuple(it.ids) for it in part]) or
                        real(model, part, *a, **k))
    cached = extract_contexts(minilm.model, minilm.tokenizer, contexts, layers="0,6", batch_size=1,
                              cache_dir=str(tmp_path), show_progress=False)
    assert [len(set(c)) for c in calls] == [8, 6]  # 14 distinct sentences
    assert sum(len(set(c)) for c in calls) == len({s for c in calls for s in c}) == len(sentences)
    plain = extract_contexts(minilm.model, minilm.tokenizer, contexts, layers="0,6", batch_size=4,
                             show_progress=False)
    for layer in ("0", "6"):
        np.testing.assert_allclose(cached.vectors[layer], plain.vectors[layer], atol=2e-5)


# ------------------------------------------------------------------------------------------ datasets specs
def test_concepts_and_contexts_from_datasets_with_columns(tmp_path: Path) -> None:
    import datasets

    rows = [("rock", "object"), ("hill", "object"), ("team", "group"), ("army", "group"), ("bank", "object"),
            ("bank", "group")]
    (tmp_path / "c.csv").write_text("lemma,label\n" + "".join(f"{w},{s}\n" for w, s in rows))
    cs = load_concept_set(f"dataset:{tmp_path / 'c.csv'}", columns="word=lemma,sense=label")
    assert cs.concepts == {"object": ["rock", "hill"], "group": ["team", "army"]}
    assert cs.polysemy == {"bank": ["object", "group"]}
    datasets.Dataset.from_dict({"word": [w for w, _ in rows], "concept": [s for _, s in rows]}).save_to_disk(
        str(tmp_path / "saved"))
    assert load_concept_set(f"dataset:{tmp_path / 'saved'}").polysemy == cs.polysemy
    with pytest.raises(ConceptSetError, match="lack \\['sense'\\]"):
        load_concept_set(f"dataset:{tmp_path / 'c.csv'}", columns="word=lemma")
    with pytest.raises(ConceptSetError, match="accepted: comma-separated"):
        parse_columns("word:lemma")
    # Contexts with their own column names; round trip (with a written form) through save_to_disk.
    (tmp_path / "x.jsonl").write_text(json.dumps({"lemma": "bank", "label": "object", "text": "The banks rose.",
                                                  "start": 4, "surface": "banks"}) + "\n")
    got = load_dataset_contexts(f"dataset:{tmp_path / 'x.jsonl'}", "word=lemma,sense=label,context=text")
    assert got.contexts == [SenseContext("bank", "object", "The banks rose.", 4, "", "banks")]
    to_dataset(got).save_to_disk(str(tmp_path / "ctx"))
    assert load_dataset_contexts(f"dataset:{tmp_path / 'ctx'}").contexts == got.contexts


def test_hub_spec_parsed_and_refused_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_hub_spec("hf:super_glue:wic@validation") == ("super_glue", "wic", "validation")
    assert parse_hub_spec("hf:user/set") == ("user/set", None, "train")
    with pytest.raises(ConceptSetError, match="hf:NAME"):
        parse_hub_spec("hf:name:@")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConceptSetError, match="cannot be reached \\(offline\\).*dataset:PATH"):
        load_concept_set("hf:someone/concepts")
    with pytest.raises(Exception, match="cannot be reached"):
        load_dataset_contexts("hf:someone/contexts@test")
    assert time.perf_counter() - start < 5  # refused at once, not after datasets' retries


def test_hub_spec_loads_through_datasets_with_name_config_split_and_columns(monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    """``hf:NAME[:CONFIG][@SPLIT]`` with the Hub stood in for: ``datasets.load_dataset`` returns a small in-memory
    Dataset; NAME, CONFIG and SPLIT reach it as parsed, columns are mapped by name, bad column names are refused."""
    import datasets

    calls: list[tuple] = []
    contexts_table = {"lemma": ["bank", "bank"], "label": ["noun.object", "noun.group"],
                      "text": ["The bank eroded.", "Two banks merged."], "start": [4, 4], "surface": ["", "banks"],
                      "extra": [1, 2]}
    concepts_table = {"word": ["rock", "hill", "team", "army", "bank", "bank"],
                      "concept": ["object", "object", "group", "group", "object", "group"]}

    def fake_load_dataset(name, config=None, *, split=None, **kwargs):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict(concepts_table if name.endswith("concepts") else contexts_table)

    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    got = load_dataset_contexts("hf:someone/ctx:wsd@validation", "word=lemma,sense=label,context=text")
    assert calls == [("someone/ctx", "wsd", "validation")]
    assert got.contexts == [SenseContext("bank", "noun.object", "The bank eroded.", 4),
                            SenseContext("bank", "noun.group", "Two banks merged.", 4, "", "banks")]
    assert got.name == "hf:someone/ctx:wsd@validation"
    # No CONFIG, no SPLIT: None and "train"; a concept set's "concept" column serves as its sense.
    cs = load_concept_set("hf:someone/concepts")
    assert calls[-1] == ("someone/concepts", None, "train")
    assert cs.concepts == {"object": ["rock", "hill"], "group": ["team", "army"]}
    assert cs.polysemy == {"bank": ["object", "group"]}
    load_dataset_contexts("hf:someone/ctx@test", {"word": "lemma", "sense": "label", "context": "text"})
    assert calls[-1] == ("someone/ctx", None, "test")
    # A mapping naming a column the dataset lacks: one error naming it and the columns there are.
    with pytest.raises(ContextsError, match=r"name \['lemmas'\], not among its columns \['lemma', 'label', 'text'"):
        load_dataset_contexts("hf:someone/ctx", "word=lemmas,sense=label,context=text")
    # Roles left unmapped whose default names are absent: one error naming the missing roles.
    with pytest.raises(ContextsError, match=r"lack \['sense', 'context'\].*--columns ROLE=COLUMN"):
        load_dataset_contexts("hf:someone/ctx", "word=lemma")
    with pytest.raises(ConceptSetError, match="cannot read 'sense'"):
        load_dataset_contexts("hf:someone/ctx", "word=lemma,sense")


def test_vectors_written_as_a_dataset_read_back(tmp_path: Path) -> None:
    import datasets

    ctx = [SenseContext("bank", "object", "The bank rose.", 4, "f:1"),
           SenseContext("bank", "group", "Two banks lent.", 4, "f:2", "banks")]
    vectors = {"0": np.arange(6, dtype=np.float32).reshape(2, 3), "6": -np.ones((2, 3), np.float32)}
    vectors_dataset(ctx, vectors, [1, 2]).save_to_disk(str(tmp_path / "v"))
    back = datasets.load_from_disk(str(tmp_path / "v")).with_format("numpy")
    np.testing.assert_array_equal(back["layer_0"], vectors["0"])
    np.testing.assert_array_equal(back["layer_6"], vectors["6"])
    assert list(back["surface"]) == ["", "banks"] and list(back["n_tokens"]) == [1, 2]


# ------------------------------------------------------------------------------------------ majority vs minority
def test_majority_minority_by_hand() -> None:
    freq = {"bank": {"object": 6, "group": 2}, "plant": {"plant": 3, "artifact": 3}}
    assert sense_frequency(freq, "bank", "object") == {"sense_frequency": "majority", "sense_share": 0.75}
    assert sense_frequency(freq, "bank", "group")["sense_frequency"] == "minority"
    assert sense_frequency(freq, "plant", "plant")["sense_frequency"] == "tied"
    rng = np.random.default_rng(1)
    rows = []
    for k in range(60):
        word = f"w{k % 6}"
        kind = "majority" if rng.random() < 0.6 else "minority"
        rows.append({"condition": "polysemous_in_context", "shots": 2, "query": word, "sense_frequency": kind,
                     "correct": int(rng.random() < (0.8 if kind == "majority" else 0.5)), "correct_b": 1})
    rows.append({**rows[0], "sense_frequency": "tied"})
    out = sense_frequency_summary(rows, ["b"], n_boot=300, seed=0)
    cell = out["polysemous_in_context"]["2"]
    maj = [r["correct"] for r in rows[:60] if r["sense_frequency"] == "majority"]
    mino = [r["correct"] for r in rows[:60] if r["sense_frequency"] == "minority"]
    assert cell["majority"]["mean"] == pytest.approx(np.mean(maj))
    assert cell["minority"]["mean"] == pytest.approx(np.mean(mino))
    assert cell["difference"]["mean"] == pytest.approx(np.mean(maj) - np.mean(mino))
    assert cell["difference"]["ci_low"] <= cell["difference"]["mean"] <= cell["difference"]["ci_high"]
    assert cell["majority"]["n_words"] == 6 and out["tied_left_out"] == 1
    assert out["baselines"]["b"]["polysemous_in_context"]["2"]["difference"]["mean"] == 0.0
    assert majority_minority_difference(rows[:60], n_boot=1)["n_words"] == 6


# ------------------------------------------------------------------------------------------ ICL on SemCor text
ICL_SEMCOR = """<contextfile concordance=brown>
<context filename=br-x02 paras=yes>
<p pnum=1>
""" + "".join(f"""<s snum={n}>
<wf cmd=ignore pos=DT>The</wf>
<wf cmd=done pos=NN lemma=bank wnsn={sn} lexsn={lex}>{form}</wf>
<wf cmd=ignore pos=VB>{verb}</wf>
<punc>.</punc>
</s>
""" for n, (sn, lex, form, verb) in enumerate([
    (1, "1:17:01::", "bank", "eroded"), (1, "1:17:01::", "bank", "flooded"), (1, "1:17:01::", "banks", "sloped"),
    (1, "1:17:01::", "bank", "crumbled"), (2, "1:14:00::", "bank", "lent"), (2, "1:14:00::", "banks", "merged")],
    start=1)) + "</p>\n</context>\n</contextfile>\n"


def test_icl_queries_in_semcor_sentences(tmp_path: Path, minilm) -> None:
    (tmp_path / "br-x02").write_text(ICL_SEMCOR)
    cs = ConceptSet("toy supersenses", {
        "noun.object": ["rock", "hill", "mountain", "stone"], "noun.group": ["team", "army", "club", "family"],
        "noun.animal": ["dog", "horse", "cat", "cow"], "noun.food": ["bread", "cheese", "apple", "soup"]},
        polysemy={"bank": ["noun.group", "noun.object"]})
    cfg = IclConfig(extraction=ExtractionConfig(model="default", layers="last", device="cpu"),
                    prompts=EpisodeConfig(shots=[2], episodes=6, queries_per_episode=2, conditions=[
                        "polysemous_in_context", "polysemous_in_context_zero_shot"]),
                    readout="in_prompt", contexts=f"semcor:{tmp_path / 'br-x02'}", tune_episodes=2,
                    bootstrap=100, permutations=100, betas=[1.0, 10.0])
    result = icl_probe(cfg, loaded=minilm, concept_set=cs)
    rows = [r for r in result.rows if r.get("query_context")]
    assert {r["condition"] for r in rows} == {"polysemous_in_context", "polysemous_in_context_zero_shot"}
    # Labels are the supersense names; each query is bank in one of the six real sentences, labelled by its tag.
    assert {r["gold"] for r in rows} <= {"object", "group"}
    assert all(r["gold"] == r["context_sense"].removeprefix("noun.") for r in rows)
    # object: 4 occurrences, group: 2 -> object is bank's majority sense.
    assert {r["sense_frequency"] for r in rows if r["context_sense"] == "noun.object"} == {"majority"}
    assert {r["sense_frequency"] for r in rows if r["context_sense"] == "noun.group"} == {"minority"}
    sf = result.summary["sense_frequency"]
    cell = sf["polysemous_in_context"]["2"]
    maj = [r["correct"] for r in rows if r["condition"] == "polysemous_in_context"
           and r["sense_frequency"] == "majority"]
    assert cell["majority"]["mean"] == pytest.approx(np.mean(maj))
    assert set(sf["baselines"]) == {"static_kernel", "random_weights"}
    assert result.summary["contexts_report"]["inflected_kept"] == 2
    assert "0" in result.summary["accuracy"]["polysemous_in_context_zero_shot"]
    assert "accuracy_vs_shots" in result.figures()
