"""The compatibility matrix (tests/compat_matrix.py): every family gives correct numbers or a clear refusal.

Tiny models with RANDOM WEIGHTS, built from configs, each with its family's tokenizer built offline: mechanics
only (tokenization, padding, position schemes, class choice), never model quality.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mcicl.probing.extract import extract, input_scale
from mcicl.probing.icl.scoring import cached_unsupported, score_prompts
from mcicl.probing.models import load_model
from tests.compat_matrix import BY_NAME, FAMILIES, PROMPTS, REAL_MINILM, WINDOW, build_family, check_family

TOL_EXTRACT = 1e-5
TOL_SCORE = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Family name -> saved folder, built on first use."""
    root = tmp_path_factory.mktemp("compat")
    built: dict[str, object] = {}

    def get(name: str):
        if name not in built:
            built[name] = build_family(BY_NAME[name], root / name)
        return built[name]
    return get


@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_family(family, folders):
    r = check_family(family, folders(family.name))
    # class choice: causal from what the checkpoint can do; auto readout follows it
    assert r["causal"] is family.causal, r
    assert r["readout"] == ("lm" if family.causal else "in_prompt")
    # extraction: batched (all layers, padded) == a bare unpadded forward per word
    assert r["extract_diff"] < TOL_EXTRACT, r
    assert r["words_kept"] == ["dog", "2024", "Zürich", "New York", "hippopotamus", "lion"]
    # pooled tokens decode to exactly the word, and no lone space token is among them
    assert r["own_tokens"], r
    if family.causal:
        assert r["unembed"]
        assert r["tokens_are_whole_string"] and r["scored_text_is_prompt"], r
        assert r["score_auto_vs_naive"] < TOL_SCORE and r["score_naive_vs_whole"] < TOL_SCORE, r
        if any(k in family.positions for k in ("ALiBi", "sliding")):
            # the control: the packed cache is wrong (or crashes) here, so auto must not use it
            assert r["cached_unsupported"] and r["scoring_method"] == "naive", r
            forced = r["forced_cached_vs_naive"]
            assert isinstance(forced, str) or forced > 1e-2, r
        else:
            assert r["cached_unsupported"] is None and r["scoring_method"] == "cached", r


def test_real_minilm_with_its_real_tokenizer(default_model_dir):
    """The one real tokenizer file and real weights reachable offline: the default MiniLM (BERT WordPiece)."""
    r = check_family(REAL_MINILM, default_model_dir)
    assert r["readout"] == "in_prompt" and not r["causal"] and r["input_scale"] == 1.0
    assert r["extract_diff"] < TOL_EXTRACT and r["own_tokens"], r
    assert r["words_kept"] == ["dog", "2024", "Zürich", "New York", "hippopotamus", "lion"]


def test_piecewise_tokenization_would_fail_the_whole_string_check(folders):
    """Control for the whole-string check: Llama-2 style pieces decode with a second dummy-prefix space."""
    loaded = load_model(folders("llama2"))
    tok = loaded.tokenizer
    p = PROMPTS[0]
    pieces = tok(p.prefix)["input_ids"] + tok(p.query, add_special_tokens=False)["input_ids"] + \
        tok(p.options[0], add_special_tokens=False)["input_ids"]
    assert tok.decode(pieces, skip_special_tokens=True) != p.prefix + p.query + p.options[0]


def test_sliding_window_model_uses_cached_when_prompts_fit_the_window(folders):
    loaded = load_model(folders("mistral"))
    assert cached_unsupported(loaded.model, WINDOW) is None
    assert "sliding attention window of 16" in cached_unsupported(loaded.model, WINDOW + 1)
    short = [type(PROMPTS[3])("", "dog ->", (" A", " B"))]
    result = score_prompts(loaded.model, loaded.tokenizer, short)
    assert result.method == "cached" and result.check["max_abs_difference"] < TOL_SCORE
    with pytest.raises(ValueError, match="scoring 'cached' is not exact for MistralForCausalLM: sliding"):
        score_prompts(loaded.model, loaded.tokenizer, PROMPTS, method="cached")


def test_gemma_input_space_is_what_the_first_layer_reads(folders):
    """Gemma scales embedding rows by sqrt(hidden_size); the input space and its meta say so."""
    for name in ("gemma2", "gemma3"):
        loaded = load_model(folders(name))
        model, tok = loaded.model, loaded.tokenizer
        assert math.isclose(input_scale(model), math.sqrt(32), rel_tol=1e-6)
        ex = extract(model, tok, ["lion"], space="input", pooling="last", show_progress=False)
        ids = tok("lion")["input_ids"]
        row = model.get_input_embeddings().weight[ids[-1]].detach().numpy()
        np.testing.assert_allclose(ex.vectors["input"][0], row * math.sqrt(32), rtol=1e-5, atol=1e-6)
        assert ex.meta["input_scale"] == pytest.approx(math.sqrt(32))
        with torch.no_grad():  # and it is the embedding output the model's own hidden state 0 starts from
            h0 = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[0][0, -1]
        np.testing.assert_allclose(ex.vectors["input"][0], h0.numpy(), rtol=1e-5, atol=1e-5)


def test_t5_classes(folders):
    """T5WithLMHeadModel configs load (as T5ForConditionalGeneration, with unembedding rows); T5EncoderModel
    checkpoints load as the encoder alone (no random decoder)."""
    legacy = load_model(folders("t5_legacy_name"))
    assert type(legacy.model).__name__ == "T5ForConditionalGeneration" and not legacy.causal
    ex = extract(legacy.model, legacy.tokenizer, ["dog"], space="unembed", show_progress=False)
    assert ex.vectors["unembed"].shape == (1, 32)
    encoder = load_model(folders("t5_encoder"))
    assert type(encoder.model).__name__ == "T5EncoderModel"
    with pytest.raises(ValueError, match="no LM head"):
        extract(encoder.model, encoder.tokenizer, ["dog"], space="unembed", show_progress=False)
