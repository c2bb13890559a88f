"""Label scoring on causal LMs: log p(label | prompt) for every candidate label, exact and fast.

A prompt is three token segments: a *prefix* (header + demonstrations), a *query* (the query word in its
template) and one *option* per candidate label. The score of an option is the sum of the log-probabilities
of its tokens given prefix + query (multi-token labels included); the prediction is the argmax.

Segments are tokenized separately and concatenated (as lm-eval-harness does with context/continuation), so
the cached and the naive scorer see exactly the same token ids.

- :func:`score_naive`: one full forward per (prompt, option): the reference.
- :func:`score_cached`: every distinct prefix is run once (prefixes batched, left-padded); its key-value
  cache is copied to every (query, option) row that shares it; rows are batched, right-padded. Scores equal
  the naive ones to float rounding.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class LabelTokenizationError(ValueError):
    """A label (or query) tokenizes to no tokens, so it cannot be scored."""


@dataclass(frozen=True)
class ScoringPrompt:
    """Text segments of one prompt: shared prefix, query, and the candidate label continuations."""

    prefix: str
    query: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class TokenizedPrompt:
    """Token ids of one prompt's segments (prefix ids start with the tokenizer's BOS when it adds one)."""

    prefix: tuple[int, ...]
    query: tuple[int, ...]
    options: tuple[tuple[int, ...], ...]


def tokenize_prompts(tokenizer, prompts: Sequence[ScoringPrompt]) -> list[TokenizedPrompt]:
    """Tokenize each prompt's segments separately; raise LabelTokenizationError for an empty label."""
    cache: dict[tuple[str, bool], tuple[int, ...]] = {}

    def ids(text: str, special: bool) -> tuple[int, ...]:
        key = (text, special)
        if key not in cache:
            cache[key] = tuple(tokenizer(text, add_special_tokens=special)["input_ids"]) if text or special else ()
        return cache[key]

    out = []
    for p in prompts:
        if not p.options:
            raise ValueError(f"prompt with query {p.query!r} has no candidate labels")
        # Special tokens (BOS) belong to the start of the sequence: the prefix, or the query when there is none.
        prefix = ids(p.prefix, True) if p.prefix else ()
        query = ids(p.query, not p.prefix)
        options = tuple(ids(o, False) for o in p.options)
        for text, toks in zip(p.options, options, strict=True):
            if not toks:
                raise LabelTokenizationError(
                    f"label continuation {text!r} tokenizes to no tokens with this tokenizer; accepted: labels "
                    "with at least one token (check --labels / the label template)")
        if not prefix and not query:
            raise LabelTokenizationError(
                f"prompt for labels {list(p.options)} has no context tokens (empty prefix and query {p.query!r})")
        out.append(TokenizedPrompt(prefix, query, options))
    return out


def _forward_kwargs(model) -> tuple[str, bool]:
    """(name of the cache keyword of model.forward, whether it takes logits_to_keep)."""
    params = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def _option_logprob(logprobs, positions, tokens) -> float:
    """Sum of logprobs[pos, tok] over the option's tokens."""
    return float(sum(logprobs[p, t] for p, t in zip(positions, tokens, strict=True)))


def score_naive(model, tokenizer, prompts: Sequence[ScoringPrompt]) -> list[np.ndarray]:
    """Per prompt, the summed log-prob of each option: one full forward per (prompt, option), no padding."""
    import torch

    device = next(model.parameters()).device
    scores = []
    for tp in tokenize_prompts(tokenizer, prompts):
        context = tp.prefix + tp.query
        row = []
        for option in tp.options:
            ids = torch.tensor([context + option], device=device)
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            # token at position len(context)+j is predicted by the logits at len(context)+j-1
            positions = range(len(context) - 1, len(context) + len(option) - 1)
            row.append(_option_logprob(logprobs, positions, option))
        scores.append(np.array(row))
    return scores


