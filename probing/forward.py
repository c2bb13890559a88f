"""Forward passes and pooling: the one place padding, position ids and pooling are handled.

Word extraction (:mod:`probing.extract`), contextual extraction (:mod:`probing.contextual`) and the probes hand
:func:`pool_vectors` tokenized items (:class:`PoolItem`: token ids and the positions of the word's own tokens)
and get one pooled vector per item and layer. Batches are padded (right for encoders, left for causal LMs, see
:func:`padding_for`) with an attention mask and, with left padding, explicit position ids, so an item in a padded
batch gets the vectors it gets alone; hidden states are the model's own ``output_hidden_states`` of
:func:`model_body` (``"0"`` is the embedding output), and only pooled vectors are kept, batch by batch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mcicl.core.configuration import require
from mcicl.core.logs import progress
from mcicl.probing.extract_config import PADDING_SIDES
from mcicl.probing.models import is_causal_model
from mcicl.probing.placement import input_device


@dataclass
class PoolItem:
    """One word ready for the model: its token ids and the positions of the word's own tokens."""

    ids: list[int]
    positions: list[int]


def padding_token_id(tokenizer: Any) -> int:
    """The id used to pad batches: the pad token, else eos, else 0 (padding is masked, so never read)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def model_body(model: Any) -> Any:
    """The module whose forward returns hidden states: the encoder of an encoder-decoder, else the base model
    (a causal LM's body, skipping the vocabulary projection, whose logits extraction never needs)."""
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    return getattr(model, "base_model", model)


def padding_for(model: Any, padding_side: str = "auto") -> str:
    """'left' or 'right': left for causal LMs (their convention), right for encoders, unless asked."""
    require(padding_side in PADDING_SIDES, "padding_side", padding_side, "one of " + ", ".join(PADDING_SIDES))
    accepts_positions = "position_ids" in inspect.signature(model_body(model).forward).parameters
    if padding_side == "auto":

        return "left" if is_causal_model(model) and accepts_positions else "right"
    if padding_side == "left" and not accepts_positions:
        raise ValueError(f"{type(model).__name__} takes no position_ids, so left padding would shift positions; "
                         "use padding_side='right' (or 'auto')")
    return padding_side


def _pool_rows(lookup: Any, device: Any, items: list[PoolItem], pooling: str) -> np.ndarray:
    """Pooled vectors ``lookup(ids)`` (rows of an embedding) over each item's word tokens -> (len(items), d)."""

    with torch.inference_mode():
        if pooling == "last":
            ids = torch.tensor([it.ids[it.positions[-1]] for it in items], dtype=torch.long, device=device)
            return lookup(ids).float().cpu().numpy()
        ids = torch.tensor([it.ids[p] for it in items for p in it.positions], dtype=torch.long, device=device)
        seg = torch.tensor([i for i, it in enumerate(items) for _ in it.positions], dtype=torch.long, device=device)
        counts = torch.tensor([len(it.positions) for it in items], dtype=torch.float32, device=device)
        rows = lookup(ids).float()
        sums = torch.zeros(len(items), rows.shape[-1], dtype=torch.float32, device=device)
        sums.index_add_(0, seg, rows)
        return (sums / counts[:, None]).cpu().numpy()


def input_scale(model: Any) -> float:
    """The factor between input-embedding rows and what the first layer reads (Gemma: sqrt(hidden_size)).

    Measured: hidden state 0 of a one-token forward, when it is a pure rescaling of the token's row (the
    model scales inside its embedding module, or in its forward as older transformers' Gemma 2 does); when
    hidden state 0 adds more (position embeddings, a LayerNorm), the embedding module's own ``embed_scale``
    or 1.
    """
    embedding = model.get_input_embeddings()
    weight = embedding.weight
    with torch.inference_mode():
        token = int(weight[:4096].float().norm(dim=-1).argmax())  # a row far from zero
        row = weight[token].float()
        h0 = model_body(model)(input_ids=torch.tensor([[token]], device=weight.device),
                          output_hidden_states=True).hidden_states[0][0, 0].float().to(row.device)
        # OPT with word_embed_proj_dim projects its rows to another width: not a rescaling
        factor = float(h0 @ row / (row @ row)) if h0.shape == row.shape else 1.0
        proportional = h0.shape == row.shape and torch.allclose(h0, factor * row, rtol=1e-3,
                                                                 atol=1e-5 * float(row.abs().max()))
    if proportional:
        return factor
    scale = getattr(embedding, "embed_scale", None)
    return float(scale) if scale is not None else 1.0


def _pool_hidden(model: Any, items: list[PoolItem], layer_idx: list[int], pooling: str, batch_size: int,
                 padding_side: str, pad_id: int, show_progress: bool = True, desc: str = "extract"
                 ) -> dict[str, np.ndarray]:
    """Pooled hidden states of the selected layers for every item (in the items' order)."""


    body = model_body(model)
    params = inspect.signature(body.forward).parameters
    extra = {k: v for k, v in (("use_cache", False), ("return_dict", True)) if k in params}
    # Left padding shifts the real tokens, so they get explicit positions 0..len-1. With right padding the model
    # numbers positions itself: RoBERTa-like models start at padding_idx + 1, not 0.
    pass_positions = padding_side == "left" and "position_ids" in params
    device = input_device(model)
    # Items with the same token ids (several words of one sentence) share one row of one forward pass.
    rows: dict[tuple[int, ...], list[int]] = {}
    for i, it in enumerate(items):
        rows.setdefault(tuple(it.ids), []).append(i)
    seqs = list(rows)
    # Longest first (an out-of-memory error shows at once), similar lengths share a batch (little padding).
    order = sorted(range(len(seqs)), key=lambda k: -len(seqs[k]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out: dict[str, np.ndarray] = {}
    bar = progress(batches, desc=desc) if show_progress else iter(batches)
    with torch.inference_mode():
        for batch in bar:
            width = max(len(seqs[k]) for k in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            members = [i for k in batch for i in rows[seqs[k]]]  # the items read from this batch, in row order
            b_idx, t_idx, item_row, last = [], [], [], []  # b_idx: item slot; item_row: its row in the batch
            for row, k in enumerate(batch):
                ids = seqs[k]
                shift = width - len(ids) if padding_side == "left" else 0
                input_ids[row, shift:shift + len(ids)] = torch.tensor(ids)
                mask[row, shift:shift + len(ids)] = 1
                for i in rows[ids]:
                    slot = len(item_row)
                    item_row.append(row)
                    b_idx += [slot] * len(items[i].positions)
                    t_idx += [p + shift for p in items[i].positions]
                    last.append(items[i].positions[-1] + shift)
            kwargs = dict(extra)
            if pass_positions:
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
            hidden = body(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                          **kwargs).hidden_states
            for li in layer_idx:
                h = hidden[li]  # (B, T, d); pad positions may hold garbage (even NaN): only word tokens are read
                if pooling == "last":
                    pooled = h[torch.tensor(item_row, device=h.device), torch.tensor(last, device=h.device)].float()
                else:
                    slots = torch.tensor(b_idx, device=h.device)
                    tok = h[torch.tensor(item_row, device=h.device)[slots], torch.tensor(t_idx, device=h.device)]
                    sums = torch.zeros(len(members), h.shape[-1], dtype=torch.float32, device=h.device)
                    sums.index_add_(0, slots, tok.float())
                    counts = torch.bincount(slots, minlength=len(members)).float()
                    pooled = sums / counts[:, None]
                name = str(li)
                if name not in out:
                    out[name] = np.empty((len(items), h.shape[-1]), dtype=np.float32)
                out[name][members] = pooled.cpu().numpy()
            del hidden
    if not items:
        d = model.config.get_text_config().hidden_size if hasattr(model.config, "get_text_config") else 0
        out = {str(li): np.empty((0, d), dtype=np.float32) for li in layer_idx}
    return out


def pool_vectors(model: Any, items: list[PoolItem], space: str, layer_idx: list[int], pooling: str, batch_size: int,
                 padding_side: str, pad_id: int, show_progress: bool = True, desc: str = "extract"
                 ) -> dict[str, np.ndarray]:
    """Layer name -> (len(items), d) pooled vectors of ``items``: the public forward-and-pool seam that word
    extraction, contextual extraction and the probes share (padding handled here, once)."""
    if space == "hidden":
        return _pool_hidden(model, items, layer_idx, pooling, batch_size, padding_side, pad_id, show_progress, desc)
    if space == "input":  # what the first layer reads: the rows times the model's scale (Gemma: sqrt(d))
        weight, scale = model.get_input_embeddings().weight, input_scale(model)
        return {"input": _pool_rows(lambda ids: weight[ids] * scale, weight.device, items, pooling)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "weight", None) is None:
        raise ValueError(f"{type(model).__name__} has no LM head (get_output_embeddings() is None), so there are "
                         "no unembedding rows; use space='input' or 'hidden', or load a model with an LM head "
                         "(a causal LM)")
    return {"unembed": _pool_rows(lambda ids: head.weight[ids], head.weight.device, items, pooling)}
