"""Label scoring on causal LMs: log p(label | prompt) for every candidate label, exact and fast.

A prompt is three text segments: a *prefix* (header + demonstrations), a *query* (the query word in its
template) and one *option* per candidate label. The scored sequence of an option is the tokenization of the
whole string ``prefix + query + option`` (as lm-eval-harness encodes context + continuation together): no
token a real prompt would not contain. The option's tokens are those after the longest common prefix of that
sequence with the tokenization of ``prefix + query``; the prefix's tokens are those it shares with the
tokenization of ``prefix``. A token the boundary cuts through (rare: a label merging with the query's last
characters) is a context token of that option only (its *lead*), read but not scored. The score of an option
is the sum of the log-probabilities of its tokens; the prediction is the argmax.

- :func:`score_naive`: one full forward per (prompt, option): the reference.
- :func:`score_cached`: every distinct prefix is run once (prefixes batched, left-padded) and its key-value
  cache read by one packed continuation row holding its queries and all their candidate labels (a 4D
  attention mask keeps the labels apart). Exact for position schemes read from position ids (rotary,
  learned absolute) when every sequence fits in the attention window.
- :func:`choose_method`: what ``method='auto'`` runs: ``naive`` for ALiBi models (BLOOM, MPT, Falcon with
  ``alibi``), models whose forward takes no position ids, and sliding-window models whose longest sequence
  exceeds the window; else ``cached``, after checking it against ``naive`` on the longest prompt.

Scoring conventions (:func:`convention_scores`), as lm-evaluation-harness names them, each an argmax over the
candidate labels of a different score:

- ``acc``: the summed log-prob of the label's tokens (the score above);
- ``acc_norm``: that sum divided by the label's length in characters, the continuation without its leading
  whitespace (lm-eval divides by ``len(choice)``, the choice string without its target delimiter ' '; for the
  ASCII labels of the built-in suites characters and UTF-8 bytes are the same count);
- ``acc_calibrated``: the sum minus the label's unconditional log-prob, the same continuation scored after the
  tokenizer's prefix token alone (BOS, else EOS): lm-eval's ``acc_mutual_info``, log p(label | prompt) -
  log p(label | empty context), a per-label bias correction in the spirit of Zhao et al.'s (2021) contextual
  calibration (which instead rescales probabilities estimated on a content-free input such as 'N/A').
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from mcicl.core.logs import progress
from mcicl.probing.extract import padding_token_id
from mcicl.probing.icl.icl_config import SCORING_METHODS as METHODS
from mcicl.probing.placement import input_device

log = logging.getLogger("mcicl")
# Largest |cached - naive| accepted by the check 'auto' runs before trusting the cached scorer.
CHECK_TOLERANCE = {"float32": 1e-3, "float64": 1e-6}
CHECK_TOLERANCE_HALF = 0.1


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
    """Token ids of one prompt: ``prefix + query + leads[j] + options[j]`` is the whole string's tokenization.

    ``prefix`` starts with the tokenizer's BOS when it adds one; ``options[j]`` are the scored tokens of
    option j; ``leads[j]`` (almost always empty) are context tokens that only option j's string has.
    """

    prefix: tuple[int, ...]
    query: tuple[int, ...]
    options: tuple[tuple[int, ...], ...]
    leads: tuple[tuple[int, ...], ...]

    def sequence(self, j: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(context ids, scored ids) of option ``j``."""
        return self.prefix + self.query + self.leads[j], self.options[j]


@dataclass(frozen=True)
class _Encoded:
    ids: tuple[int, ...]  # trailing special tokens (an appended EOS) removed
    n_leading_special: int


