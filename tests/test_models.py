"""Model resolution: the embedded default MiniLM, local folders, Hub ids."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from probing.models import ModelNotFoundError, load_model, resolve_model


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
    model, tok, ref = minilm
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
