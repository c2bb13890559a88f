"""Model resolution: the embedded default MiniLM, local folders, Hub ids."""

from __future__ import annotations

import pytest
import torch
from mcicl.probing.models import ModelNotFoundError, is_causal_model, load_model, resolve_model
from mcicl.probing.tiny import build_tiny_model, is_random_weights
from transformers import AutoModel, AutoTokenizer, T5Config, T5ForConditionalGeneration


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
    with pytest.raises(ModelNotFoundError, match=r"HF_HUB_OFFLINE.*--model ./that-folder"):
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
