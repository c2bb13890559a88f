"""Model resolution: the embedded default MiniLM, local folders, Hub ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    Gemma3Config,
    GPT2Config,
    LlamaConfig,
    LlavaConfig,
    RobertaConfig,
    T5Config,
    T5ForConditionalGeneration,
)

from mcicl.probing.extract import ExtractionConfig, extract, load_for
from mcicl.probing.icl.scoring import ScoringPrompt, score_prompts
from mcicl.probing.models import (
    ModelNotFoundError,
    ModelRef,
    check_loadable,
    is_causal_config,
    is_causal_model,
    load_model,
    resolve_model,
)
from mcicl.probing.placement import resolve_device
from mcicl.probing.tiny import build_tiny_model, is_random_weights


def test_default_resolves_to_a_real_loadable_minilm(default_model_dir):
    ref = resolve_model("default")
    assert ref.source == "default" and ref.location == str(default_model_dir)
    model = AutoModel.from_pretrained(ref.location)
    tok = AutoTokenizer.from_pretrained(ref.location)
    assert model.config.model_type == "bert" and model.config.hidden_size == 384
    with torch.no_grad():
        out = model(**tok(["a bat flew"], return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 384
    assert torch.isfinite(out.last_hidden_state).all()


def test_load_model_default_is_an_encoder(minilm):
    model, ref = minilm.model, minilm.ref
    assert not model.training and ref.source == "default"
    assert type(model).__name__ == "BertModel"


def test_local_folder_and_errors(tmp_path, default_model_dir):
    assert resolve_model(str(default_model_dir)).source == "local"
    with pytest.raises(ModelNotFoundError, match=r"'./no/such/model' does not exist"):
        resolve_model("./no/such/model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(empty))
    with pytest.raises(ModelNotFoundError, match="neither 'default'"):
        resolve_model("not a model!")


def test_unreachable_hub_id_suggests_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = resolve_model("EleutherAI/pythia-160m")
    assert ref.source == "hub"
    with pytest.raises(ModelNotFoundError, match=r"HF_HUB_OFFLINE.*model='./that-folder'"):
        load_model(ref)


def test_is_causal_model_and_random_weights_marker(minilm, tmp_path):


    folder = build_tiny_model("gpt2", tmp_path / "gpt2", hidden=32, layers=1, heads=2)
    loaded = load_model(str(folder))
    gpt2, ref = loaded.model, loaded.ref
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8))
    assert is_causal_model(gpt2) and not is_causal_model(minilm.model)
    t5.config.is_decoder = True  # an encoder-decoder is never causal, whatever its config flags say
    assert not is_causal_model(t5)
    assert is_random_weights(ref.location) and is_random_weights(folder)
    assert not is_random_weights(minilm.ref.location) and not is_random_weights(None) and not is_random_weights("")


@pytest.mark.parametrize("config,archs,causal", [
    (Gemma3Config, ["Gemma3ForConditionalGeneration"], True),  # a causal LM head over a text decoder
    (LlamaConfig, ["LlamaForCausalLM"], True),
    (LlamaConfig, None, True),  # no architectures: a model type with a causal LM and no masked LM
    (GPT2Config, ["GPT2LMHeadModel"], True),
    (BertConfig, ["BertForMaskedLM"], False),
    (RobertaConfig, None, False),  # has RobertaForCausalLM, but is an encoder family
    (T5Config, ["T5WithLMHeadModel"], False),  # ends with LMHeadModel, but an encoder-decoder
    (LlavaConfig, ["LlavaForConditionalGeneration"], False),
])
def test_is_causal_config_from_what_the_checkpoint_can_do(config, archs, causal):
    assert is_causal_config(config(architectures=archs)) is causal


def test_multimodal_decoder_that_is_not_a_causal_lm_is_refused():
    ref = ModelRef("some/llava", "some/llava", "hub")
    with pytest.raises(ValueError, match=r"LlavaForConditionalGeneration \(a llama text decoder.*text-only"):
        check_loadable(LlavaConfig(architectures=["LlavaForConditionalGeneration"]), ref)
    check_loadable(Gemma3Config(architectures=["Gemma3ForConditionalGeneration"]), ref)  # loads: no error


def test_balanced_device_map_on_cpu_equals_a_plain_load(tmp_path, monkeypatch):
    """--device balanced (device_map='auto', accelerate) on a machine without GPU: same vectors and scores."""
    folder = build_tiny_model("gpt2", tmp_path / "gpt2", hidden=32, layers=2, heads=2)
    assert resolve_device("balanced") == ("cpu", "auto")
    seen = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return original(cls, *args, **kwargs)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    balanced = load_for(ExtractionConfig(model=str(folder), device="balanced"))
    monkeypatch.undo()
    plain = load_model(str(folder))
    assert seen == ["auto"] and balanced.model.device.type == "cpu"
    words = ["dog", "hippopotamus", "New York"]
    a = extract(balanced.model, balanced.tokenizer, words, show_progress=False)
    b = extract(plain.model, plain.tokenizer, words, show_progress=False)
    for name in a.layers:
        np.testing.assert_array_equal(a.vectors[name], b.vectors[name])
    prompts = [ScoringPrompt("dog -> animal\nsaw -> tool\n", "cat ->", (" animal", " tool"))]
    np.testing.assert_allclose(score_prompts(balanced.model, balanced.tokenizer, prompts).scores[0],
                               score_prompts(plain.model, plain.tokenizer, prompts).scores[0], atol=1e-6)
