"""Forward passes and pooling: the one place padding, position ids and pooling are handled.

Word extraction (:mod:`probing.extract`), contextual extraction (:mod:`probing.contextual`) and the probes hand
:func:`pool_vectors` tokenized items (:class:`PoolItem`: token ids and the positions of the word's own tokens)
and get one pooled vector per item and layer. Batches are padded (right for encoders, left for causal LMs, see
:func:`padding_for`) with an attention mask and, with left padding, explicit position ids, so an item in a padded
batch gets the vectors it gets alone; hidden states are the model's own ``output_hidden_states`` of
:func:`model_body` (``"0"`` is the embedding output), and only pooled vectors are kept, batch by batch.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mcicl.core.configuration import require
from mcicl.core.logs import progress
from mcicl.probing.extract_config import PADDING_SIDES
from mcicl.probing.memory import DoesNotFitError
from mcicl.probing.models import is_causal_model
from mcicl.probing.placement import input_device

log = logging.getLogger("mcicl")
AUTO_START = 512  # the first batch size tried by batch_size="auto" (or the number of items, if fewer)

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



class StopForward(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by the hook after the last block needed: the rest of the forward pass is skipped."""


def n_hidden_layers(model: Any) -> int:
    """The number of transformer layers (hidden states are 0..n, 0 = embedding output)."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(config, "is_encoder_decoder", False):
        for name in ("encoder_layers", "num_layers"):
            if isinstance(getattr(text, name, None), int):
                return int(getattr(text, name))
    for name in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        if isinstance(getattr(text, name, None), int):
            return int(getattr(text, name))
    # Unusual config: count the hidden states of a one-token forward pass.
    with torch.inference_mode():
        out = model_body(model)(input_ids=torch.zeros(1, 1, dtype=torch.long, device=input_device(model)),
                                output_hidden_states=True)
    return len(out.hidden_states) - 1


def transformer_blocks(model: Any) -> Any:
    """The body's list of transformer blocks (a ModuleList of n_hidden_layers modules), or None if not found."""
    n = n_hidden_layers(model)
    for module in model_body(model).modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and n > 0:
            return module
    return None


