"""Interventions on attention heads, each a context manager whose hooks are gone on exit (also on an error).

A head's *output* is its slice of the input of the layer's attention output projection (BERT's
``attention.output.dense``, GPT-2's ``attn.c_proj``, Llama's ``self_attn.o_proj``, ...): the heads' outputs
concatenated, head h at ``h * d_head : (h + 1) * d_head``, before the projection mixes them. Every intervention is
a forward pre-hook on that projection:

- :func:`knockout` (zero-ablation): the head's slice set to 0 at every position;
- :func:`mean_ablation`: the slice set to a given vector at every position (the caller's mean of that head's output
  over a reference set of prompts, :func:`capture_heads`);
- :func:`capture_heads`: records the projection inputs of the chosen layers, one tensor per forward call;
- :func:`patch_heads`: at chosen (row, position) pairs of the batch, the slice moved towards a given value,
  ``x <- x + alpha * (value - x)`` (``alpha = 1``: replaced; ``alpha = 0``: untouched, bit for bit).

:func:`hooks_left` lists every module that still holds one of these hooks (or, with ``every``, any hook), so a test
(or a job) can say none remain.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from mcicl.core.configuration import require

Head = tuple[int, int]

# Attention output projections (their input is the heads' outputs concatenated, head h at h*d:(h+1)*d).
_OUTPUT_PROJECTIONS = (r"attention\.output\.dense", r"self_attn\.o_proj", r"attn\.c_proj", r"attention\.dense",
                       r"self_attn\.out_proj", r"attn\.out_proj")


def head_output_projections(model: Any) -> list[torch.nn.Module]:
    """Each layer's attention output projection (BERT, GPT-2, Llama-like, GPT-NeoX, OPT), in layer order."""
    pattern = re.compile(r"(?:^|\.)(?:" + "|".join(_OUTPUT_PROJECTIONS) + r")$")
    found = [(n, m) for n, m in model.named_modules() if pattern.search(n)]
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    if not found or (n_layers is not None and len(found) != n_layers):
        raise ValueError(f"head knockout does not know the attention output projection of {type(model).__name__} "
                         f"(found {[n for n, _ in found][:4]}); accepted: BERT, GPT-2, Llama-like, GPT-NeoX or OPT "
                         "models")
    return [m for _, m in found]


