"""The model reads the whole prompt: in-prompt states and the query's attention on the demonstrations.

One forward pass per prompt (header + demonstrations + query line, tokenized as one string) gives, at the chosen
layer, the query word's state ``q`` (mean over its tokens in the query line) and each demonstration word's state
``k_d`` (mean over its tokens), and, for every layer and head, the query's attention mass on each demonstration
(its word and label tokens; averaged over the query's tokens). Two readouts use them
(:mod:`mcicl.probing.icl.readout`): ``in_prompt`` (softmax(beta * cos(q, k_d)) mass per label: the static kernel
applied to states the model computed while reading the prompt) and ``attention_vote`` (the model's own attention
as the weights, h = sum_d alpha_d y_d as in Bu et al.'s readout). Zero-shot prompts have no demonstrations: the
query line alone is read, and the keys are the candidate labels read as query lines of their own
(:func:`label_prompt`), so ``in_prompt`` at zero shots is the zero-demonstration limit of the same readout.

A query inside a sentence (the in_context conditions) is read at the ``{word}`` slot of its query line (after
the sentence), where an encoder's state has seen the sentence, as the demonstrations are read at theirs.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mcicl.core.logs import progress
from mcicl.probing.extract import model_body, padding_for, padding_token_id
from mcicl.probing.icl.attention import eager_attention, overlapping
from mcicl.probing.icl.tasks import IclPrompt, PromptTemplate
from mcicl.probing.placement import input_device


@dataclass(frozen=True)
class PromptSpans:
    """A prompt as one string with the character spans of each demonstration's word and label and the query."""

    text: str
    demo_words: tuple[tuple[int, int], ...]
    demo_labels: tuple[tuple[int, int], ...]
    query: tuple[int, int]


def prompt_spans(prompt: IclPrompt, template: PromptTemplate) -> PromptSpans:
    """The prompt exactly as the LM readout writes it (``prefix + query line``), with its spans."""
    text = template.header
    words, labels = [], []
    w_at, l_at = template.query.index("{word}"), template.label.index("{label}")
    for w, lab in prompt.demos:
        words.append((len(text) + w_at, len(text) + w_at + len(w)))
        text += template.query.format(word=w)
        labels.append((len(text) + l_at, len(text) + l_at + len(lab)))
        text += template.label.format(label=lab) + template.separator
    if prompt.query_context:
        tmpl = template.context_query
        at = len(tmpl[:tmpl.index("{word}")].replace("{context}", prompt.query_context))
        line = template.query_in_context(prompt.query_context, prompt.query)
    else:
        at, line = w_at, template.query_text(prompt.query)
    return PromptSpans(text + line, tuple(words), tuple(labels), (len(text) + at, len(text) + at + len(prompt.query)))


def label_prompt(label: str, template: PromptTemplate) -> PromptSpans:
    """A candidate label read as a query line of its own (``header + query line of the label``): a zero-shot key."""
    at = len(template.header) + template.query.index("{word}")
    return PromptSpans(template.header + template.query_text(label), (), (), (at, at + len(label)))


@dataclass
class PromptReading:
    """What one forward pass over a prompt yields: query and demonstration states, the query's attention."""

    query: np.ndarray  # (d,) the query word's state at the chosen layer
    demos: np.ndarray  # (D, d) each demonstration word's state at that layer
    attention: np.ndarray | None  # (layers, heads, D) the query's attention mass on each demonstration's tokens


def read_prompts(model: Any, tokenizer: Any, spans: Sequence[PromptSpans], layer: int, *, attention: bool = True,
                 batch_size: int = 32, show_progress: bool = False,
                 intervene: Callable[[list[int], list[list[int]]], AbstractContextManager] | None = None
                 ) -> list[PromptReading]:
    """One :class:`PromptReading` per prompt: hidden state ``layer`` (0 = embeddings) and, with ``attention``,
    every head's attention from the query tokens; batches padded as extraction pads them (a prompt in a batch reads
    as it reads alone). ``intervene(prompt indices, query token positions per row)`` (padded coordinates), when
    given, returns a context manager wrapped around that batch's forward (e.g. a residual-stream edit)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is a slow tokenizer; the in-prompt readouts need a fast "
                         "tokenizer (its offset_mapping locates words and labels): load one with use_fast=True")
    items = []
    for sp in spans:
        enc = tokenizer(sp.text, add_special_tokens=True, return_offsets_mapping=True,
                        return_special_tokens_mask=True)
        off, special = enc["offset_mapping"], enc["special_tokens_mask"]
        words = [overlapping(off, special, *s) for s in sp.demo_words]
        demo = [w + overlapping(off, special, *s) for w, s in zip(words, sp.demo_labels, strict=True)]
        query = overlapping(off, special, *sp.query)
        if not query or any(not w for w in words):
            raise ValueError(f"no tokens found for the query or a demonstration word in prompt {sp.text!r}")
        items.append((enc["input_ids"], words, demo, query))
    body = model_body(model)
    side = padding_for(model)
    params = inspect.signature(body.forward).parameters
    pad_id, device = padding_token_id(tokenizer), input_device(model)
    order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out: list[PromptReading | None] = [None] * len(items)
    context = eager_attention(model) if attention else contextlib.nullcontext()
    with context, torch.inference_mode():
        for batch in (progress(batches, desc="in-prompt") if show_progress else batches):
            width = max(len(items[i][0]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            shifts = []
            for row, i in enumerate(batch):
                n = len(items[i][0])
                shift = width - n if side == "left" else 0
                ids[row, shift:shift + n] = torch.tensor(items[i][0])
                mask[row, shift:shift + n] = 1
                shifts.append(shift)
            kwargs: dict[str, Any] = {"output_hidden_states": True, "output_attentions": attention,
                                      "return_dict": True}
            if side == "left":
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
            if "use_cache" in params:
                kwargs["use_cache"] = False
            edit = (intervene(list(batch), [[t + s for t in items[i][3]] for i, s in zip(batch, shifts, strict=True)])
                    if intervene is not None else contextlib.nullcontext())
            with edit:
                res = body(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
            hidden = res.hidden_states[layer].float()
            for row, i in enumerate(batch):
                _, words, demo, query = items[i]
                s = shifts[row]
                h = hidden[row]
                q = h[[t + s for t in query]].mean(0).cpu().numpy()
                d = (torch.stack([h[[t + s for t in w]].mean(0) for w in words]).cpu().numpy() if words
                     else np.zeros((0, h.shape[-1]), dtype=np.float32))
                att = None
                if attention:
                    rows = torch.stack([a[row][:, [t + s for t in query]].float().mean(1) for a in res.attentions])
                    att = (torch.stack([rows[..., [t + s for t in dm]].sum(-1) for dm in demo], dim=-1).cpu().numpy()
                           if demo else np.zeros(rows.shape[:2] + (0,), dtype=np.float32))
                out[i] = PromptReading(q, d, att)
    return out  # type: ignore[return-value]