@contextlib.contextmanager
def stop_after(blocks: Any, upto: int) -> Iterator[dict[int, Any]]:
    """Hooks recording the input of blocks 0..``upto`` (hidden states 0..upto) and stopping at block ``upto``.

    Yields the dict the hooks fill (index -> (B, T, d) tensor); a forward pass inside raises :class:`StopForward`.
    """
    captured: dict[int, Any] = {}

    def hook_for(j: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            captured[j] = args[0] if args else kwargs["hidden_states"]
            if j == upto:
                raise StopForward
        return hook

    handles = [blocks[j].register_forward_pre_hook(hook_for(j), with_kwargs=True) for j in range(upto + 1)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


_FOUND_SIZES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class AutoBatch:
    """``batch_size="auto"``: start large, halve on out-of-memory, and keep the size that fitted for ``model``
    (the rest of the run reuses it: every later forward pass of this model object starts there)."""

    def __init__(self, model: Any, start: int = AUTO_START):
        self.model = model
        self.size = _FOUND_SIZES.get(model, start)

    def shrink(self, err: BaseException) -> int:
        """The next size after an out-of-memory error at ``self.size``; re-raises at size 1."""
        if self.size <= 1:
            raise DoesNotFitError(f"out of memory with a batch of 1 on {input_device(self.model)} ({err}); the model "
                              "and one item do not fit: use a smaller --dtype, a device with more memory, "
                              "or --device balanced") from err
        self.size //= 2
        _FOUND_SIZES[self.model] = self.size
        log.warning("out of memory: batch size halved to %d (kept for the rest of the run)", self.size)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return self.size

    def fitted(self) -> None:
        """Record that ``self.size`` fitted (later calls start there)."""
        _FOUND_SIZES[self.model] = self.size


def chunk_rows(batch_size: int | str) -> int:
    """Rows per cache chunk: 8 batches (``"auto"``: 8 of its first size), so a chunk's key never depends on
    what fitted."""
    return 8 * (AUTO_START if batch_size == "auto" else int(batch_size))


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an accelerator out-of-memory error (torch.OutOfMemoryError, CUDA or MPS messages)."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(err, oom) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def _pool_hidden(model: Any, items: list[PoolItem], layer_idx: list[int], pooling: str, batch_size: int | str,
                 padding_side: str, pad_id: int, show_progress: bool = True, desc: str = "extract",
                 truncate: bool = True) -> dict[str, np.ndarray]:
    """Pooled hidden states of the selected layers for every item (in the items' order)."""
    body = model_body(model)
    params = inspect.signature(body.forward).parameters
    extra = {k: v for k, v in (("use_cache", False), ("return_dict", True)) if k in params}
    # Left padding shifts the real tokens, so they get explicit positions 0..len-1. With right padding the model
    # numbers positions itself: RoBERTa-like models start at padding_idx + 1, not 0.
    pass_positions = padding_side == "left" and "position_ids" in params
    device = input_device(model)
    upto = max(layer_idx, default=0)
    blocks = transformer_blocks(model) if truncate and layer_idx and upto < n_hidden_layers(model) else None
    checked = blocks is None
    auto = AutoBatch(model, min(AUTO_START, max(len(items), 1))) if batch_size == "auto" else None
    # Items with the same token ids (several words of one sentence) share one row of one forward pass.
    rows: dict[tuple[int, ...], list[int]] = {}
    for i, it in enumerate(items):
        rows.setdefault(tuple(it.ids), []).append(i)
    seqs = list(rows)
    # Longest first (an out-of-memory error shows at once), similar lengths share a batch (little padding).
    order = sorted(range(len(seqs)), key=lambda k: -len(seqs[k]))
    offsets = np.concatenate([[0], np.cumsum([len(it.positions) for it in items])]).astype(int).tolist()
    n_rows = offsets[-1] if pooling == "tokens" else len(items)
    done = [0]

    def batches() -> Iterator[list[int]]:
        while done[0] < len(order):  # the size is read again after each batch: "auto" may have halved it
            yield order[done[0]:done[0] + (auto.size if auto is not None else int(batch_size))]

    def forward(input_ids: Any, mask: Any, kwargs: dict[str, Any], stop: bool) -> Any:
        if not stop:
            return body(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, **kwargs).hidden_states
        with stop_after(blocks, upto) as captured:
            with contextlib.suppress(StopForward):
                body(input_ids=input_ids, attention_mask=mask, output_hidden_states=False, **kwargs)
        return [captured.get(j) for j in range(upto + 1)]

    out: dict[str, np.ndarray] = {}
    total = -(-len(order) // (auto.size if auto is not None else int(batch_size)))
    bar = progress(batches(), desc=desc, total=total) if show_progress else batches()
    with torch.inference_mode():
        for batch in bar:
            width = max(len(seqs[k]) for k in batch)
            # Ids, mask and the pooling indices are built in numpy and handed to torch once: many small torch
            # ops (fills, index_add_) each start a parallel region, which costs more than the work on a busy CPU.
            ids_np = np.full((len(batch), width), pad_id, dtype=np.int64)
            mask_np = np.zeros((len(batch), width), dtype=np.int64)
            members = [i for k in batch for i in rows[seqs[k]]]  # the items read from this batch, in slot order
            # flat: each word token's row in the (B*T) flattened batch; slot_of: its item slot; last: each slot's
            # last word token (flat); dest: token rows of "tokens" pooling
            flat, slot_of, last, dest = [], [], [], []
            for row, k in enumerate(batch):
                ids = seqs[k]
                shift = width - len(ids) if padding_side == "left" else 0
                ids_np[row, shift:shift + len(ids)] = ids
                mask_np[row, shift:shift + len(ids)] = 1
                base = row * width + shift
                for i in rows[ids]:
                    slot = len(last)
                    positions = items[i].positions
                    flat += [base + p for p in positions]
                    slot_of += [slot] * len(positions)
                    last.append(base + positions[-1])
                    dest += range(offsets[i], offsets[i] + len(positions))
            input_ids, mask = torch.from_numpy(ids_np), torch.from_numpy(mask_np)
            kwargs = dict(extra)
            if pass_positions:
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
            input_ids, mask = input_ids.to(device), mask.to(device)
            if not checked:  # two rows both ways: a model whose hidden states are not its blocks' inputs is caught
                checked = True
                few = {k: (v[:2] if k == "position_ids" else v) for k, v in kwargs.items()}
                if not _same_states(forward(input_ids[:2], mask[:2], few, True),
                                    forward(input_ids[:2], mask[:2], few, False), layer_idx, mask[:2]):
                    log.warning("%s: hidden states are not the inputs of its blocks; running the full forward "
                                "pass (no stop after layer %d)", type(model).__name__, upto)
                    blocks = None
            try:
                hidden = forward(input_ids, mask, kwargs, blocks is not None)
            except Exception as err:
                if auto is None or not is_out_of_memory(err):
                    raise
                auto.shrink(err)
                continue
            pooled = _pool_batch([hidden[li] for li in layer_idx], pooling, flat, slot_of, last, len(members))
            for j, li in enumerate(layer_idx):
                name = str(li)
                if name not in out:
                    out[name] = np.empty((n_rows, pooled[j].shape[-1]), dtype=np.float32)
                out[name][dest if pooling == "tokens" else members] = pooled[j]
            del hidden
            done[0] += len(batch)
            if auto is not None:
                auto.fitted()
    if not items:
        d = model.config.get_text_config().hidden_size if hasattr(model.config, "get_text_config") else 0
        out = {str(li): np.empty((0, d), dtype=np.float32) for li in layer_idx}
    return out


def _pool_batch(states: list[Any], pooling: str, flat: list[int], slot_of: list[int], last: list[int],
                n_slots: int) -> np.ndarray | list[np.ndarray]:
    """(len(states), rows, d) float32 pooled vectors of one batch (a list of (rows, d_l), one per state, when the
    layers' widths differ, as in OPT's projected last layer). The selected layers' (B, T, d) states are
    gathered at the word tokens (``flat``: rows of the flattened B*T batch; ``last``: each slot's last token) into
    one (layers, tokens, d) array, and ``mean`` sums each slot's run of tokens (``slot_of``: each token's slot,
    non-decreasing) with one ``np.add.reduceat``. On the CPU the states are read as numpy views, elsewhere gathered
    on their device and copied once: a batch costs a few calls whatever the number of layers and items (many small
    torch ops each start a parallel region, which on a busy CPU costs more than the work). Pad positions may hold
    garbage (even NaN): only word tokens are read."""
    d = states[0].shape[-1]
    if any(h.shape[-1] != d for h in states):
        return [_pool_batch([h], pooling, flat, slot_of, last, n_slots)[0] for h in states]
    rows = np.asarray(last if pooling == "last" else flat, dtype=np.int64)
    if all(h.device.type == "cpu" for h in states):
        tok = np.stack([h.reshape(-1, d).float().numpy()[rows] for h in states])
    else:  # with a model split over devices, each layer's rows are gathered where they are
        device = states[0].device
        index = torch.from_numpy(rows)
        tok = torch.stack([h.reshape(-1, d).index_select(0, index.to(h.device)).to(device)
                           for h in states]).float().cpu().numpy()
    if pooling != "mean":
        return tok
    slots = np.asarray(slot_of, dtype=np.int64)
    counts = np.bincount(slots, minlength=n_slots)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.add.reduceat(tok, starts, axis=1) / counts[None, :, None].astype(np.float32)

def _same_states(truncated: list[Any], full: Any, layer_idx: list[int], mask: Any) -> bool:
    """Whether the hooked hidden states equal the model's own at the real (unpadded) tokens of every layer."""
    keep = mask.bool()
    for li in layer_idx:
        a, b = truncated[li], full[li]
        if a is None or a.shape != b.shape:
            return False
        a, b = a[keep].float(), b[keep].float()
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(float(b.abs().max()), 1.0)):
            return False
    return True


def pool_vectors(model: Any, items: list[PoolItem], space: str, layer_idx: list[int], pooling: str,
                 batch_size: int | str, padding_side: str, pad_id: int, show_progress: bool = True,
                 desc: str = "extract", truncate: bool = True) -> dict[str, np.ndarray]:
    """Layer name -> (len(items), d) pooled vectors of ``items``: the public forward-and-pool seam that word
    extraction, contextual extraction and the probes share (padding handled here, once). ``batch_size`` is an
    integer or ``"auto"``; ``truncate`` stops the forward pass after the deepest layer in ``layer_idx``.
    ``pooling="tokens"`` (hidden states only) keeps every word token's row instead: item i's rows are
    ``offsets[i]:offsets[i + 1]``, offsets the running sum of ``len(item.positions)``."""
    if space == "hidden":
        return _pool_hidden(model, items, layer_idx, pooling, batch_size, padding_side, pad_id, show_progress, desc,
                            truncate)
    if space == "input":  # what the first layer reads: the rows times the model's scale (Gemma: sqrt(d))
        weight, scale = model.get_input_embeddings().weight, input_scale(model)
        return {"input": _pool_rows(lambda ids: weight[ids] * scale, weight.device, items, pooling)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "weight", None) is None:
        raise ValueError(f"{type(model).__name__} has no LM head (get_output_embeddings() is None), so there are "
                         "no unembedding rows; use space='input' or 'hidden', or load a model with an LM head "
                         "(a causal LM)")
    return {"unembed": _pool_rows(lambda ids: head.weight[ids], head.weight.device, items, pooling)}
