"""Correct attention in real models: how much a query attends to demonstrations that share its concept.

The paper's central quantity (Bu et al. 2024, Figure 2 (ii)) measured per layer and head on the ICL prompts of
:class:`mcicl.probing.icl.tasks.IclSampler` (same conditions, same seeds). For one prompt and one head, with
``a_t`` the attention of the query position on token ``t`` (averaged over the query's tokens when there are
several) and ``T_d`` the tokens of demonstration ``d``::

    value  = sum_{d: concept(d) = concept(query)} sum_{t in T_d} a_t  /  sum_d sum_{t in T_d} a_t
    chance = sum_{d matching} |T_d| / sum_d |T_d|      (uniform attention over demonstration tokens)

``T_d`` is the demonstration's word tokens (``kind='word'``), its label tokens (``'label'``) or both
(``'demo'``), located by character offsets in the whole prompt tokenized as one string. The query position is
the last prompt token for a causal LM and the query word's tokens for an encoder (``query_position``).

Three nulls, each a permutation test of the mean over prompts that permutes whole episodes (an episode's prompts
share their demonstrations, so they move together), so a head that reads positions, recency, a preferred concept or
the label text cannot pass for one that matches the query's concept:

- ``null`` (concept permutation): the same attention, the demonstrations' concepts permuted, one permutation per
  episode;
- ``position_null`` (position-matched): the prompt's matching demonstration *slots* read in the attention of the
  same-rank prompt of another episode, whose matching demonstrations sit elsewhere;
- ``query_null`` (query swap): within an episode (same demonstrations) queries of different concepts are paired
  and trade concepts, so each swapped prompt reads a query of *another* concept (identity and same-concept swaps
  excluded; a pair holds one query of each concept, so the swapped queries keep their concept counts): a head
  whose attention ignores the query scores the same. Its value is the swapped reading over the paired prompts
  (``query_prompts``; their observed value is ``query_observed``); its test flips each episode between its own
  queries and the swap. Unavailable (NaN) where no episode has queries of two concepts (polysemous-query
  episodes, whose queries share a concept by construction).

A head's p-value is the largest of its tests; the correction for the number of heads is Westfall & Young's
max-T: a head's corrected p is the share of permutations in which *some* head's standardised null statistic
reaches this head's standardised value. ``null_max`` is the largest null mean. Intervals: percentile
bootstrap over episodes. :func:`head_stability` compares heads across independent episode sets: the overlap
(Jaccard) of their significant heads and the Spearman rank correlation of their values, set pair by set pair.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import rankdata

from mcicl.analysis.engine.nulls import maxt_p
from mcicl.core.configuration import require, to_dict
from mcicl.core.jobs import DemoContext, JobContext, Table
from mcicl.core.logs import progress
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.extract import ExtractionConfig, model_body, padding_for, padding_token_id
from mcicl.probing.hooks import head_output_projections, knockout, n_heads  # noqa: F401  (imported from here)
from mcicl.probing.icl.attention_config import (  # noqa: F401  (imported from here)
    ATTENTION_CONDITIONS,
    QUERY_POSITIONS,
    AttentionConfig,
)
from mcicl.probing.icl.attention_figures import attention_figures, save_attention_figures
from mcicl.probing.icl.episodes import EpisodeConfig
from mcicl.probing.icl.scoring import ScoringPrompt, score_prompts
from mcicl.probing.icl.tasks import IclPrompt, IclSampler, PromptTemplate, load_suite
from mcicl.probing.models import LoadedModel, load_model
from mcicl.probing.placement import input_device, resolve_device
from mcicl.probing.tiny import is_random_weights

log = logging.getLogger("mcicl")

KINDS = ("demo", "word", "label")


@dataclass(frozen=True)
class PromptLayout:
    """One prompt tokenized as a whole string, with the token positions of each part.

    ``demo_words[d]`` / ``demo_labels[d]``: positions of demonstration ``d``'s word / label tokens;
    ``query``: positions the query attends from; ``match[d]``: whether ``d``'s concept is the query's.
    """

    ids: tuple[int, ...]
    demo_words: tuple[tuple[int, ...], ...]
    demo_labels: tuple[tuple[int, ...], ...]
    query: tuple[int, ...]
    match: tuple[bool, ...]


def overlapping(offsets: Sequence[tuple[int, int]], special: Sequence[int], start: int, end: int) -> tuple[int, ...]:
    """Token positions whose character span overlaps [start, end) (special and empty tokens excluded)."""
    return tuple(t for t, ((s, e), sp) in enumerate(zip(offsets, special, strict=True))
                 if not sp and e > s and s < end and e > start)


def prompt_text(prompt: IclPrompt, template: PromptTemplate) -> tuple[str, list[tuple[int, int]],
                                                                      list[tuple[int, int]], tuple[int, int]]:
    """(the prompt as one string, char spans of each demonstration word, of each label, of the query word)."""
    text = template.header
    words, labels = [], []
    w_at, l_at = template.query.index("{word}"), template.label.index("{label}")
    for w, lab in prompt.demos:
        line = template.query.format(word=w)
        words.append((len(text) + w_at, len(text) + w_at + len(w)))
        text += line
        labels.append((len(text) + l_at, len(text) + l_at + len(lab)))
        text += template.label.format(label=lab) + template.separator
    if text != template.prefix(prompt.demos):
        raise AssertionError("prompt_text diverged from PromptTemplate.prefix")  # the two must build one string
    query = (len(text) + w_at, len(text) + w_at + len(prompt.query))
    text += template.query_text(prompt.query)
    return text, words, labels, query


def layout_prompts(tokenizer: Any, prompts: Sequence[IclPrompt], template: PromptTemplate,
                   query_position: Literal["last", "word"]) -> list[PromptLayout]:
    """The :class:`PromptLayout` of each prompt (whole-string tokenization, char offsets locate every part)."""
    require(query_position in ("last", "word"), "query_position", query_position, "'last' or 'word'")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is a slow tokenizer; the attention probe needs a fast "
                         "tokenizer (its offset_mapping locates words and labels): load one with use_fast=True")
    out = []
    limit = getattr(tokenizer, "model_max_length", None)
    for p in prompts:
        text, words, labels, query = prompt_text(p, template)
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True,
                        verbose=False)  # an over-long prompt is refused below
        ids, offsets, special = enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
        if limit and limit < 10**7 and len(ids) > limit:
            raise ValueError(f"a {p.shots}-shot prompt is {len(ids)} tokens, more than the model's maximum of "
                             f"{limit}; accepted: fewer --shots or a shorter template")
        demo_words = tuple(overlapping(offsets, special, *span) for span in words)
        demo_labels = tuple(overlapping(offsets, special, *span) for span in labels)
        if query_position == "word":
            q = overlapping(offsets, special, *query)
        else:
            q = (max(t for t, sp in enumerate(special) if not sp),)  # the last prompt token (not a trailing [SEP])
        empty = [w for (w, _), toks in zip(p.demos, demo_words, strict=True) if not toks]
        if empty or not q:
            raise ValueError(f"no tokens found for word(s) {empty or [p.query]} in prompt {text!r}")
        # A label token that also covers part of the word (no separator between them) would be counted twice.
        overlap = [d for d in range(len(p.demos)) if set(demo_words[d]) & set(demo_labels[d])]
        if overlap:
            raise ValueError(f"in prompt {text!r} a token spans both a word and its label; accepted: a template "
                             "with a separator between word and label (the default '{word} ->' + ' {label}')")
        match = tuple(c == p.query_concept for c in p.demo_concepts)
        out.append(PromptLayout(tuple(ids), demo_words, demo_labels, q, match))
    return out


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Run ``model`` with eager attention (whose probabilities ``output_attentions`` returns), then restore."""
    before = getattr(model.config, "_attn_implementation", None)
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before not in (None, "eager"):
            model.set_attn_implementation(before)


