"""The residual stream as an intervention site: add a vector to hidden state ``l`` at chosen token positions.

Hidden state ``l`` is what ``output_hidden_states[l]`` reports (as in :mod:`probing.forward`: ``0`` is the
embedding output, ``l`` the output of block ``l``). Hugging Face models record state ``l < L`` as the input of block
``l`` and state ``L`` after the last block and, in most causal LMs, after the final norm (GPT-2's ``ln_f``, Llama's
``norm``). So the site of state ``l < L`` is a forward pre-hook on block ``l`` (it replaces the block's input) and
the site of state ``L`` a forward hook on the final norm, or on the last block where there is none (BERT).
:func:`check_sites` confirms on a real forward that each site's tensor is the recorded hidden state; the steering job
runs it before it steers.

:func:`add_to_residual` is a context manager: inside it, every forward adds ``alpha * vectors[b]`` to hidden state
``l`` of batch row ``b`` at ``positions[b]`` (so every later layer reads the edited state); on exit, also on an
error, its hook is removed. ``alpha = 0`` adds exact zeros: the forward is bitwise the bare one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from mcicl.probing.extract import model_body, n_hidden_layers

FINAL_NORMS = ("ln_f", "norm", "final_layer_norm", "final_layernorm", "norm_f", "final_norm")


def decoder_blocks(model: Any) -> torch.nn.ModuleList:
    """The model's list of transformer blocks (the ModuleList with one entry per hidden layer)."""
    n = n_hidden_layers(model)
    body = model_body(model)
    lists = [m for _, m in body.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n]
    if not lists:
        raise ValueError(f"{type(model).__name__}: no list of {n} transformer blocks found; accepted: a model whose "
                         "blocks are one torch ModuleList (BERT, GPT-2, Llama and most Hugging Face models)")
    return lists[0]


def final_norm(model: Any) -> torch.nn.Module | None:
    """The norm applied after the last block (recorded in the last hidden state), or None (post-LN encoders)."""
    body = model_body(model)
    blocks = decoder_blocks(model)
    parent = next((m for m in body.modules() if any(c is blocks for c in m.children())), body)
    for name in FINAL_NORMS:
        module = getattr(parent, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


def residual_site(model: Any, layer: int) -> tuple[torch.nn.Module, str]:
    """(module, 'input' | 'output'): where hidden state ``layer`` passes: the input of block ``layer`` (``layer <
    L``), else the output of the final norm or of the last block."""
    n = n_hidden_layers(model)
    if not isinstance(layer, (int, np.integer)) or not 0 <= int(layer) <= n:
        raise ValueError(f"layer={layer!r}; accepted: a hidden-state index from 0 (embedding output) to {n}")
    blocks = decoder_blocks(model)
    if layer < n:
        return blocks[int(layer)], "input"
    norm = final_norm(model)
    return (norm if norm is not None else blocks[-1]), "output"


def _edit(hidden: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    out = hidden.clone()
    out[rows, cols] = out[rows, cols] + add.to(dtype=out.dtype, device=out.device)
    return out


@contextmanager
def _site_hook(model: Any, layer: int, edit: Any) -> Iterator[torch.utils.hooks.RemovableHandle]:
    """Run ``edit(hidden) -> hidden or None`` on hidden state ``layer`` of every forward; the hook is removed on
    exit, also when the body raises."""
    module, where = residual_site(model, layer)
    if where == "input":
        def pre(_module: Any, args: tuple, kwargs: dict) -> Any:
            if args:
                new = edit(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = edit(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})
        pre.mcicl_intervention = True  # type: ignore[attr-defined]
        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    else:
        def post(_module: Any, _args: Any, output: Any) -> Any:
            first = output[0] if isinstance(output, tuple) else output
            new = edit(first)
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new
        post.mcicl_intervention = True  # type: ignore[attr-defined]
        handle = module.register_forward_hook(post)
    try:
        yield handle
    finally:
        handle.remove()


@contextmanager
def add_to_residual(model: Any, layer: int, positions: Sequence[Sequence[int]],
                    vectors: np.ndarray | torch.Tensor, alpha: float = 1.0) -> Iterator[None]:
    """Inside the block, each forward of ``model`` adds ``alpha * vectors[b]`` to hidden state ``layer`` of batch
    row ``b`` at token positions ``positions[b]`` (padded-batch coordinates); ``vectors`` is (d,) for every row or
    (B, d). The hook is removed on exit, also on an error."""
    v = torch.as_tensor(np.asarray(vectors, dtype=np.float32) if not isinstance(vectors, torch.Tensor) else vectors)
    rows = [b for b, ps in enumerate(positions) for _ in ps]
    cols = [int(p) for ps in positions for p in ps]
    if v.ndim == 1:
        per_token = v[None, :].expand(len(rows), -1)
    elif v.ndim == 2 and v.shape[0] == len(positions):
        per_token = v[torch.tensor(rows, dtype=torch.long)] if rows else v[:0]
    else:
        raise ValueError(f"vectors of shape {tuple(v.shape)}; accepted: (d,) or (rows, d) with one row per entry "
                         f"of positions ({len(positions)})")
    add = float(alpha) * per_token
    r, c = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[0] != len(positions):
            raise ValueError(f"the forward has {hidden.shape[0]} batch rows but positions were given for "
                             f"{len(positions)}")
        if hidden.shape[-1] != add.shape[-1]:
            raise ValueError(f"steering vectors have dimension {add.shape[-1]}, hidden state {layer} has "
                             f"{hidden.shape[-1]}")
        return _edit(hidden, r.to(hidden.device), c.to(hidden.device), add)

    with _site_hook(model, layer, edit):
        yield


@contextmanager
def capture_residual(model: Any, layer: int) -> Iterator[list[torch.Tensor]]:
    """Inside the block, every forward appends (a copy of) hidden state ``layer`` as its site sees it."""
    seen: list[torch.Tensor] = []

    def edit(hidden: torch.Tensor) -> None:
        seen.append(hidden.detach().clone())

    with _site_hook(model, layer, edit):
        yield seen


def check_sites(model: Any, input_ids: torch.Tensor, layers: Sequence[int] | None = None,
                atol: float = 1e-5) -> None:
    """Raise ValueError when a site's tensor is not ``output_hidden_states[layer]`` on ``input_ids`` (1, T)."""
    n = n_hidden_layers(model)
    layers = list(range(n + 1)) if layers is None else list(layers)
    body = model_body(model)
    with torch.inference_mode():
        for layer in layers:
            with capture_residual(model, layer) as seen:
                hidden = body(input_ids=input_ids, output_hidden_states=True).hidden_states[layer]
            if len(seen) != 1 or seen[0].shape != hidden.shape or not torch.allclose(
                    seen[0].float(), hidden.float(), atol=atol * max(1.0, float(hidden.abs().max()))):
                raise ValueError(f"{type(model).__name__}: the steering site of layer {layer} does not carry "
                                 f"hidden state {layer}; accepted: models whose hidden states are block inputs and "
                                 "the last block's (normed) output")


def hook_count(model: Any) -> int:
    """This module's forward hooks and pre-hooks still registered on any module of ``model`` (0 after every
    intervention; transformers' own output-recording hooks are not counted)."""
    return sum(bool(getattr(fn, "mcicl_intervention", False)) for m in model.modules()
               for fn in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))