def _left_pad(rows: list[tuple[int, ...]], pad_id: int):
    """(input_ids, attention_mask, position_ids) of left-padded rows; positions count real tokens only."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def score_cached(model, tokenizer, prompts: Sequence[ScoringPrompt], batch_size: int = 32,
                 progress_desc: str | None = None) -> list[np.ndarray]:
    """Per prompt, the summed log-prob of each option, running every distinct prefix once.

    Prefixes are batched (left-padded, position ids from the attention mask). Each (query + option) row
    continues from a copy of its prefix's key-value cache; rows are right-padded, so padding never
    precedes a scored token. ``batch_size`` bounds both the prefixes and the rows per forward.
    """
    import torch
    from transformers import DynamicCache

    from analysis.runs import progress

    device = next(model.parameters()).device
    cache_kw, has_keep = _forward_kwargs(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    tokenized = tokenize_prompts(tokenizer, prompts)
    # A prompt without a prefix borrows its first query token as prefix: the cache needs at least one token.
    split: list[tuple[tuple[int, ...], tuple[int, ...]]] = [
        (tp.prefix, tp.query) if tp.prefix else (tp.query[:1], tp.query[1:]) for tp in tokenized]
    prefix_ids = list(dict.fromkeys(p for p, _ in split))
    prefix_index = {p: i for i, p in enumerate(prefix_ids)}
    # rows: (prompt index, option index, prefix index, row tokens, number of option tokens)
    rows_by_prefix: dict[int, list[tuple[int, int, tuple[int, ...], int]]] = {}
    for i, (tp, (prefix, query)) in enumerate(zip(tokenized, split, strict=True)):
        for j, option in enumerate(tp.options):
            rows_by_prefix.setdefault(prefix_index[prefix], []).append((i, j, query + option, len(option)))
    scores = [np.zeros(len(tp.options)) for tp in tokenized]

    starts = range(0, len(prefix_ids), batch_size)
    for start in progress(starts, desc=progress_desc or "scoring", total=len(starts)):
        block = prefix_ids[start:start + batch_size]
        ids, mask, positions = _left_pad(list(block), pad_id)
        cache = DynamicCache()
        kw = {"logits_to_keep": 1} if has_keep else {}
        with torch.no_grad():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                        use_cache=True, **{cache_kw: cache}, **kw)
        # Left padding puts every prefix's last real token in the last column.
        last_logprobs = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        lengths = mask.sum(-1)
        rows = [(b, *r) for b in range(len(block)) for r in rows_by_prefix[start + b]]
        for r0 in range(0, len(rows), batch_size):
            chunk = rows[r0:r0 + batch_size]
            which = torch.tensor([b for b, *_ in chunk])
            width = max(len(toks) for *_, toks, _ in chunk)
            row_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            row_mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for k, (*_, toks, _) in enumerate(chunk):
                row_ids[k, :len(toks)] = torch.tensor(toks)
                row_mask[k, :len(toks)] = 1
            full_mask = torch.cat([mask[which], row_mask], dim=1)
            row_pos = lengths[which, None] + torch.arange(width)[None, :]
            # A fresh cache per chunk: the forward appends to it, the prefix tensors stay untouched.
            chunk_cache = DynamicCache(ddp_cache_data=[(k[which.to(k.device)], v[which.to(v.device)])
                                                       for k, v in layers])
            with torch.no_grad():
                logits = model(input_ids=row_ids.to(device), attention_mask=full_mask.to(device),
                               position_ids=row_pos.to(device), use_cache=True,
                               **{cache_kw: chunk_cache}).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1).cpu()
            first = last_logprobs[which.to(last_logprobs.device)].cpu()
            for k, (_, i, j, toks, n_opt) in enumerate(chunk):
                # predictor of row token t: the prefix's last logits for t=0, else the row's logits at t-1
                table = torch.cat([first[k:k + 1], logprobs[k, :len(toks) - 1]], dim=0)
                start_tok = len(toks) - n_opt
                pos = range(start_tok, len(toks))
                scores[i][j] = _option_logprob(table, pos, toks[start_tok:])
    return scores


def score_prompts(model, tokenizer, prompts: Sequence[ScoringPrompt], *, method: str = "cached",
                  batch_size: int = 32) -> list[np.ndarray]:
    """Per prompt, each option's summed log-prob; ``method`` 'cached' (default) or 'naive' (reference)."""
    if method == "cached":
        return score_cached(model, tokenizer, prompts, batch_size=batch_size)
    if method == "naive":
        return score_naive(model, tokenizer, prompts)
    raise ValueError(f"unknown scoring method {method!r}; accepted: 'cached', 'naive'")