def query_attention(model: Any, tokenizer: Any, layouts: Sequence[PromptLayout], *, batch_size: int = 16,
                    show_progress: bool = True) -> list[np.ndarray]:
    """Per prompt, the attention of its query position(s) on every prompt token: (layers, heads, tokens).

    Eager attention probabilities from ``output_attentions``, averaged over the query's tokens. Batches are
    padded as extraction pads them (left with explicit positions for causal LMs, right for encoders), so a
    prompt in a batch gets the rows it gets alone.
    """
    require(batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
    body = model_body(model)
    side = padding_for(model)
    params = inspect.signature(body.forward).parameters
    pad_id = padding_token_id(tokenizer)
    device = input_device(model)
    order = sorted(range(len(layouts)), key=lambda i: -len(layouts[i].ids))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out: list[np.ndarray | None] = [None] * len(layouts)
    with eager_attention(model), torch.inference_mode():
        for batch in (progress(batches, desc="attention") if show_progress else batches):
            width = max(len(layouts[i].ids) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            shifts = []
            for row, i in enumerate(batch):
                n = len(layouts[i].ids)
                shift = width - n if side == "left" else 0
                ids[row, shift:shift + n] = torch.tensor(layouts[i].ids)
                mask[row, shift:shift + n] = 1
                shifts.append(shift)
            kwargs: dict[str, Any] = {"output_attentions": True, "return_dict": True}
            if side == "left":
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
            if "use_cache" in params:
                kwargs["use_cache"] = False
            attn = body(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).attentions
            if not attn or attn[0] is None:
                raise ValueError(f"{type(model).__name__} returned no attention probabilities even with eager "
                                 "attention; the attention probe needs a model that supports output_attentions")
            for row, i in enumerate(batch):  # only the query rows leave the device: (L, H, n) per prompt
                s, n = shifts[row], len(layouts[i].ids)
                q = torch.tensor(layouts[i].query, device=attn[0].device) + s
                out[i] = torch.stack([a[row][:, q, s:s + n].float().mean(dim=1) for a in attn]).cpu().numpy()
    return out  # type: ignore[return-value]


def demo_masses(rows: Sequence[np.ndarray], layouts: Sequence[PromptLayout], kind: str) -> np.ndarray:
    """Attention mass on each demonstration's tokens of ``kind``: (prompts, demos, layers, heads)."""
    require(kind in KINDS, "kind", kind, "one of " + ", ".join(KINDS))
    n_demos = {len(lay.match) for lay in layouts}
    require(len(n_demos) == 1, "layouts", sorted(n_demos), "prompts with the same number of demonstrations")
    out = []
    for row, lay in zip(rows, layouts, strict=True):
        spans = [(lay.demo_words[d] if kind != "label" else ()) + (lay.demo_labels[d] if kind != "word" else ())
                 for d in range(len(lay.match))]
        out.append(np.stack([row[:, :, list(s)].sum(-1) for s in spans]))
    return np.stack(out)


def token_counts(layouts: Sequence[PromptLayout], kind: str) -> np.ndarray:
    """Number of tokens of ``kind`` per demonstration: (prompts, demos)."""
    return np.array([[len(lay.demo_words[d]) * (kind != "label") + len(lay.demo_labels[d]) * (kind != "word")
                      for d in range(len(lay.match))] for lay in layouts], dtype=float)


@dataclass
class HeadStats:
    """Per-head statistics of one (condition, shots, kind) cell; arrays are (layers, heads)."""

    value: np.ndarray
    chance: float
    null: np.ndarray
    position_null: np.ndarray  # NaN when the cell has one episode
    query_null: np.ndarray  # NaN when no episode has queries of two concepts (e.g. polysemous queries)
    p_value: np.ndarray
    p_corrected: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    demo_mass: np.ndarray
    per_prompt: np.ndarray  # (prompts, layers, heads): each prompt's value
    n_prompts: int
    n_episodes: int
    query_observed: np.ndarray  # the value over the prompts the query-swap null covers (NaN: none)
    query_prompts: int  # prompts paired with a query of another concept of their episode

    @property
    def null_max(self) -> np.ndarray:
        """The largest of the nulls available, per head (L, H): the bar a concept-matching head must clear."""
        return np.fmax(np.fmax(self.null, self.position_null), self.query_null)


def head_statistics(masses: np.ndarray, counts: np.ndarray, demo_concepts: np.ndarray, query_concepts: np.ndarray,
                    episodes: np.ndarray, total_mass: np.ndarray, *, n_permutations: int = 1000,
                    n_boot: int = 1000, seed: int = 0) -> HeadStats:
    """Value, nulls, p-values and episode-bootstrap CI per head from per-demonstration attention masses.

    ``masses`` (P, D, L, H): mass on each demonstration's tokens; ``counts`` (P, D): their token counts;
    ``demo_concepts`` (P, D) and ``query_concepts`` (P,): concept ids; ``episodes`` (P,): episode ids (prompts
    of one episode share their demonstrations; the bootstrap unit); ``total_mass`` (P, L, H): the query's
    whole attention (for ``demo_mass``, the share of it on demonstrations).
    """
    demo_concepts, query_concepts = np.asarray(demo_concepts), np.asarray(query_concepts)
    n_prompts, n_demos = demo_concepts.shape
    require(n_demos >= 1, "shots", n_demos, "at least one demonstration (zero-shot prompts have nothing to attend)")
    episodes = np.asarray(episodes)
    rng = np.random.default_rng(seed)
    tot = masses.sum(1)  # (P, L, H)
    share = masses / np.where(tot > 0, tot, 1.0)[:, None]  # (P, D, L, H)
    m = (demo_concepts == query_concepts[:, None]).astype(float)
    per_prompt = np.einsum("pd,pdlh->plh", m, share)
    value = per_prompt.mean(0)
    chance = float(np.mean((m * counts).sum(1) / counts.sum(1)))
    ids, inverse = np.unique(episodes, return_inverse=True)
    members = [np.flatnonzero(inverse == e) for e in range(len(ids))]
    rank = np.zeros(n_prompts, dtype=int)
    for mem in members:
        rank[mem] = np.arange(len(mem))

    # Every null permutes whole episodes (an episode's prompts share their demonstrations, so they move together).
    # concept permutation: the same attention, the demonstrations' concepts permuted, one permutation per episode
    slots = rng.permuted(np.broadcast_to(np.arange(n_demos), (n_permutations, len(ids), n_demos)), axis=2)
    shuffled = np.take_along_axis(np.broadcast_to(demo_concepts, (n_permutations,) + demo_concepts.shape),
                                  slots[:, inverse], axis=2)
    perm = (shuffled == query_concepts[None, :, None]).astype(float)
    nulls = {"null": np.einsum("bpd,pdlh->blh", perm, share) / n_prompts}
    # position-matched: the same demonstration slots read in the attention of another episode's prompts (the k-th
    # prompt of episode e in the k-th of episode e', one e' per episode and permutation)
    if len(ids) > 1:
        other = np.empty((n_permutations, n_prompts), dtype=int)
        for e, mem in enumerate(members):
            partner = rng.integers(len(ids) - 1, size=n_permutations)
            partner += partner >= e  # never the episode itself
            if len({len(m_) for m_ in members}) == 1:  # equal episodes: one gather
                other[:, mem] = np.stack(members)[partner][:, rank[mem] % len(mem)]
                continue
            for b in range(n_permutations):
                pool = members[partner[b]]
                other[b, mem] = pool[rank[mem] % len(pool)]
        nulls["position_null"] = np.stack([np.einsum("pd,pdlh->lh", m, share[o]) for o in other]) / n_prompts
    # query swap: within an episode (same demonstrations) queries of different concepts are paired and trade
    # concepts (identity and same-concept swaps excluded; a pair holds one query of each of its two concepts, so
    # the swapped queries keep the episode's concept counts); unpaired queries are left out of this null. The
    # null's value is the swapped reading; its test flips each episode between its own queries and the swap.
    swapped, flipped, kept = [], [], []
    for mem in members:
        pairs = concept_pairs(query_concepts[mem], rng)
        if len(pairs):
            rows_e = mem[pairs.ravel()]
            partner = mem[pairs[:, ::-1].ravel()]
            kept.append(rows_e)
            swapped.append(np.broadcast_to(partner, (n_permutations, len(rows_e))))
            flipped.append(np.where(rng.random(n_permutations)[:, None] < 0.5, partner[None], rows_e[None]))
    query_prompts = int(sum(len(mem) for mem in kept))
    swap_mean = None
    if kept:
        rows = np.concatenate(kept)

        def reading(to: np.ndarray) -> np.ndarray:  # (B, kept prompts): whose query concept each prompt receives
            q_match = (demo_concepts[rows][None] == query_concepts[to][:, :, None]).astype(float)
            return np.einsum("bpd,pdlh->blh", q_match, share[rows]) / len(rows)
        swap_mean = reading(np.concatenate(swapped, axis=1)[:1])[0]
        nulls["query_null"] = reading(np.concatenate(flipped, axis=1))
        query_observed = per_prompt[rows].mean(0)
    else:
        query_observed = np.full(value.shape, np.nan)
    tests = [maxt_p(query_observed if name == "query_null" else value, d) for name, d in nulls.items()]

    sums = np.zeros((len(ids),) + value.shape)
    np.add.at(sums, inverse, per_prompt)
    sizes = np.bincount(inverse, minlength=len(ids)).astype(float)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    boot = sums[draws].sum(1) / sizes[draws].sum(1)[:, None, None]
    low, high = np.quantile(boot, [0.025, 0.975], axis=0)
    nan = np.full(value.shape, np.nan)
    return HeadStats(value=value, chance=chance, null=nulls["null"].mean(0),
                     position_null=nulls["position_null"].mean(0) if "position_null" in nulls else nan,
                     query_null=swap_mean if swap_mean is not None else nan,
                     p_value=np.max([t[0] for t in tests], axis=0), p_corrected=np.max([t[1] for t in tests], axis=0),
                     ci_low=low, ci_high=high, demo_mass=(tot / np.where(total_mass > 0, total_mass, 1.0)).mean(0),
                     per_prompt=per_prompt, n_prompts=n_prompts, n_episodes=len(ids),
                     query_observed=query_observed, query_prompts=query_prompts)


def concept_pairs(concepts: Sequence[int] | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random maximal pairing of an episode's queries of different concepts: (pairs, 2) indices into
    ``concepts``, every pair two queries of two concepts (never a query with itself or one of its own concept)."""
    c = np.asarray(concepts)
    free = list(rng.permutation(len(c)))
    out = []
    while free:
        i = free.pop(0)
        j = next((k for k in free if c[k] != c[i]), None)
        if j is not None:
            free.remove(j)
            out.append((i, j))
    return np.array(out, dtype=int).reshape(len(out), 2)


def head_stability(values: Sequence[np.ndarray], significant: Sequence[np.ndarray]) -> dict[str, Any]:
    """How well independent episode sets agree on the heads: per pair of sets, the Spearman rank correlation of the
    head values (average ranks for ties) and the Jaccard overlap of the significant heads (1 when both sets have
    none); their means; each set's count of significant heads and the count significant in every set."""
    require(len(values) >= 2 and len(values) == len(significant), "values", len(values),
            "at least two episode sets, as many value arrays as significance masks")
    flat = [np.asarray(v, dtype=float).ravel() for v in values]
    sig = [np.asarray(m, dtype=bool).ravel() for m in significant]
    pairs = list(itertools.combinations(range(len(flat)), 2))
    rho = [float(np.corrcoef(rankdata(flat[i]), rankdata(flat[j]))[0, 1]) for i, j in pairs]
    jac = [float((sig[i] & sig[j]).sum() / (sig[i] | sig[j]).sum()) if (sig[i] | sig[j]).any() else 1.0
           for i, j in pairs]
    return {"pairs": [list(p) for p in pairs], "spearman": rho, "mean_spearman": float(np.mean(rho)),
            "jaccard": jac, "mean_jaccard": float(np.mean(jac)), "significant": [int(m.sum()) for m in sig],
            "significant_in_all": int(np.logical_and.reduce(sig).sum()), "heads": int(flat[0].size)}


def cell_statistics(rows: Sequence[np.ndarray], layouts: Sequence[PromptLayout], prompts: Sequence[IclPrompt],
                    kind: str, *, n_permutations: int = 1000, n_boot: int = 1000, seed: int = 0) -> HeadStats:
    """:func:`head_statistics` of one (condition, shots) cell of prompts for token ``kind``."""
    masses = demo_masses(rows, layouts, kind)
    total = np.stack([r.sum(-1) for r in rows])
    names = {c: i for i, c in enumerate(dict.fromkeys(c for p in prompts for c in (*p.demo_concepts,
                                                                                    p.query_concept)))}
    demos: dict[tuple[str, int, int], tuple] = {}
    for p in prompts:  # the query-swap null relies on an episode's prompts sharing their demonstrations
        if demos.setdefault((p.condition, p.shots, p.episode), p.demos) != p.demos:
            raise ValueError(f"prompts of episode {p.episode} ({p.condition}, {p.shots} shots) have different "
                             "demonstrations; accepted: prompts drawn by IclSampler (one set of demonstrations per "
                             "episode)")
    keys = {k: i for i, k in enumerate(dict.fromkeys((p.condition, p.shots, p.episode) for p in prompts))}
    episodes = np.array([keys[(p.condition, p.shots, p.episode)] for p in prompts])
    return head_statistics(masses, token_counts(layouts, kind),
                           np.array([[names[c] for c in p.demo_concepts] for p in prompts]),
                           np.array([names[p.query_concept] for p in prompts]), episodes, total,
                           n_permutations=n_permutations, n_boot=n_boot, seed=seed)


@dataclass
class AttentionResult:
    """What :func:`measure_attention` returns: CSV rows, the chosen heads, per-prompt records, the summary."""

    rows: list[dict[str, Any]]  # attention.csv: one row per (condition, shots, kind, layer, head)
    top_heads: list[tuple[int, int]]
    prompts: list[IclPrompt]  # the measured prompts, cell by cell
    prompt_rows: list[dict[str, Any]]  # prompts.csv: one row per measured prompt, in ``prompts`` order
    summary: dict[str, Any]
    config: AttentionConfig | None = None  # what was measured (config.yaml); None: not recorded

    def figures(self) -> dict[str, Figure]:
        """The heatmap of correct attention minus null per head, and the top heads over shots."""
        return attention_figures(self.rows, self.summary)

    def save(self, run: RunFolder) -> None:
        """Write config.yaml, attention.csv, prompts.csv, summary.json and the figures into ``run``."""
        if self.config is not None:
            run.save_config(to_dict(self.config))
        run.write_csv("attention.csv", self.rows)
        run.write_csv("prompts.csv", self.prompt_rows)
        run.write_summary(self.summary)
        save_attention_figures(self.rows, self.summary, run.figures)


def _head_rows(stats: HeadStats, condition: str, shots: int, kind: str) -> list[dict[str, Any]]:
    n_layers, n_h = stats.value.shape
    return [{"layer": layer, "head": head, "condition": condition, "shots": shots, "kind": kind,
             "value": float(stats.value[layer, head]), "chance": stats.chance,
             "null": float(stats.null[layer, head]), "position_null": float(stats.position_null[layer, head]),
             "query_null": float(stats.query_null[layer, head]), "null_max": float(stats.null_max[layer, head]),
             "p_value": float(stats.p_value[layer, head]), "p_corrected": float(stats.p_corrected[layer, head]),
             "ci_low": float(stats.ci_low[layer, head]), "ci_high": float(stats.ci_high[layer, head]),
             "demo_mass": float(stats.demo_mass[layer, head]), "n_prompts": stats.n_prompts,
             "n_episodes": stats.n_episodes}
            for layer in range(n_layers) for head in range(n_h)]


def excess(stats: HeadStats) -> np.ndarray:
    """Value minus the largest null, per head (L, H): what concept matching adds."""
    return stats.value - stats.null_max


def measure_attention(config: AttentionConfig, loaded: LoadedModel, concept_set: ConceptSet,
                      *, show_progress: bool = True) -> AttentionResult:
    """Measure correct attention per layer and head on every (condition, shots) cell (no files written)."""
    cs = concept_set
    if "polysemous_query" in config.prompts.conditions and not cs.polysemy:
        raise ValueError(f"condition polysemous_query needs polysemous words, but concept set {cs.name!r} lists "
                         "none; use suite='polysemy', add polysemy=FILE, or leave polysemous_query out of "
                         "conditions")
    episodes = config.prompts
    sampler = IclSampler(cs, ways=episodes.ways, queries_per_episode=episodes.queries_per_episode,
                         novel_fraction=episodes.novel_fraction, arbitrary_label_sets=tuple(episodes.arbitrary_labels),
                         split_seed=config.seed)
    cells = [(c, s) for c in config.prompts.conditions for s in config.prompts.shots]
    for c, s in cells:
        sampler.check_shots(c, s)
    query_position = config.query_position
    if query_position == "auto":
        query_position = "last" if loaded.causal else "word"
    model, tokenizer = loaded.model, loaded.tokenizer
    top_shots = max(config.prompts.shots)
    # The top heads are chosen on held-out in-distribution episodes (seed + 1), so the values reported for
    # them on the measured prompts are not inflated by the choice.
    held_out = sampler.sample("in_distribution", top_shots, config.prompts.episodes, config.seed + 1)
    prompts = {cell: sampler.sample(*cell, config.prompts.episodes, config.seed) for cell in cells}
    every = held_out + [p for ps in prompts.values() for p in ps]
    layouts = layout_prompts(tokenizer, every, config.prompts.template, query_position)
    rows_all = query_attention(model, tokenizer, layouts, batch_size=config.batch_size, show_progress=show_progress)
    log.info("attention probe: %d prompts in %d cells (+%d held out), query position %s", len(every) - len(held_out),
             len(cells), len(held_out), query_position)

    n = len(held_out)
    chooser = cell_statistics(rows_all[:n], layouts[:n], held_out, "demo", n_permutations=config.permutations,
                              n_boot=config.bootstrap, seed=config.seed)
    score = excess(chooser)
    flat = np.argsort(-score, axis=None, kind="stable")[:config.top_k]
    top_heads = [tuple(int(i) for i in np.unravel_index(f, score.shape)) for f in flat]

    csv_rows: list[dict[str, Any]] = []
    prompt_rows: list[dict[str, Any]] = []
    cell_summary: dict[str, Any] = {}
    start = n
    for (cond, s), ps in progress(list(prompts.items()), desc="attention statistics") if show_progress \
            else prompts.items():
        rows, lays = rows_all[start:start + len(ps)], layouts[start:start + len(ps)]
        start += len(ps)
        for kind in KINDS:
            stats = cell_statistics(rows, lays, ps, kind, n_permutations=config.permutations,
                                    n_boot=config.bootstrap, seed=config.seed)
            csv_rows += _head_rows(stats, cond, s, kind)
            if kind == "demo":
                best = np.unravel_index(int(np.argmax(excess(stats))), stats.value.shape)
                cell_summary.setdefault(cond, {})[str(s)] = {
                    "best_head": [int(best[0]), int(best[1])], "best_value": float(stats.value[best]),
                    "best_null": float(stats.null_max[best]),
                    "best_p_corrected": float(stats.p_corrected[best]), "chance": stats.chance,
                    "significant_heads": int((stats.p_corrected < config.alpha).sum()),
                    "top_heads_value": float(np.mean([stats.value[h] for h in top_heads])),
                    "top_heads_null": float(np.mean([stats.null_max[h] for h in top_heads])),
                }
                for p, lay, v in zip(ps, lays, stats.per_prompt, strict=True):
                    prompt_rows.append({
                        "condition": cond, "shots": s, "episode": p.episode, "task": p.task, "query": p.query,
                        "query_concept": p.query_concept, "gold": p.gold,
                        "matching_demos": int(sum(lay.match)),
                        "top_heads_value": float(np.mean([v[h] for h in top_heads])),
                        "demonstrations": " | ".join(f"{w}:{c}" for (w, _), c in zip(p.demos, p.demo_concepts,
                                                                                    strict=True)),
                    })
    n_layers, n_h = chooser.value.shape
    summary = {
        "model": loaded.ref.name, "causal": loaded.causal, "random_weights": is_random_weights(loaded.ref.location),
        "query_position": query_position, "layers": n_layers, "heads": n_h, "suite": config.prompts.suite,
        "concept_set": cs.name, "ways": config.prompts.ways, "alpha": config.alpha,
        "top_heads": [{"layer": layer, "head": head, "held_out_value": float(chooser.value[layer, head]),
                       "held_out_null": float(chooser.null_max[layer, head]),
                       "held_out_p_corrected": float(chooser.p_corrected[layer, head])}
                      for layer, head in top_heads],
        "cells": cell_summary, "prompts": len(every) - len(held_out), "held_out_prompts": len(held_out),
    }
    return AttentionResult(csv_rows, top_heads, [p for ps in prompts.values() for p in ps], prompt_rows, summary,
                           config)


def lm_correct(loaded: LoadedModel, prompts: Sequence[IclPrompt], template: PromptTemplate,
               batch_size: int = 16) -> np.ndarray:
    """Whether a causal LM's highest-scoring label is the gold one, per prompt (the ``probe icl`` scorer)."""
    scoring = [ScoringPrompt(template.prefix(p.demos), template.query_text(p.query),
                             tuple(template.option(lab) for lab in p.labels)) for p in prompts]
    scores = score_prompts(loaded.model, loaded.tokenizer, scoring, batch_size=batch_size).scores
    return np.array([int(np.argmax(s)) == p.labels.index(p.gold) for s, p in zip(scores, prompts, strict=True)])


def behaviour(config: AttentionConfig, loaded: LoadedModel, result: AttentionResult,
              cell: tuple[str, int]) -> dict[str, Any]:
    """For a causal LM: correct attention of the top heads against right answers, and top-k vs random knockout.

    The knockout runs on the prompts of ``cell``; a ``correct`` column is added to ``result.prompt_rows``.
    """
    prompts = result.prompts
    template = config.prompts.template
    correct = lm_correct(loaded, prompts, template, config.batch_size)
    for row, ok in zip(result.prompt_rows, correct, strict=True):
        row["correct"] = int(ok)
    value = np.array([r["top_heads_value"] for r in result.prompt_rows])
    link = {"mean_value_correct": float(value[correct].mean()) if correct.any() else float("nan"),
            "mean_value_wrong": float(value[~correct].mean()) if (~correct).any() else float("nan"),
            "point_biserial_r": float(np.corrcoef(value, correct)[0, 1])
            if 0 < correct.sum() < len(correct) and value.std() > 0 else float("nan"),
            "n_correct": int(correct.sum()), "n": len(correct)}
    sel = [i for i, p in enumerate(prompts) if (p.condition, p.shots) == cell]
    cell_prompts = [prompts[i] for i in sel]
    base = float(correct[sel].mean())
    with knockout(loaded.model, result.top_heads):
        top = float(lm_correct(loaded, cell_prompts, template, config.batch_size).mean())
    rng = np.random.default_rng([config.seed, 13])
    n_layers, n_h = result.summary["layers"], result.summary["heads"]
    others = [(layer, h) for layer in range(n_layers) for h in range(n_h) if (layer, h) not in result.top_heads]
    k = min(len(result.top_heads), len(others))
    random_acc = []
    for _ in range(config.knockout_draws):
        heads = [others[i] for i in rng.choice(len(others), size=k, replace=False)]
        with knockout(loaded.model, heads):
            random_acc.append(float(lm_correct(loaded, cell_prompts, template, config.batch_size).mean()))
    return {"attention_vs_correct": link,
            "knockout": {"condition": cell[0], "shots": cell[1], "n_prompts": len(sel), "k": k,
                         "accuracy": base, "top_k_knocked_out": top, "random_k_knocked_out": random_acc,
                         "random_k_mean": float(np.mean(random_acc)),
                         "top_k_drop": base - top, "random_k_drop": base - float(np.mean(random_acc))}}


def attention_probe(config: AttentionConfig, *, loaded: LoadedModel | None = None,
                    concept_set: ConceptSet | None = None, show_progress: bool = True) -> AttentionResult:
    """Measure correct attention (:func:`measure_attention`) and, for a causal LM, its link to behaviour; returns
    the :class:`AttentionResult` (nothing written to disk)."""
    cs = concept_set if concept_set is not None else load_suite(config.prompts.suite, config.prompts.polysemy)
    if loaded is None:
        ext = config.extraction
        device, device_map = resolve_device(ext.device)
        loaded = load_model(ext.model, dtype=ext.dtype, device=device, device_map=device_map,
                            trust_remote_code=ext.trust_remote_code, revision=ext.revision)
    result = measure_attention(config, loaded, cs, show_progress=show_progress)
    if loaded.causal:
        conditions = config.prompts.conditions
        cond = "in_distribution" if "in_distribution" in conditions else conditions[0]
        result.summary["behaviour"] = behaviour(config, loaded, result, (cond, max(config.prompts.shots)))
    return result


def run_attention(config: AttentionConfig, run: RunFolder, *, loaded: LoadedModel | None = None,
                  concept_set: ConceptSet | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Run the probe into ``run``: config.yaml, attention.csv, prompts.csv, summary.json, figures; return the
    summary."""
    result = attention_probe(config, loaded=loaded, concept_set=concept_set, show_progress=show_progress)
    result.save(run)
    return result.summary


def execute(config: AttentionConfig, ctx: JobContext) -> int:
    """``mcicl probe attention``: check the inputs, open the run folder, measure, save, print the top heads."""
    seed_everything(config.seed)
    # A typo in --suite / --polysemy fails before the output folder exists.
    concept_set = load_suite(config.prompts.suite, config.prompts.polysemy)
    folder = ctx.create_run(inputs={"--model": config.extraction.model, "--suite": config.prompts.suite,
                                    "--polysemy": config.prompts.polysemy})
    summary = run_attention(config, folder, concept_set=concept_set, show_progress=not ctx.quiet)
    for h in summary["top_heads"]:
        print(f"top head layer {h['layer']} head {h['head']}: correct attention {h['held_out_value']:.3f} "
              f"(null {h['held_out_null']:.3f}, corrected p {h['held_out_p_corrected']:.3g}; held-out episodes)")
    knock = summary.get("behaviour", {}).get("knockout")
    if knock:
        print(f"knockout of the top {knock['k']} heads: accuracy {knock['accuracy']:.3f} -> "
              f"{knock['top_k_knocked_out']:.3f} (random {knock['k']} heads: {knock['random_k_mean']:.3f})")
    print(f"output is in {folder.path}")
    return 0


def demo_stage(ctx: DemoContext) -> dict[str, Any]:
    """Demo stage "attention on same-concept demonstrations": the probe on the demo's model into
    ``run/attention``; returns the headline numbers."""
    small = ctx.small
    conditions = ["in_distribution", "polysemous_query", "flipped_labels"] + ([] if small else ["arbitrary_labels"])
    # --small: 8 episodes; with 5, the query-swap null had too few distinct swaps for any head to reach p < 0.05
    prompts = EpisodeConfig(conditions=conditions, shots=[4] if small else [2, 4, 8], episodes=8 if small else 12)
    config = AttentionConfig(extraction=ExtractionConfig(model=ctx.model, device="cpu"), prompts=prompts,
                             permutations=200 if small else 500, bootstrap=200 if small else 1000,
                             seed=ctx.seed or 0)
    folder = ctx.stage_run("attention", "probe attention")
    summary = run_attention(config, folder, show_progress=not ctx.quiet)
    top = str(max(config.prompts.shots))
    return {"folder": str(folder.path), "query_position": summary["query_position"],
            "top_heads": [[h["layer"], h["head"]] for h in summary["top_heads"]],
            **{f"{cond}_{top}_shots": {k: cells[top][k] for k in ("top_heads_value", "top_heads_null", "chance",
                                                                    "significant_heads")}
               for cond, cells in summary["cells"].items()},
            "figure": str(folder.figures / "attention_heatmap.png")}


def report_tables(path: Path, summary: Mapping[str, Any]) -> list[Table]:
    """The report's table of an attention run: one row per (condition, shots), best head and top heads against
    their nulls (the ``tables`` hook of ATTENTION_JOB's ReportSection)."""
    return [_attention_cells(summary)] if summary else []


def _attention_cells(summary: Mapping[str, Any]) -> Table:
    """An attention summary's cells as one row per (condition, shots): best head and top heads against nulls."""
    top = ", ".join(f"L{h['layer']}H{h['head']}" for h in summary.get("top_heads", []))
    rows = [{"condition": cond, "shots": shots, "chance": c["chance"],
             "best head": "L{}H{}".format(*c["best_head"]), "best value": c["best_value"],
             "best null": c["best_null"], "best p (max-T)": c["best_p_corrected"],
             "top heads value": c["top_heads_value"], "top heads null": c["top_heads_null"],
             "significant heads": c["significant_heads"]}
            for cond, cells in summary.get("cells", {}).items() for shots, c in cells.items()]
    return Table(f"Correct attention per condition (top heads: {top})", rows,
                 "Share of the query's attention on same-concept demonstrations (word + label tokens); null: the "
                 "largest of the three nulls; significant heads: max-T corrected p < alpha.")