def _encode_all(tokenizer: Any, texts: list[str]) -> dict[str, _Encoded]:
    """Each text's ids with the tokenizer's special tokens, without trailing ones (an EOS is never scored)."""
    out: dict[str, _Encoded] = {}
    for i in range(0, len(texts), 512):
        chunk = texts[i:i + 512]
        enc = tokenizer(chunk, add_special_tokens=True, return_special_tokens_mask=True,
                        return_attention_mask=False, verbose=False)  # over-long prompts: refused by tokenize_prompts
        for text, ids, special in zip(chunk, enc["input_ids"], enc["special_tokens_mask"], strict=True):
            real = [k for k, s in enumerate(special) if not s]
            end = real[-1] + 1 if real else len(ids)
            out[text] = _Encoded(tuple(ids[:end]), real[0] if real else len(ids))
    return out


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_prompts(tokenizer: Any, prompts: Sequence[ScoringPrompt]) -> list[TokenizedPrompt]:
    """Split each option's whole-string tokenization into prefix, query, lead and scored tokens.

    Raises LabelTokenizationError for a label that leaves no token of its own, or a prompt without context.
    """
    texts: dict[str, None] = {}
    for p in prompts:
        if not p.options:
            raise ValueError(f"prompt with query {p.query!r} has no candidate labels")
        if p.prefix:
            texts[p.prefix] = None
        texts[p.prefix + p.query] = None
        for o in p.options:
            texts[p.prefix + p.query + o] = None
    enc = _encode_all(tokenizer, list(texts))
    limit = getattr(tokenizer, "model_max_length", None)
    out = []
    for p in prompts:
        context = p.prefix + p.query
        wholes = [enc[context + o].ids for o in p.options]
        longest = max(len(w) for w in wholes)
        if limit and limit < 10**7 and longest > limit:  # refused, not cut: a cut prompt loses demonstrations
            raise ValueError(f"a prompt with query {p.query.strip()[-40:]!r} is {longest:,} tokens, more than the "
                             f"model's {limit:,} positions; accepted: prompts of at most {limit:,} tokens (fewer "
                             "--shots, shorter words or a shorter template)")
        ctx = enc[context].ids
        cuts = [_common(ctx, w) for w in wholes]
        for text, whole, cut in zip(p.options, wholes, cuts, strict=True):
            if cut >= len(whole):
                raise LabelTokenizationError(
                    f"label continuation {text!r} adds no token of its own to {context[-40:]!r} with this tokenizer; "
                    "accepted: labels with at least one token (check the labels and the label template)")
        shared = min(cuts)
        if p.prefix:
            start = min(min(_common(enc[p.prefix].ids, w) for w in wholes), shared)
        else:  # no prefix: it holds only the special tokens the tokenizer puts first (BOS), if any
            start = min(enc[context + p.options[0]].n_leading_special, shared)
        first = wholes[0]
        if shared == 0:
            raise LabelTokenizationError(
                f"prompt for labels {list(p.options)} has no context tokens (empty prefix and query {p.query!r}, "
                "and no BOS token)")
        out.append(TokenizedPrompt(
            prefix=tuple(first[:start]), query=tuple(first[start:shared]),
            options=tuple(tuple(w[c:]) for w, c in zip(wholes, cuts, strict=True)),
            leads=tuple(tuple(w[shared:c]) for w, c in zip(wholes, cuts, strict=True))))
    return out


def _forward_kwargs(model: Any) -> tuple[str, bool]:
    """(name of the cache keyword of model.forward, whether it takes logits_to_keep)."""
    params = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def score_naive(model: Any, tokenizer: Any, prompts: Sequence[ScoringPrompt], *,
                tokenized: list[TokenizedPrompt] | None = None) -> list[np.ndarray]:
    """Per prompt, the summed log-prob of each option: one full forward per (prompt, option), no padding."""

    device = input_device(model)
    tokenized = tokenize_prompts(tokenizer, prompts) if tokenized is None else tokenized
    scores = []
    for tp in tokenized:
        row = []
        for j in range(len(tp.options)):
            context, option = tp.sequence(j)
            ids = torch.tensor([context + option], device=device)
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            # token at position len(context)+j is predicted by the logits at len(context)+j-1
            positions = range(len(context) - 1, len(context) + len(option) - 1)
            row.append(float(sum(logprobs[q, t] for q, t in zip(positions, option, strict=True))))
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

    def add(self, prompt: int, query: tuple[int, ...], options: tuple[tuple[int, ...], ...],
            leads: tuple[tuple[int, ...], ...]) -> None:
        q = max(self.query_id, default=-1) + 1
        start = len(self.tokens)
        self.tokens += query
        self.positions += range(len(query))
        self.query_id += [q] * len(query)
        self.option_id += [-1] * len(query)
        last_query = start + len(query) - 1 if query else -1
        for j, (lead, option) in enumerate(zip(leads, options, strict=True)):
            first = len(self.tokens)
            self.tokens += lead + option
            self.positions += range(len(query), len(query) + len(lead) + len(option))
            self.query_id += [q] * (len(lead) + len(option))
            self.option_id += [j] * (len(lead) + len(option))
            before = first + len(lead) - 1 if lead else last_query
            self.targets.append((prompt, j, before, list(range(first + len(lead), first + len(lead) + len(option)))))


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