def n_heads(model: Any) -> int:
    """Attention heads per layer."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("num_attention_heads", "n_head"):
        if isinstance(getattr(cfg, name, None), int):
            return int(getattr(cfg, name))
    raise ValueError(f"{type(model).__name__}'s config names no number of attention heads")


def _by_layer(model: Any, heads: Sequence[Head]) -> tuple[list[torch.nn.Module], int, dict[int, list[int]]]:
    """(output projections, heads per layer, layer -> its heads in ``heads``), every pair checked."""
    projections = head_output_projections(model)
    h_count = n_heads(model)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        require(0 <= layer < len(projections) and 0 <= head < h_count, "heads", (layer, head),
                f"(layer, head) pairs with 0 <= layer < {len(projections)} and 0 <= head < {h_count}")
        by_layer.setdefault(layer, []).append(head)
    return projections, h_count, by_layer


@contextlib.contextmanager
def _pre_hooks(projections: Sequence[torch.nn.Module], hooks: Mapping[int, Callable]) -> Iterator[None]:
    """Register ``hooks[layer]`` as a forward pre-hook on ``projections[layer]``; remove them all on exit."""
    handles = []
    try:
        for layer, hook in hooks.items():
            hook.mcicl_intervention = True  # what hooks_left looks for
            handles.append(projections[layer].register_forward_pre_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def knockout(model: Any, heads: Sequence[Head]) -> Iterator[None]:
    """Zero the output of each (layer, head) in ``heads`` while the context is open (forward pre-hooks)."""
    projections, h_count, by_layer = _by_layer(model, heads)

    def hook_for(zeroed: list[int]) -> Callable:
        def hook(module: torch.nn.Module, args: tuple) -> tuple:
            x = args[0]
            d = x.shape[-1] // h_count
            x = x.clone()
            for h in zeroed:
                x[..., h * d:(h + 1) * d] = 0
            return (x, *args[1:])
        return hook

    with _pre_hooks(projections, {layer: hook_for(hs) for layer, hs in by_layer.items()}):
        yield


@contextlib.contextmanager
def mean_ablation(model: Any, means: Mapping[Head, torch.Tensor]) -> Iterator[None]:
    """Set the output of each (layer, head) to ``means[(layer, head)]`` (d_head,) at every position."""
    projections, h_count, by_layer = _by_layer(model, list(means))

    def hook_for(layer: int, hs: list[int]) -> Callable:
        def hook(module: torch.nn.Module, args: tuple) -> tuple:
            x = args[0].clone()
            d = x.shape[-1] // h_count
            for h in hs:
                value = torch.as_tensor(means[(layer, h)]).to(device=x.device, dtype=x.dtype)
                require(value.shape == (d,), "means", tuple(value.shape), f"one ({d},) vector per head")
                x[..., h * d:(h + 1) * d] = value
            return (x, *args[1:])
        return hook

    with _pre_hooks(projections, {layer: hook_for(layer, hs) for layer, hs in by_layer.items()}):
        yield


@contextlib.contextmanager
def capture_heads(model: Any, layers: Sequence[int] | None = None) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record the heads' outputs (the output projection's input, (batch, tokens, heads * d_head), detached, on the
    CPU in float32) of ``layers`` (None: every layer), one tensor per forward call: ``{layer: [calls]}``."""
    projections = head_output_projections(model)
    layers = list(range(len(projections))) if layers is None else list(layers)
    for layer in layers:
        require(0 <= layer < len(projections), "layers", layer, f"layers from 0 to {len(projections) - 1}")
    store: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}

    def hook_for(layer: int) -> Callable:
        def hook(module: torch.nn.Module, args: tuple) -> None:
            store[layer].append(args[0].detach().float().cpu())
        return hook

    with _pre_hooks(projections, {layer: hook_for(layer) for layer in layers}):
        yield store


@contextlib.contextmanager
def patch_heads(model: Any, patches: Mapping[Head, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], *,
                alpha: float = 1.0) -> Iterator[None]:
    """While open, move each head's output towards a value at chosen places of the batch:
    ``patches[(layer, head)] = (rows (n,), positions (n,), values (n, d_head))`` sets
    ``x[rows, positions, head] += alpha * (values - x[rows, positions, head])``."""
    projections, h_count, by_layer = _by_layer(model, list(patches))

    def hook_for(layer: int, hs: list[int]) -> Callable:
        def hook(module: torch.nn.Module, args: tuple) -> tuple:
            if alpha == 0:
                return args  # nothing moves: the bare forward pass, bit for bit
            x = args[0].clone()
            d = x.shape[-1] // h_count
            for h in hs:
                rows, positions, values = patches[(layer, h)]
                rows, positions = torch.as_tensor(rows, device=x.device), torch.as_tensor(positions, device=x.device)
                values = torch.as_tensor(values).to(device=x.device, dtype=x.dtype)
                require(values.shape == (len(rows), d), "patches", tuple(values.shape),
                        f"(rows, positions, values) with values of shape ({len(rows)}, {d})")
                old = x[rows, positions, h * d:(h + 1) * d]
                x[rows, positions, h * d:(h + 1) * d] = values if alpha == 1 else old + alpha * (values - old)
            return (x, *args[1:])
        return hook

    with _pre_hooks(projections, {layer: hook_for(layer, hs) for layer, hs in by_layer.items()}):
        yield


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def hooks_left(model: Any, *, every: bool = False) -> list[str]:
    """Every module of ``model`` that still holds a hook set by these interventions, as 'name: kind (count)'
    (empty: none); ``every``: any hook at all, also those transformers installs itself (recent versions record
    attention outputs through forward hooks that stay on the modules)."""
    out = []
    for name, module in model.named_modules():
        for kind in _HOOK_DICTS:
            held = [h for h in (getattr(module, kind, None) or {}).values()
                    if every or getattr(h, "mcicl_intervention", False)]
            if held:
                out.append(f"{name or '(root)'}: {kind.strip('_')} ({len(held)})")
    return out
