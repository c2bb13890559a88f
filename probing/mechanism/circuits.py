"""``mcicl probe circuits``: the paper's mechanism read from the weights, and tested by intervention, per head.

Three episode sets of the same sampler and condition, never mixed: *direction* episodes (seed + 1) give the concept
directions and the mean-ablation reference; *behaviour* episodes (seed) give every head's same-concept attention and
causal effects; the role probe uses random token sequences. Per layer l and head h:

- **Products from the weights.** Concept directions mu_k (:func:`mcicl.analysis.engine.measures.concept_directions`)
  from the in-prompt states of the direction episodes' demonstration and query words at hidden state l, the input
  of layer l's attention. In a post-LN encoder (BERT, MiniLM) hidden state l is already the previous block's
  LayerNorm output, so W_Q, W_K apply to it directly (nothing folded). In a pre-LN causal LM (GPT-2, Llama) the
  attention reads ln_1(hidden state l): ln_1's gain is folded into W_Q and W_K (W diag(g)); its centring and
  per-token scale are not (a positive scalar per token, which scales a product but not its sign), and Llama's
  rotary position rotation is not applied (the products are those at relative position 0). The Q/K biases are
  dropped: the key bias adds a term constant over keys (it cancels in the softmax) and the query bias a key-only
  preference, neither of which matches concepts. Then :func:`mcicl.analysis.engine.qk_products.product_test`:
  concept product, complement product (mean over the other concepts' directions), the weight score (their
  difference), its nulls (random directions of the same norm; directions of permuted concept labels) and max-T
  corrected p over every head of the model.
- **Behaviour.** The query's attention on same-concept demonstrations on the behaviour episodes (``probe
  attention``'s :func:`~mcicl.probing.icl.attention.cell_statistics`, word + label tokens): value, largest null and
  their difference (``attention_excess``), and Spearman's rho between the weight score and the excess over heads
  with a permutation p.
- **Roles.** Previous-token, duplicate-token and induction scores (:mod:`mcicl.analysis.engine.head_roles`).
- **Causal effects** on the readout margin (gold label's score minus the best other label's), per behaviour prompt:
  encoders read the in-prompt readout (softmax(beta * cos) between the query's and the demonstrations' last-layer
  states, :mod:`mcicl.probing.icl.in_prompt`), causal LMs the summed log-probability of each label continuation
  (``lm`` scoring, the context + label tokenized as one string, :func:`mcicl.probing.icl.scoring.tokenize_prompts`).
  Zero-ablation (:func:`mcicl.probing.hooks.knockout`); mean-ablation (the head's output averaged over every token
  of the direction episodes' prompts: one vector per head, not per position); and patching: the head's output at
  the query position(s) (the query word for an encoder, the last context token for a causal LM) replaced by its
  output on the same prompt with each concept's label rotated to the next concept's label (function vectors'
  shuffled-label corruption, read the other way: how much of the clean readout the head carries). Each effect is
  the clean margin minus the intervened margin (positive: the head supports the readout), its 95% interval a
  percentile bootstrap over episodes. Cost: 3 forward passes over the behaviour prompts per head, plus 3.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from mcicl.analysis.engine.head_roles import ROLES, repeated_sequences, role_scores
from mcicl.analysis.engine.nulls import maxt_p
from mcicl.analysis.engine.qk_products import ProductTest, product_test, rank_correlation
from mcicl.core.configuration import to_dict
from mcicl.core.jobs import JobContext
from mcicl.core.logs import progress
from mcicl.core.plotting import save_figure
from mcicl.core.pvalues import p_text
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.extract import model_body, n_hidden_layers, padding_token_id
from mcicl.probing.hooks import (
    capture_heads,
    head_output_projections,
    knockout,
    mean_ablation,
    n_heads,
    patch_heads,
)
from mcicl.probing.icl.attention import cell_statistics, eager_attention, layout_prompts, overlapping, query_attention
from mcicl.probing.icl.in_prompt import prompt_spans, read_prompts
from mcicl.probing.icl.readout import attention_readout
from mcicl.probing.icl.scoring import ScoringPrompt, tokenize_prompts
from mcicl.probing.icl.tasks import IclPrompt, IclSampler, PromptTemplate, load_suite
from mcicl.probing.mechanism.circuits_config import CircuitsConfig
from mcicl.probing.mechanism.circuits_figures import CAPTIONS, circuits_figures
from mcicl.probing.models import LoadedModel, load_model
from mcicl.probing.placement import input_device, resolve_device
from mcicl.probing.tiny import is_random_weights

log = logging.getLogger("mcicl")

EFFECTS = ("zero", "mean", "patch")


# ------------------------------------------------------------------------------------------ weights
def _numbered(model: Any, suffix: str) -> list[torch.nn.Module]:
    """The modules whose name ends in ``<layer number>.<suffix>``, in layer order."""
    pattern = re.compile(r"(?:^|\.)(\d+)\." + suffix + r"$")
    found = [(int(m.group(1)), mod) for name, mod in model.named_modules() if (m := pattern.search(name))]
    return [mod for _, mod in sorted(found, key=lambda t: t[0])]


def qk_weights(model: Any, layer: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(W_Q, W_K) of every head of ``layer`` as (heads, d_head, d_model) float64 arrays, and how LayerNorm is
    handled (BERT-like: nothing folded; GPT-2 and Llama-like: the pre-attention norm's gain folded in)."""
    h = n_heads(model)
    bert_q, bert_k = _numbered(model, r"attention\.self\.query"), _numbered(model, r"attention\.self\.key")
    if bert_q:
        wq, wk = bert_q[layer].weight, bert_k[layer].weight  # nn.Linear (out, in)
        note = "post-LN: the layer input is the previous LayerNorm's output; nothing folded; Q/K biases dropped"
    elif (gpt := _numbered(model, r"attn\.c_attn")):
        w = gpt[layer].weight  # Conv1D (in, 3 * out)
        d = w.shape[0]
        gain = _numbered(model, "ln_1")[layer].weight
        wq, wk = w[:, :d].T * gain[None], w[:, d:2 * d].T * gain[None]
        note = "pre-LN: ln_1's gain folded into W_Q, W_K (its centring and per-token scale not); biases dropped"
    elif (llama_q := _numbered(model, r"self_attn\.q_proj")):
        wq, wk = llama_q[layer].weight, _numbered(model, r"self_attn\.k_proj")[layer].weight
        gain = _numbered(model, "input_layernorm")[layer].weight
        wq, wk = wq * gain[None], wk * gain[None]
        note = ("pre-LN: input_layernorm's gain folded into W_Q, W_K (its per-token scale not); rotary position "
                "rotation not applied (relative position 0); biases dropped")
    else:
        raise ValueError(f"probe circuits does not know the query/key weights of {type(model).__name__}; accepted: "
                         "BERT-like encoders, GPT-2 or Llama-like causal LMs")
    q = wq.detach().double().cpu().numpy()
    k = wk.detach().double().cpu().numpy()
    d_head = q.shape[0] // h
    q = q.reshape(h, d_head, -1)
    k = k.reshape(k.shape[0] // d_head, d_head, -1)
    if k.shape[0] != h:  # grouped-query attention: each key head serves h / kv query heads
        k = np.repeat(k, h // k.shape[0], axis=0)
    return q, k, note


def direction_states(loaded: LoadedModel, prompts: Sequence[IclPrompt], template: PromptTemplate, layers: Sequence[int],
                     batch_size: int = 16) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per hidden state l in ``layers``: the in-prompt states of every demonstration and query word of ``prompts``
    (n, d) and their concepts (n,)."""
    spans = [prompt_spans(p, template) for p in prompts]
    labels = np.array([c for p in prompts for c in (*p.demo_concepts, p.query_concept)])
    out = {}
    for layer in layers:
        readings = read_prompts(loaded.model, loaded.tokenizer, spans, layer, attention=False, batch_size=batch_size)
        out[layer] = (np.concatenate([np.vstack([r.demos, r.query[None]]) for r in readings]), labels)
    return out


def weight_products(loaded: LoadedModel, prompts: Sequence[IclPrompt], template: PromptTemplate, *,
                    method: str = "diff", permutations: int = 1000, seed: int = 0, batch_size: int = 16
                    ) -> tuple[list[ProductTest], np.ndarray, str]:
    """(each layer's :class:`ProductTest`, max-T p corrected over every head of the model (L, H), the LayerNorm
    note), with directions from ``prompts``' in-prompt word states."""
    n_layers = n_hidden_layers(loaded.model)
    states = direction_states(loaded, prompts, template, range(n_layers), batch_size)
    tests, note = [], ""
    for layer in range(n_layers):
        W_Q, W_K, note = qk_weights(loaded.model, layer)
        X, labels = states[layer]
        tests.append(product_test(W_Q, W_K, X, labels, permutations=permutations, seed=seed + layer,
                                  method=method))
    score = np.concatenate([t.score for t in tests])
    corrected = np.max([maxt_p(score, np.concatenate([getattr(t, null) for t in tests], axis=1))[1]
                        for null in ("random_null", "permuted_null")], axis=0)
    return tests, corrected.reshape(n_layers, -1), note


# ------------------------------------------------------------------------------------------ roles
def head_roles(loaded: LoadedModel, *, sequences: int = 16, period: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Previous-token, duplicate-token and induction scores per head (L, H), averaged over ``sequences`` repeated
    random token sequences of ``period`` tokens (the tokenizer's special tokens added around them)."""
    tok, model = loaded.tokenizer, loaded.model
    special = set(tok.all_special_ids)
    size = min(len(tok), model.get_input_embeddings().weight.shape[0])
    vocab = np.array([i for i in range(size) if i not in special])
    seqs = repeated_sequences(vocab, sequences, period, seed)
    # The tokenizer's own special tokens around the sequence ([CLS] ... [SEP], a BOS, or none), read off a word.
    enc = tok("a", add_special_tokens=True, return_special_tokens_mask=True)
    real = [i for i, sp in enumerate(enc["special_tokens_mask"]) if not sp]
    before, after = list(enc["input_ids"][:real[0]]), list(enc["input_ids"][real[-1] + 1:])
    full = [before + [int(t) for t in s] + after for s in seqs]
    start = len(before)
    ids = torch.tensor(full, device=input_device(model))
    with eager_attention(model), torch.inference_mode():
        out = model_body(model)(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True,
                                return_dict=True)
    patterns = torch.stack([a.float() for a in out.attentions], 1).cpu().numpy()  # (B, L, H, N, N)
    return {role: v.mean(0) for role, v in role_scores(patterns, period, start).items()}


# ------------------------------------------------------------------------------------------ readouts
@dataclass
class Row:
    """One sequence the readout runs: its ids, the positions a patch touches, and the prompt it belongs to."""

    ids: list[int]
    patch: list[int]  # the query position(s)
    prompt: int
    option: int = -1  # causal LMs: which label this row scores (-1: an encoder row, all labels at once)
    words: tuple[tuple[int, ...], ...] = ()  # encoders: each demonstration word's positions
    scored: tuple[int, ...] = ()  # causal LMs: the label's token ids, the last len(scored) ids of the row


def rotated(prompt: IclPrompt) -> IclPrompt:
    """The prompt with every demonstration's label replaced by the next concept's label (in the task's order)."""
    nxt = {lab: prompt.labels[(i + 1) % len(prompt.labels)] for i, lab in enumerate(prompt.labels)}
    return replace(prompt, demos=tuple((w, nxt[lab]) for w, lab in prompt.demos))


def readout_rows(loaded: LoadedModel, prompts: Sequence[IclPrompt], template: PromptTemplate) -> list[Row]:
    """The rows the readout runs for ``prompts``: one per prompt (encoder) or per (prompt, label) (causal LM)."""
    tok = loaded.tokenizer
    rows = []
    if loaded.causal:
        scoring = [ScoringPrompt(template.prefix(p.demos), template.query_text(p.query),
                                 tuple(template.option(lab) for lab in p.labels)) for p in prompts]
        for i, t in enumerate(tokenize_prompts(tok, scoring)):
            last = len(t.prefix) + len(t.query) - 1  # the last context token: where the next token is predicted
            for j in range(len(t.options)):
                context, scored = t.sequence(j)
                rows.append(Row(list(context + scored), [last], i, j, scored=scored))
        return rows
    for i, p in enumerate(prompts):
        sp = prompt_spans(p, template)
        enc = tok(sp.text, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
        off, special = enc["offset_mapping"], enc["special_tokens_mask"]
        words = tuple(overlapping(off, special, *s) for s in sp.demo_words)
        query = overlapping(off, special, *sp.query)
        if not query or any(not w for w in words):
            raise ValueError(f"no tokens found for the query or a demonstration word in prompt {sp.text!r}")
        rows.append(Row(list(enc["input_ids"]), list(query), i, words=words))
    return rows


Intervention = Callable[[Sequence[int]], Any]  # batch row indices -> a context manager (or None: bare)


def run_rows(loaded: LoadedModel, rows: Sequence[Row], *, batch_size: int = 16, layer: int | None = None,
             intervention: Intervention | None = None, capture: bool = False
             ) -> tuple[list[np.ndarray], dict[int, list[torch.Tensor]] | None]:
    """Run ``rows`` right-padded (a causal LM's earlier positions never see the padding after them); per row, the
    encoder's hidden state ``layer`` at its positions (T, d) or the causal LM's summed log-probability of its
    label (a 0-d array); with ``capture``, every layer's head outputs per batch (:func:`capture_heads`)."""
    model = loaded.model
    body = model if loaded.causal else model_body(model)
    pad, device = padding_token_id(loaded.tokenizer), input_device(model)
    out: list[np.ndarray] = []
    captured: dict[int, list[torch.Tensor]] | None = None
    for a in range(0, len(rows), batch_size):
        batch = list(range(a, min(a + batch_size, len(rows))))
        width = max(len(rows[i].ids) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            ids[r, :len(rows[i].ids)] = torch.tensor(rows[i].ids)
            mask[r, :len(rows[i].ids)] = 1
        ctx = intervention(batch) if intervention is not None else None
        with torch.inference_mode(), (ctx if ctx is not None else _null()), \
                (capture_heads(model) if capture else _null()) as store:
            kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                                      "return_dict": True}
            if loaded.causal:
                kwargs["use_cache"] = False
            else:
                kwargs["output_hidden_states"] = True
            res = body(**kwargs)
        if capture:
            if captured is None:
                captured = {k: [] for k in store}
            for k, v in store.items():
                captured[k].append(v[0])
        if loaded.causal:
            logp = torch.log_softmax(res.logits.float(), -1)
            for r, i in enumerate(batch):
                n, s = len(rows[i].ids), len(rows[i].scored)
                pos = torch.arange(n - s - 1, n - 1)
                out.append(logp[r, pos, torch.tensor(rows[i].scored)].sum().cpu().numpy())
        else:
            hidden = res.hidden_states[layer].float()
            out.extend(hidden[r, :len(rows[i].ids)].cpu().numpy() for r, i in enumerate(batch))
    return out, captured


class _null:
    """A context manager that does nothing (yields None)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def margins(loaded: LoadedModel, prompts: Sequence[IclPrompt], rows: Sequence[Row], outputs: Sequence[np.ndarray],
            beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(readout margin: gold minus the best other label, whether the gold label wins) per prompt."""
    n_labels = len(prompts[0].labels)
    scores = np.zeros((len(prompts), n_labels))
    if loaded.causal:
        for row, value in zip(rows, outputs, strict=True):
            scores[row.prompt, row.option] = float(value)
    else:
        q = np.stack([h[row.patch].mean(0) for row, h in zip(rows, outputs, strict=True)])
        keys = np.stack([np.stack([h[list(w)].mean(0) for w in row.words]) for row, h in zip(rows, outputs,
                                                                                              strict=True)])
        key_labels = np.array([[p.labels.index(lab) for _, lab in p.demos] for p in prompts])
        scores = attention_readout(q, keys, key_labels, n_labels, [beta])[:, 0]
    gold = np.array([p.labels.index(p.gold) for p in prompts])
    own = scores[np.arange(len(prompts)), gold]
    rest = np.where(np.eye(n_labels, dtype=bool)[gold], -np.inf, scores).max(1)
    return own - rest, own > rest


def _heads_at(captured: dict[int, list[torch.Tensor]], rows: Sequence[Row], batch_size: int
              ) -> dict[int, list[torch.Tensor]]:
    """Per layer, each row's head outputs at its patch positions ((positions, heads * d_head) per row)."""
    out: dict[int, list[torch.Tensor]] = {}
    for layer, chunks in captured.items():
        per_row = []
        for b, chunk in enumerate(chunks):
            for r in range(chunk.shape[0]):
                per_row.append(chunk[r, rows[b * batch_size + r].patch])
        out[layer] = per_row
    return out


def _mean_outputs(captured: dict[int, list[torch.Tensor]], rows: Sequence[Row], batch_size: int
                  ) -> dict[int, torch.Tensor]:
    """Per layer, the head outputs averaged over every real (non-padding) token of ``rows``: (heads * d_head,)."""
    out = {}
    for layer, chunks in captured.items():
        total, count = 0.0, 0
        for b, chunk in enumerate(chunks):
            for r in range(chunk.shape[0]):
                n = len(rows[b * batch_size + r].ids)
                total = total + chunk[r, :n].sum(0)
                count += n
        out[layer] = total / count
    return out


def episode_bootstrap(values: np.ndarray, episodes: Sequence[int], n_boot: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, 2.5% and 97.5% percentile bootstrap bounds) over prompts of ``values`` (P, ...) resampling episodes."""
    values = np.asarray(values, dtype=float)
    ids, inverse = np.unique(np.asarray(episodes), return_inverse=True)
    sums = np.zeros((len(ids),) + values.shape[1:])
    np.add.at(sums, inverse, values)
    sizes = np.bincount(inverse, minlength=len(ids)).astype(float)
    draws = np.random.default_rng(seed).integers(0, len(ids), size=(n_boot, len(ids)))
    extra = (None,) * (values.ndim - 1)
    boot = sums[draws].sum(1) / sizes[draws].sum(1)[(slice(None),) + extra]
    low, high = np.quantile(boot, [0.025, 0.975], axis=0)
    return values.mean(0), low, high


def causal_effects(loaded: LoadedModel, prompts: Sequence[IclPrompt], reference: Sequence[IclPrompt],
                   template: PromptTemplate, *, beta: float = 20.0, batch_size: int = 16,
                   heads: Sequence[tuple[int, int]] | None = None, source: Sequence[IclPrompt] | None = None,
                   show_progress: bool = False) -> dict[str, Any]:
    """Per head, the readout margin of each prompt after zero-ablation, mean-ablation (means over ``reference``) and
    patching its query-position output from ``source`` (default: the label-rotated prompts): ``{"clean": (P,),
    "clean_correct": (P,), "<effect>": (heads, P) margins, "<effect>_correct": (heads, P), "heads": [...]}``."""
    model = loaded.model
    n_layers, h_count = len(head_output_projections(model)), n_heads(model)
    heads = list(heads) if heads is not None else [(a, b) for a in range(n_layers) for b in range(h_count)]
    layer = None if loaded.causal else n_hidden_layers(model)
    rows = readout_rows(loaded, prompts, template)
    source_prompts = list(source) if source is not None else [rotated(p) for p in prompts]
    src_rows = readout_rows(loaded, source_prompts, template)
    if [len(r.patch) for r in src_rows] != [len(r.patch) for r in rows]:
        raise ValueError("the source prompts' query positions do not line up with the prompts' (a different number "
                         "of query tokens); accepted: source prompts with the same queries")
    outputs, _ = run_rows(loaded, rows, batch_size=batch_size, layer=layer)
    clean, clean_ok = margins(loaded, prompts, rows, outputs, beta)
    _, src_cap = run_rows(loaded, src_rows, batch_size=batch_size, layer=layer, capture=True)
    src = _heads_at(src_cap, src_rows, batch_size)
    del src_cap
    ref_rows = readout_rows(loaded, reference, template)
    _, ref_cap = run_rows(loaded, ref_rows, batch_size=batch_size, layer=layer, capture=True)
    means = _mean_outputs(ref_cap, ref_rows, batch_size)
    del ref_cap
    d = means[0].shape[0] // h_count
    result: dict[str, Any] = {"clean": clean, "clean_correct": clean_ok, "heads": heads}
    for name in EFFECTS:
        result[name], result[name + "_correct"] = np.zeros((len(heads), len(prompts))), np.zeros((len(heads),
                                                                                                    len(prompts)))
    for k, (a, b) in enumerate(progress(heads, desc="causal effects") if show_progress else heads):
        sl = slice(b * d, (b + 1) * d)

        def patch(batch: Sequence[int], a: int = a, b: int = b, sl: slice = sl) -> Any:
            r_idx = [r for r, i in enumerate(batch) for _ in rows[i].patch]
            pos = [p for i in batch for p in rows[i].patch]
            values = torch.cat([src[a][i][:, sl] for i in batch])
            return patch_heads(model, {(a, b): (torch.tensor(r_idx), torch.tensor(pos), values)})

        for name, intervention in (("zero", lambda batch, a=a, b=b: knockout(model, [(a, b)])),
                                   ("mean", lambda batch, a=a, b=b, sl=sl: mean_ablation(model,
                                                                                        {(a, b): means[a][sl]})),
                                   ("patch", patch)):
            out, _ = run_rows(loaded, rows, batch_size=batch_size, layer=layer, intervention=intervention)
            result[name][k], result[name + "_correct"][k] = margins(loaded, prompts, rows, out, beta)
    return result



# ------------------------------------------------------------------------------------------ the job
@dataclass
class CircuitsResult:
    """What :func:`measure_circuits` returns: heads.csv rows (one per layer and head) and the summary."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    config: CircuitsConfig | None = None

    def figures(self) -> dict[str, Figure]:
        """Weight score vs attention, head-role heatmaps, the causal-effect ranking."""
        return circuits_figures(self.rows, self.summary)

    def save(self, run: RunFolder) -> None:
        """Write config.yaml, heads.csv, summary.json and the figures (with captions) into ``run``."""
        if self.config is not None:
            run.save_config(to_dict(self.config))
        run.write_csv("heads.csv", self.rows)
        run.write_summary(self.summary)
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=CAPTIONS[name])


def _correlation(x: np.ndarray, y: np.ndarray, permutations: int, seed: int) -> dict[str, Any]:
    rho, p = rank_correlation(x, y, permutations=permutations, seed=seed)
    return {"rho": rho, "p_value": p, "p_text": p_text(p, permutations) if np.isfinite(p) else "n/a",
            "permutations": permutations}


def measure_circuits(config: CircuitsConfig, loaded: LoadedModel, concept_set: ConceptSet, *,
                     causal_heads: Sequence[tuple[int, int]] | None = None,
                     show_progress: bool = True) -> CircuitsResult:
    """Products, roles, attention and causal effects of every head of ``loaded`` (no files written);
    ``causal_heads``: the heads whose causal effects are measured (None: every head; the others' are NaN)."""
    ep = config.prompts
    cond, shots = ep.conditions[0], max(ep.shots)
    sampler = IclSampler(concept_set, ways=ep.ways, queries_per_episode=ep.queries_per_episode,
                         novel_fraction=ep.novel_fraction, arbitrary_label_sets=tuple(ep.arbitrary_labels),
                         split_seed=config.seed)
    sampler.check_shots(cond, shots)
    template = ep.template
    # Disjoint episode sets: directions and the mean-ablation reference from seed + 1, behaviour from seed.
    direction = sampler.sample(cond, shots, ep.episodes, config.seed + 1)
    behaviour = sampler.sample(cond, shots, ep.episodes, config.seed)
    model, tok = loaded.model, loaded.tokenizer
    tests, product_corrected, note = weight_products(loaded, direction, template, method=config.directions,
                                                     permutations=config.permutations, seed=config.seed,
                                                     batch_size=config.batch_size)
    layouts = layout_prompts(tok, behaviour, template, "last" if loaded.causal else "word")
    attention = query_attention(model, tok, layouts, batch_size=config.batch_size, show_progress=show_progress)
    stats = cell_statistics(attention, layouts, behaviour, "demo", n_permutations=config.permutations,
                            n_boot=config.bootstrap, seed=config.seed)
    excess = stats.value - stats.null_max
    roles = head_roles(loaded, sequences=config.role_sequences, period=config.role_period, seed=config.seed)
    n_layers, n_h = excess.shape
    measured = [(a, b) for a in range(n_layers) for b in range(n_h)] if causal_heads is None else list(causal_heads)
    effects = causal_effects(loaded, behaviour, direction, template, beta=config.beta, batch_size=config.batch_size,
                             heads=measured, show_progress=show_progress)
    episodes = [p.episode for p in behaviour]
    at = [a * n_h + b for a, b in measured]
    drops, correct = {}, {}
    for k, name in enumerate(EFFECTS):
        drop = np.full((len(behaviour), n_layers * n_h), np.nan)
        drop[:, at] = (effects["clean"][None] - effects[name]).T  # (P, heads)
        drops[name] = episode_bootstrap(drop, episodes, config.bootstrap, config.seed + 17 + k)
        correct[name] = np.full(n_layers * n_h, np.nan)
        correct[name][at] = effects[name + "_correct"].mean(1)
    score = np.stack([t.score for t in tests])
    corr = {"weight_vs_attention": _correlation(score, excess, config.permutations, config.seed),
            "patch_vs_attention": _correlation(drops["patch"][0], excess, config.permutations, config.seed + 1),
            "zero_vs_attention": _correlation(drops["zero"][0], excess, config.permutations, config.seed + 2),
            "mean_vs_attention": _correlation(drops["mean"][0], excess, config.permutations, config.seed + 3),
            "weight_vs_patch": _correlation(score, drops["patch"][0], config.permutations, config.seed + 4),
            "induction_vs_attention": _correlation(roles["induction"], excess, config.permutations, config.seed + 5)}
    rows = []
    clean_acc = float(effects["clean_correct"].mean())
    for a in range(n_layers):
        q_r, q_p = tests[a].quantiles(0.95)
        m_r, m_p = tests[a].quantiles(0.5)
        for b in range(n_h):
            f = a * n_h + b
            row = {"layer": a, "head": b, "concept_product": tests[a].concept[b],
                   "complement_product": tests[a].complement[b], "weight_score": tests[a].score[b],
                   "random_null_median": m_r[b], "random_null_q95": q_r[b], "permuted_null_median": m_p[b],
                   "permuted_null_q95": q_p[b], "product_p_random": tests[a].p_random[b],
                   "product_p_permuted": tests[a].p_permuted[b], "product_p": tests[a].p_value[b],
                   "product_p_corrected": product_corrected[a, b],
                   "attention_value": stats.value[a, b], "attention_null": stats.null_max[a, b],
                   "attention_excess": excess[a, b], "attention_p_corrected": stats.p_corrected[a, b],
                   **{role: roles[role][a, b] for role in ROLES}}
            for name in EFFECTS:
                mean, low, high = drops[name]
                row.update({f"{name}_effect": mean[f], f"{name}_low": low[f], f"{name}_high": high[f],
                            f"{name}_accuracy_drop": clean_acc - float(correct[name][f])})
            rows.append({k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in row.items()})
    patch_mean = drops["patch"][0]
    top = [f for f in np.argsort(-np.nan_to_num(patch_mean, nan=-np.inf), kind="stable") if f in at][:5]
    summary = {
        "model": loaded.ref.name, "causal": loaded.causal, "random_weights": is_random_weights(loaded.ref.location),
        "layers": int(n_layers), "heads": int(n_h), "suite": ep.suite, "concept_set": concept_set.name,
        "condition": cond, "shots": shots, "ways": ep.ways, "episodes": ep.episodes,
        "prompts": len(behaviour), "alpha": config.alpha, "directions": config.directions,
        "layer_norm": note, "readout": "lm (summed label log-probability)" if loaded.causal else
        f"in_prompt (last layer, beta {config.beta:g})",
        "disjoint": f"directions and mean-ablation reference from episodes of seed {config.seed + 1}; attention and "
                    f"causal effects on episodes of seed {config.seed}",
        "mean_ablation": "the head's output averaged over every token of the reference prompts (one vector per head)",
        "patch_source": "the same prompt with each concept's label rotated to the next concept's label; patched at "
                        "the query position(s)",
        "clean_accuracy": clean_acc, "clean_margin": float(effects["clean"].mean()),
        "product_heads": int((product_corrected < config.alpha).sum()),
        "attention_heads": int((stats.p_corrected < config.alpha).sum()),
        "correlations": corr,
        "top_causal": [{"layer": int(f // n_h), "head": int(f % n_h), "patch_effect": float(patch_mean[f]),
                        "ci": [float(drops["patch"][1][f]), float(drops["patch"][2][f])],
                        "attention_excess": float(excess.ravel()[f])} for f in top],
        "induction_top": [[int(f // n_h), int(f % n_h)] for f in np.argsort(-roles["induction"].ravel())[:3]],
        "causal_heads": len(measured), "forward_passes": 3 + 3 * len(measured),
    }
    return CircuitsResult(rows, summary, config)


def circuits_probe(config: CircuitsConfig, *, loaded: LoadedModel | None = None,
                   concept_set: ConceptSet | None = None, show_progress: bool = True) -> CircuitsResult:
    """Load the model and concept set (unless given) and :func:`measure_circuits`; nothing written to disk."""
    cs = concept_set if concept_set is not None else load_suite(config.prompts.suite, config.prompts.polysemy)
    if loaded is None:
        ext = config.extraction
        device, device_map = resolve_device(ext.device)
        loaded = load_model(ext.model, dtype=ext.dtype, device=device, device_map=device_map,
                            trust_remote_code=ext.trust_remote_code)
    return measure_circuits(config, loaded, cs, show_progress=show_progress)


def execute(config: CircuitsConfig, ctx: JobContext) -> int:
    """``mcicl probe circuits``: check the inputs, open the run folder, measure, save, print the headline."""
    seed_everything(config.seed)
    concept_set = load_suite(config.prompts.suite, config.prompts.polysemy)
    folder = ctx.create_run(inputs={"--model": config.extraction.model, "--suite": config.prompts.suite,
                                    "--polysemy": config.prompts.polysemy})
    result = circuits_probe(config, concept_set=concept_set, show_progress=not ctx.quiet)
    result.save(folder)
    s = result.summary
    c = s["correlations"]
    print(f"{s['layers']} x {s['heads']} heads: {s['product_heads']} pass the product test (max-T); weight score vs "
          f"attention rho {c['weight_vs_attention']['rho']:.3f} ({c['weight_vs_attention']['p_text']}); patching "
          f"vs attention rho {c['patch_vs_attention']['rho']:.3f}")
    t = s["top_causal"][0]
    print(f"top causal head L{t['layer']}H{t['head']}: margin drop {t['patch_effect']:.4f} "
          f"[{t['ci'][0]:.4f}, {t['ci'][1]:.4f}]")
    print(f"output is in {folder.path}")
    return 0