def score_cached(model: Any, tokenizer: Any, prompts: Sequence[ScoringPrompt], batch_size: int = 32,
                 max_row_tokens: int = 1024, progress_desc: str | None = None, *,
                 tokenized: list[TokenizedPrompt] | None = None) -> list[np.ndarray]:
    """Per prompt, the summed log-prob of each option, running every distinct prefix once.

    Prefixes are batched (left-padded, position ids from the attention mask) and cached. The queries of a
    prefix and every candidate label of each query are then packed into one continuation row that reads
    that cache, with a 4D attention mask letting each label see only the prefix, its query and itself, and
    position ids restarting for each label: no token is computed twice and no cache is copied per label.
    ``batch_size`` bounds the prefixes per forward; ``max_row_tokens`` the length of a packed row.
    Exact only where :func:`cached_unsupported` finds nothing; ``score_prompts(method='auto')`` checks that.
    """

    device = input_device(model)
    dtype = next(model.parameters()).dtype
    cache_kw, has_keep = _forward_kwargs(model)
    pad_id = padding_token_id(tokenizer)
    tokenized = tokenize_prompts(tokenizer, prompts) if tokenized is None else tokenized
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
                tp = tokenized[i]
                size = len(split[i][1]) + sum(len(o) + len(le) for o, le in zip(tp.options, tp.leads, strict=True))
                if row.tokens and len(row.tokens) + size > max_row_tokens:
                    rows.append(row)
                    row = _Packed(b)
                row.add(i, split[i][1], tp.options, tp.leads)
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
                    # the first label token is predicted by the token before it (last query or lead token, or
                    # the prefix), the rest by the label's own previous token
                    first = last_logprobs[r.prefix] if before < 0 else logprobs[k, before]
                    ids_ = [r.tokens[t] for t in toks]
                    total = first[ids_[0]] + logprobs[k, toks[:-1], ids_[1:]].sum()
                    scores[i][j] = float(total)
    return scores


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def attention_window(model: Any) -> int | None:
    """The sliding attention window (tokens) some of the model's layers use, or None when all see everything."""
    text = _text_config(model)
    window = getattr(text, "sliding_window", None)
    if not isinstance(window, int) or getattr(text, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(text, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return window


def cached_unsupported(model: Any, longest: int) -> str | None:
    """Why :func:`score_cached` would not be exact for ``model`` on sequences of ``longest`` tokens, or None.

    The packed rows move label tokens next to each other and give them their true position ids; that is
    exact when positions reach attention only through position ids and every token sees all earlier ones.
    """
    text = _text_config(model)
    attn = getattr(text, "attn_config", None)
    if (getattr(text, "model_type", "") == "bloom" or getattr(text, "alibi", False) is True
            or getattr(attn, "alibi", False) is True or (isinstance(attn, dict) and attn.get("alibi"))):
        return "ALiBi position biases (they depend on key-query distances inside the packed row)"
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return f"{type(model).__name__}.forward takes no position_ids"
    window = attention_window(model)
    if window is not None and longest > window:
        return f"sliding attention window of {window} tokens, shorter than the longest sequence ({longest})"
    return None


CONVENTIONS = ("acc", "acc_norm", "acc_calibrated")
CONVENTION_RULES = {
    "acc": "argmax of the summed log-prob of the label's tokens",
    "acc_norm": "argmax of the summed log-prob divided by the label continuation's length in characters, leading "
                "whitespace excluded (lm-eval-harness acc_norm: len(choice))",
    "acc_calibrated": "argmax of the summed log-prob minus the label's log-prob after the prefix token alone (BOS, "
                      "else EOS): lm-eval-harness acc_mutual_info, log p(label | prompt) - log p(label | empty "
                      "context)",
}


def prefix_token_id(tokenizer: Any) -> int:
    """The token an empty context is made of (lm-eval's ``prefix_token_id``): BOS, else EOS."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise LabelTokenizationError("the tokenizer has neither a BOS nor an EOS token, so a label cannot be scored "
                                 "without context (acc_calibrated); accepted: a tokenizer with either")


def unconditional_logprobs(model: Any, tokenizer: Any, options: Sequence[str]) -> dict[str, float]:
    """Each distinct option's summed log-prob after the prefix token alone (lm-eval's ``("", continuation)``
    request: the option encoded by itself, without special tokens; if it starts with the prefix token itself,
    that token is the context)."""
    device = input_device(model)
    prefix = prefix_token_id(tokenizer)
    out: dict[str, float] = {}
    for option in dict.fromkeys(options):
        ids = list(tokenizer(option, add_special_tokens=False)["input_ids"])
        context, scored = ([prefix], ids) if not ids or ids[0] != prefix else (ids[:1], ids[1:])
        if not scored:
            raise LabelTokenizationError(f"label continuation {option!r} has no tokens of its own; accepted: "
                                         "labels with at least one token")
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([context + scored], device=device)).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        out[option] = float(sum(logprobs[len(context) - 1 + k, t] for k, t in enumerate(scored)))
    return out


def convention_scores(scores: Sequence[np.ndarray], options: Sequence[Sequence[str]],
                      unconditional: dict[str, float]) -> dict[str, list[np.ndarray]]:
    """Per convention of :data:`CONVENTIONS`, per prompt, one score per option (the prediction is the argmax):
    ``scores`` the summed log-probs, ``options`` each prompt's label continuations, ``unconditional`` from
    :func:`unconditional_logprobs`."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in CONVENTIONS}
    for row, opts in zip(scores, options, strict=True):
        row = np.asarray(row, dtype=float)
        lengths = np.array([max(1, len(o.lstrip())) for o in opts], dtype=float)
        out["acc"].append(row)
        out["acc_norm"].append(row / lengths)
        out["acc_calibrated"].append(row - np.array([unconditional[o] for o in opts]))
    return out


@dataclass
class ScoringResult:
    """Scores per prompt (one log-prob per option) and the method that produced them, with why."""

    scores: list[np.ndarray]
    method: str  # 'cached' | 'naive'
    requested: str  # 'auto' | 'cached' | 'naive'
    reason: str
    check: dict[str, Any] | None = None  # auto: cached vs naive on the longest prompt

    def record(self) -> dict[str, Any]:
        """The method, what was asked, why, and the check, for summary.json."""
        return {"method": self.method, "requested": self.requested, "reason": self.reason, "check": self.check}


def _check_tolerance(model: Any) -> float:
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    return CHECK_TOLERANCE.get(dtype, CHECK_TOLERANCE_HALF)


def score_prompts(model: Any, tokenizer: Any, prompts: Sequence[ScoringPrompt], *, method: str = "auto",
                  batch_size: int = 32) -> ScoringResult:
    """Each option's summed log-prob per prompt, with the method used: 'auto' (default), 'cached' or 'naive'.

    'auto' runs 'naive' where :func:`cached_unsupported` names a reason; otherwise it scores the longest
    prompt both ways and uses 'cached' if they agree (to 1e-3 nats in float32, 0.1 in 16-bit), else 'naive'.
    """
    if method not in METHODS:
        raise ValueError(f"unknown scoring method {method!r}; accepted: " + ", ".join(repr(m) for m in METHODS))
    tokenized = tokenize_prompts(tokenizer, prompts)
    if method == "naive":
        return ScoringResult(score_naive(model, tokenizer, prompts, tokenized=tokenized), "naive", method,
                             "requested")
    longest = max((sum(map(len, tp.sequence(j))) for tp in tokenized for j in range(len(tp.options))), default=0)
    why = cached_unsupported(model, longest)
    if method == "cached":
        if why is not None:
            raise ValueError(f"scoring 'cached' is not exact for {type(model).__name__}: {why}; accepted: "
                             "scoring 'auto' or 'naive'")
        return ScoringResult(score_cached(model, tokenizer, prompts, batch_size=batch_size, tokenized=tokenized),
                             "cached", method, "requested")
    if why is not None:
        log.info("scoring: naive (one forward per label), cached is not exact here: %s", why)
        return ScoringResult(score_naive(model, tokenizer, prompts, tokenized=tokenized), "naive", method, why)
    k = max(range(len(tokenized)), key=lambda i: sum(len(o) for o in tokenized[i].options) + len(tokenized[i].query)
            + len(tokenized[i].prefix))
    reference = score_naive(model, tokenizer, [prompts[k]], tokenized=[tokenized[k]])[0]
    scores = score_cached(model, tokenizer, prompts, batch_size=batch_size, tokenized=tokenized)
    diff, tol = float(np.abs(scores[k] - reference).max()), _check_tolerance(model)
    check = {"prompt": k, "max_abs_difference": diff, "tolerance": tol}
    if diff > tol:
        log.warning("scoring: cached differs from naive by %.3g nats on the longest prompt (tolerance %.3g); "
                    "scoring every prompt naively", diff, tol)
        return ScoringResult(score_naive(model, tokenizer, prompts, tokenized=tokenized), "naive", method,
                             f"cached failed its check against naive ({diff:.3g} > {tol:.3g} nats)", check)
    return ScoringResult(scores, "cached", method, "position ids and full attention: cached is exact", check)
