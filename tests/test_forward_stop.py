"""Stop after the last layer needed, and ``batch_size="auto"``: both equal the plain full forward pass.

The tiny causal LMs have random weights (mechanics only: hooks, padding side, position ids).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcicl.probing import forward
from mcicl.probing.extract import extract, prepare_words
from mcicl.probing.forward import AutoBatch, n_hidden_layers, pool_vectors, transformer_blocks
from mcicl.probing.memory import DoesNotFitError, estimate_from_config
from mcicl.probing.models import load_model
from mcicl.probing.tiny import build_tiny_model

WORDS = ["dog", "cat", "hammer", "bicycle", "antidisestablishment", "banana split", "x", "crane"]


@pytest.fixture(scope="module")
def tiny_causal(tmp_path_factory):
    """Random-weight tiny GPT-2 and Llama (left padding, explicit position ids), 3 layers each."""
    root = tmp_path_factory.mktemp("stop")
    return {arch: load_model(str(build_tiny_model(arch, root / arch, layers=3, hidden=32, heads=4)))
            for arch in ("gpt2", "llama")}


def _blocks_run(model, fn):
    """How many times each transformer block ran during ``fn()``."""
    blocks = transformer_blocks(model)
    calls = [0] * len(blocks)
    handles = [b.register_forward_hook(lambda m, a, o, j=j: calls.__setitem__(j, calls[j] + 1))
               for j, b in enumerate(blocks)]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return calls


def _check_every_layer(loaded, pooling="mean"):
    model, tok = loaded.model, loaded.tokenizer
    n = n_hidden_layers(model)
    full = extract(model, tok, WORDS, layers="all", pooling=pooling, batch_size=3, show_progress=False)
    for k in range(n + 1):
        holder = {}
        calls = _blocks_run(model, lambda k=k, holder=holder: holder.setdefault("x", extract(
            model, tok, WORDS, layers=[k], pooling=pooling, batch_size=3, show_progress=False)))
        np.testing.assert_array_equal(holder["x"].vectors[str(k)], full.vectors[str(k)])
        # blocks past k never ran (the first batch's two-row check runs the full pass once)
        assert all(c <= 1 for c in calls[k + 1:]) if k < n else all(c >= 3 for c in calls), (k, calls)
        assert all(c >= 3 for c in calls[:k]), (k, calls)
    assert not model._forward_pre_hooks and not any(b._forward_pre_hooks for b in transformer_blocks(model))


@pytest.mark.usefixtures("one_torch_thread")
def test_stop_after_layer_equals_full_pass_minilm(minilm):
    _check_every_layer(minilm)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_stop_after_layer_equals_full_pass_causal(tiny_causal, arch):
    _check_every_layer(tiny_causal[arch], pooling="last")


def test_stop_falls_back_when_hidden_states_are_not_block_inputs(minilm, monkeypatch, caplog):
    """A model whose hidden states differ from its blocks' inputs is caught on the first batch: full pass."""
    model, tok = minilm.model, minilm.tokenizer
    _, items, _ = prepare_words(tok, WORDS)
    full = pool_vectors(model, items, "hidden", [1], "mean", 4, "right", 0, False, truncate=False)
    real = forward.stop_after

    def shifted(blocks, upto):  # records the input of the block after: a model of another shape
        return real(blocks[1:], upto)

    monkeypatch.setattr(forward, "stop_after", shifted)
    out = pool_vectors(model, items, "hidden", [1], "mean", 4, "right", 0, False)
    assert "full forward pass" in caplog.text
    np.testing.assert_array_equal(out["1"], full["1"])


@pytest.mark.usefixtures("one_torch_thread")
def test_auto_batch_halves_on_out_of_memory_and_keeps_the_size(minilm, monkeypatch):
    """A simulated CUDA out-of-memory error above 3 rows: auto halves 8 -> 4 -> 2, equals a fixed batch size,
    and the next call starts at the size that fitted."""
    model, tok = minilm.model, minilm.tokenizer
    _, items, _ = prepare_words(tok, WORDS)
    fixed = pool_vectors(model, items, "hidden", [0, 3, 6], "mean", 3, "right", 0, False)
    body = forward.model_body(model)
    real = body.forward
    sizes = []

    def tight(*args, **kwargs):
        sizes.append(len(kwargs["input_ids"]))
        if len(kwargs["input_ids"]) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(body, "forward", tight)
    forward._FOUND_SIZES.pop(model, None)
    auto = pool_vectors(model, items, "hidden", [0, 3, 6], "mean", "auto", "right", 0, False)
    for name in fixed:
        np.testing.assert_allclose(auto[name], fixed[name], rtol=1e-5, atol=1e-6)
    assert sizes[0] == 8 and 4 in sizes and max(sizes[sizes.index(2):]) <= 2
    assert AutoBatch(model).size == 2  # reused for the rest of the run
    sizes.clear()
    pool_vectors(model, items, "hidden", [6], "mean", "auto", "right", 0, False)
    assert sizes and max(sizes) == 2
    forward._FOUND_SIZES.pop(model, None)


def test_auto_batch_gives_up_clearly_at_one(minilm, monkeypatch):
    model, tok = minilm.model, minilm.tokenizer
    _, items, _ = prepare_words(tok, WORDS[:2])
    body = forward.model_body(model)

    def never(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(body, "forward", never)
    forward._FOUND_SIZES.pop(model, None)
    with pytest.raises(DoesNotFitError, match="batch of 1"):
        pool_vectors(model, items, "hidden", [6], "mean", "auto", "right", 0, False)
    forward._FOUND_SIZES.pop(model, None)


def test_memory_estimate_counts_the_parameters_of_the_loaded_model(minilm):
    """Meta-device count == the loaded model's parameters and buffers; bytes follow the dtype."""
    model = minilm.model
    loaded = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    est = estimate_from_config(model.config, dtype="float32", batch_size=8)
    assert est.parameters == loaded and est.parameter_bytes == 4 * loaded
    half = estimate_from_config(model.config, dtype="float16", batch_size=8)
    assert half.parameter_bytes == 2 * loaded and half.activation_bytes < est.activation_bytes
    d, n, ffn, heads, t = 384, 6, 1536, 12, 64  # MiniLM-L6: by hand
    assert est.activation_bytes == 8 * t * d * (n + 1) * 4 + 8 * t * ffn * 4 + 8 * heads * t * t * 4


def test_a_model_that_cannot_fit_is_refused_before_loading(monkeypatch, tmp_path, capsys):
    """A forced 50 MB budget: one line naming the parameter bytes, the budget and the limit; nothing loaded."""
    from mcicl.app.cli import main
    from mcicl.probing import extract as extract_module

    monkeypatch.setenv("MCICL_MEMORY_LIMIT", "50MB")
    monkeypatch.setattr(extract_module, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    (tmp_path / "w.txt").write_text("dog\ncat\n")
    out = tmp_path / "out"
    assert main(["probe", "extract", "--words", str(tmp_path / "w.txt"), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    for words in ("22,714,240 parameters", "0.08 GiB at float32", "MCICL_MEMORY_LIMIT=50MB", "0.05 GiB",
                  "--dtype"):
        assert words in err, (words, err)
    assert not out.exists()
    monkeypatch.setenv("MCICL_MEMORY_LIMIT", "lots")
    assert main(["probe", "extract", "--words", str(tmp_path / "w.txt"), "--out", str(out), "--quiet"]) == 2
    assert "MCICL_MEMORY_LIMIT='lots'" in capsys.readouterr().err
