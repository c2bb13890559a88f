"""Label scoring on causal LMs: log p(label | prompt) for every candidate label, exact and fast.

A prompt is three token segments: a *prefix* (header + demonstrations), a *query* (the query word in its
template) and one *option* per candidate label. The score of an option is the sum of the log-probabilities
of its tokens given prefix + query (multi-token labels included); the prediction is the argmax.

Segments are tokenized separately and concatenated (as lm-eval-harness does with context/continuation), so
the cached and the naive scorer see exactly the same token ids.

- :func:`score_naive`: one full forward per (prompt, option): the reference.
- :func:`score_cached`: every distinct prefix is run once (prefixes batched, left-padded) and its key-value
  cache read by one packed continuation row holding its queries and all their candidate labels (a 4D
  attention mask keeps the labels apart). Scores equal the naive ones to float rounding.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from mcicl.probing.devices import input_device
from mcicl.probing.extract import padding_token_id
from transformers import DynamicCache

from mcicl.core.runs import progress


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


    device = input_device(model)
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

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


@dataclass
class _Packed:
    """One continuation row: several queries of one prefix, each followed by all its options, side by side."""

    prefix: int  # index of the prefix in its block
    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # offsets after the prefix
    query_id: list[int] = field(default_factory=list)  # which query of the row a token belongs to
    option_id: list[int] = field(default_factory=list)  # -1 for query tokens
    # (prompt, option, index of the token predicting the option's first token or -1 for the prefix, token indices)
    targets: list[tuple[int, int, int, list[int]]] = field(default_factory=list)

    def add(self, prompt: int, query: tuple[int, ...], options: tuple[tuple[int, ...], ...]) -> None:
        q = max(self.query_id, default=-1) + 1
        start = len(self.tokens)
        self.tokens += query
        self.positions += range(len(query))
        self.query_id += [q] * len(query)
        self.option_id += [-1] * len(query)
        last_query = start + len(query) - 1 if query else -1
        for j, option in enumerate(options):
            first = len(self.tokens)
            self.tokens += option
            self.positions += range(len(query), len(query) + len(option))
            self.query_id += [q] * len(option)
            self.option_id += [j] * len(option)
            self.targets.append((prompt, j, last_query, list(range(first, first + len(option)))))


def _continuation_mask(rows: list[_Packed], prefix_mask, dtype):
    """Additive 4D mask (R, 1, L, P + L): the prefix's real tokens, plus own query and own option, causally."""

    width = max(len(r.tokens) for r in rows)
    allowed = torch.zeros((len(rows), width, width), dtype=torch.bool)
    for k, r in enumerate(rows):
        n = len(r.tokens)
        q, o = torch.tensor(r.query_id), torch.tensor(r.option_id)
        causal = torch.ones((n, n), dtype=torch.bool).tril()
        same = (q[:, None] == q[None, :]) & ((o[None, :] == -1) | (o[None, :] == o[:, None]))
        allowed[k, :n, :n] = causal & same
    full = torch.cat([prefix_mask.bool()[:, None, :].expand(-1, width, -1), allowed], dim=-1)
    mask = torch.zeros(full.shape, dtype=dtype)
    mask.masked_fill_(~full, torch.finfo(dtype).min)
    return mask[:, None]


def score_cached(model, tokenizer, prompts: Sequence[ScoringPrompt], batch_size: int = 32,
                 max_row_tokens: int = 1024, progress_desc: str | None = None) -> list[np.ndarray]:
    """Per prompt, the summed log-prob of each option, running every distinct prefix once.

    Prefixes are batched (left-padded, position ids from the attention mask) and cached. The queries of a
    prefix and every candidate label of each query are then packed into one continuation row that reads
    that cache, with a 4D attention mask letting each label see only the prefix, its query and itself, and
    position ids restarting for each label: no token is computed twice and no cache is copied per label.
    ``batch_size`` bounds the prefixes per forward; ``max_row_tokens`` the length of a packed row.
    """


    device = input_device(model)
    dtype = next(model.parameters()).dtype
    cache_kw, has_keep = _forward_kwargs(model)
    pad_id = padding_token_id(tokenizer)
    tokenized = tokenize_prompts(tokenizer, prompts)
    # A prompt without a prefix borrows its first query token as prefix: the cache needs at least one token.
    split = [(tp.prefix, tp.query) if tp.prefix else (tp.query[:1], tp.query[1:]) for tp in tokenized]
    prefix_ids = list(dict.fromkeys(p for p, _ in split))
    prefix_index = {p: i for i, p in enumerate(prefix_ids)}
    members: dict[int, list[int]] = {}
    for i, (prefix, _) in enumerate(split):
        members.setdefault(prefix_index[prefix], []).append(i)
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
        last_logprobs = torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        lengths = mask.sum(-1)
        rows: list[_Packed] = []
        for b in range(len(block)):
            row = _Packed(b)
            for i in members[start + b]:
                size = len(split[i][1]) + sum(len(o) for o in tokenized[i].options)
                if row.tokens and len(row.tokens) + size > max_row_tokens:
                    rows.append(row)
                    row = _Packed(b)
                row.add(i, split[i][1], tokenized[i].options)
            rows.append(row)
        for r0 in range(0, len(rows), batch_size):
            chunk = rows[r0:r0 + batch_size]
            which = torch.tensor([r.prefix for r in chunk])
            width = max(len(r.tokens) for r in chunk)
            row_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            row_pos = torch.zeros((len(chunk), width), dtype=torch.long)
            for k, r in enumerate(chunk):
                row_ids[k, :len(r.tokens)] = torch.tensor(r.tokens, dtype=torch.long)
                row_pos[k, :len(r.tokens)] = torch.tensor(r.positions, dtype=torch.long)
            row_pos += lengths[which, None]
            mask4d = _continuation_mask(chunk, mask[which], dtype)
            if len(rows) == len(block):  # one row per prefix, in order: continue the prefix cache itself
                chunk_cache = cache
            else:  # a fresh cache per chunk: the forward appends to it, the prefix tensors stay untouched
                chunk_cache = DynamicCache(ddp_cache_data=[(k[which.to(k.device)], v[which.to(v.device)])
                                                           for k, v in layers])
            with torch.no_grad():
                logits = model(input_ids=row_ids.to(device), attention_mask=mask4d.to(device),
                               position_ids=row_pos.to(device), use_cache=True,
                               **{cache_kw: chunk_cache}).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1).cpu()
            for k, r in enumerate(chunk):
                for i, j, before, toks in r.targets:
                    # the first label token is predicted by the last query token (or the prefix), the rest
                    # by the label's own previous token
                    first = last_logprobs[r.prefix] if before < 0 else logprobs[k, before]
                    ids_ = [r.tokens[t] for t in toks]
                    total = first[ids_[0]] + logprobs[k, toks[:-1], ids_[1:]].sum()
                    scores[i][j] = float(total)
    return scores


def score_prompts(model, tokenizer, prompts: Sequence[ScoringPrompt], *, method: str = "cached",
                  batch_size: int = 32) -> list[np.ndarray]:
    """Per prompt, each option's summed log-prob; ``method`` 'cached' (default) or 'naive' (reference)."""
    if method == "cached":
        return score_cached(model, tokenizer, prompts, batch_size=batch_size)
    if method == "naive":
        return score_naive(model, tokenizer, prompts)
    raise ValueError(f"unknown scoring method {method!r}; accepted: 'cached', 'naive'")
