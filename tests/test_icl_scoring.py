"""Causal-LM label scoring: the cached scorer equals one full forward per option; padding changes nothing.

The models are tiny, built from a config with RANDOM WEIGHTS (probing.tiny): mechanics only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcicl.probing.icl.scoring import (
    LabelTokenizationError,
    ScoringPrompt,
    score_cached,
    score_naive,
    score_prompts,
    tokenize_prompts,
)
from mcicl.probing.models import load_model
from mcicl.probing.tiny import build_tiny_model

DEMOS_A = "dog -> animal\nhammer -> tool\ncat -> animal\nsaw -> tool\n"
DEMOS_B = "red -> A\napple -> B\n"
PROMPTS = [
    ScoringPrompt(DEMOS_A, "lion ->", (" animal", " tool", " foo bar")),
    ScoringPrompt(DEMOS_A, "drill ->", (" animal", " tool", " foo bar")),
    ScoringPrompt(DEMOS_B, "blue ->", (" A", " B")),
    ScoringPrompt(DEMOS_A + DEMOS_B, "horse ->", (" A", " B", " animal")),
    ScoringPrompt("", "tiger ->", (" animal", " tool")),  # zero-shot: no prefix
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny_lm(request, tmp_path_factory):
    """A tiny random-weight causal LM whose weights are scaled up so its log-probs are far from uniform."""


    folder = build_tiny_model(request.param, tmp_path_factory.mktemp(f"tiny-{request.param}"), seed=3)
    loaded = load_model(folder)
    model, tokenizer = loaded.model, loaded.tokenizer
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:  # sharper logits make a wrong position or mask show up as a large difference
                p.add_(torch.randn(p.shape, generator=gen) * 0.15)
    return model, tokenizer


def test_cached_scores_equal_naive_scores(tiny_lm):
    model, tokenizer = tiny_lm
    tokenized = tokenize_prompts(tokenizer, PROMPTS)
    assert any(len(o) > 1 for tp in tokenized for o in tp.options), "a multi-token label must be covered"
    naive = score_naive(model, tokenizer, PROMPTS)
    cached = score_cached(model, tokenizer, PROMPTS, batch_size=3)  # prefixes of different lengths share a batch
    for n, c in zip(naive, cached, strict=True):
        np.testing.assert_allclose(c, n, atol=1e-4, rtol=0)
    spread = np.concatenate([n - n.mean() for n in naive])
    assert np.abs(spread).max() > 0.05, "options must score differently, or equality proves nothing"


def test_batched_equals_single(tiny_lm):
    model, tokenizer = tiny_lm
    batched = score_cached(model, tokenizer, PROMPTS, batch_size=16)
    for prompt, b in zip(PROMPTS, batched, strict=True):
        alone = score_cached(model, tokenizer, [prompt], batch_size=1)[0]
        np.testing.assert_allclose(b, alone, atol=1e-5, rtol=0)


def test_label_that_tokenizes_to_nothing_is_an_error(tiny_lm):
    _, tokenizer = tiny_lm
    with pytest.raises(LabelTokenizationError, match="adds no token of its own"):
        tokenize_prompts(tokenizer, [ScoringPrompt(DEMOS_A, "lion ->", (" animal", ""))])


def test_whole_string_tokens_and_lead_tokens(tiny_lm):
    """Scored ids are the whole string's tokenization; a label that merges with the query's last characters
    makes the other labels carry the cut-off query token as a lead (read, not scored): still cached == naive."""
    model, tokenizer = tiny_lm
    prompts = [ScoringPrompt(DEMOS_A, "lion -", (">", "> animal", " tool")), *PROMPTS]
    tokenized = tokenize_prompts(tokenizer, prompts)
    for p, tp in zip(prompts, tokenized, strict=True):
        for j, option in enumerate(p.options):
            context, scored = tp.sequence(j)
            whole = tokenizer(p.prefix + p.query + option)["input_ids"]
            assert list(context + scored) == whole
            assert tokenizer.decode(list(scored)).endswith(option.strip())
    assert any(tp.leads[j] for tp in tokenized for j in range(len(tp.options))), "a lead must be covered"
    naive = score_naive(model, tokenizer, prompts)
    cached = score_cached(model, tokenizer, prompts, batch_size=2)
    for n, c in zip(naive, cached, strict=True):
        np.testing.assert_allclose(c, n, atol=1e-4, rtol=0)


def test_score_prompts_records_its_method(tiny_lm):
    model, tokenizer = tiny_lm
    auto = score_prompts(model, tokenizer, PROMPTS)
    assert auto.method == "cached" and auto.requested == "auto" and auto.check["max_abs_difference"] < 1e-4
    naive = score_prompts(model, tokenizer, PROMPTS, method="naive")
    assert naive.method == "naive" and naive.record()["reason"] == "requested"
    for a, n in zip(auto.scores, naive.scores, strict=True):
        np.testing.assert_allclose(a, n, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="unknown scoring method 'fast'; accepted: 'auto', 'cached', 'naive'"):
        score_prompts(model, tokenizer, PROMPTS, method="fast")
