"""``mcicl probe steer``: push a polysemous ICL query along a concept direction and watch the answer move.

A *sense-choice* episode asks the model to choose between two senses A and B of a polysemous word: its task is
the pair (A, B), its demonstrations monosemous words of each sense with their concept labels (``shots`` split
evenly), its queries polysemous words that have both senses (``bat`` under animals vs sports equipment). At hidden
state ``l`` (0 = embedding output, as ``output_hidden_states``) of every query-word token, the steered reading adds

    alpha * s_l * u,     u = unit(d_T - d_O)   (T the target sense, O the other)

where ``d_c`` are the geometry engine's concept directions (:func:`analysis.engine.measures.concept_directions`,
``direction_method``, centred vectors) estimated at layer ``l`` on the out-of-context vectors of every monosemous
concept word (the extraction's template and pooling). Query words are polysemous, and polysemous words are never
concept words, so the directions are estimated on words disjoint from the steered ones. ``s_l`` is the median norm
of the query word's state (mean over its tokens) at layer ``l`` in the bare prompts, so ``alpha = 1`` adds a vector
as long as a typical state.

Every query is steered toward each of its senses in turn (T = A, then T = B), so at ``alpha = 0`` the *rate toward
the target* is exactly 0.5 and a direction that does nothing, or only breaks the readout, stays near 0.5. Controls,
with the same norm and the same sign flip between the two targets: ``random`` (a Gaussian direction, one per query
and layer) and ``unrelated`` (unit(d_C - d_D) for two concepts C, D related to neither sense, one pair per query).
The answer is the ``lm`` readout's highest label log-prob (causal LMs) or the ``in_prompt`` readout's label with the
most softmax(beta * cos) mass from the query's last-layer state on the demonstrations' (encoders).

Intervals: a two-way cluster bootstrap (episodes x query words, :func:`probing.icl.stats.cluster_bootstrap`);
differences (sense - random, sense - unrelated) are paired by reading.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from mcicl.analysis.engine.measures import concept_directions, prepare
from mcicl.core.io import strict_json
from mcicl.core.jobs import JobContext
from mcicl.core.logs import progress
from mcicl.core.plotting import Caption, save_figure
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.extract import extract_words, n_hidden_layers, padding_for, padding_token_id
from mcicl.probing.extract_config import resolve_layers
from mcicl.probing.forward import PoolItem, pool_vectors
from mcicl.probing.icl.attention import overlapping
from mcicl.probing.icl.episodes import PromptTemplate
from mcicl.probing.icl.in_prompt import prompt_spans, read_prompts
from mcicl.probing.icl.readout import predict, state_probabilities
from mcicl.probing.icl.scoring import ScoringPrompt, tokenize_prompts
from mcicl.probing.icl.stats import cluster_bootstrap
from mcicl.probing.icl.tasks import IclPrompt, IclSampler, concept_label, load_suite
from mcicl.probing.mechanism.residual import add_to_residual, check_sites
from mcicl.probing.mechanism.steer_config import DIRECTION_KINDS, STEER_CAPTION_TEXT, SteerConfig
from mcicl.probing.mechanism.steer_figures import dose_response_figure
from mcicl.probing.models import LoadedModel, load_model
from mcicl.probing.placement import input_device, resolve_device
from mcicl.probing.tiny import is_random_weights

log = logging.getLogger("mcicl")

CONDITION = "sense_choice"
SCALE_RULE = ("s_l: the median over prompts of the L2 norm of the query word's hidden state l (mean over its tokens) "
              "in the bare prompts; the steered reading adds alpha * s_l * (unit direction) to every query token")
INFERENCE = ("95% percentile interval of a two-way cluster (pigeonhole) bootstrap: episodes and query words "
             "resampled independently (probing.icl.stats.cluster_bootstrap); differences paired by reading")
DOSE_CAPTION = Caption("Sense steering: dose response per layer", STEER_CAPTION_TEXT)


# ------------------------------------------------------------------------------------------------ episodes
def sense_pairs(concepts: ConceptSet, sampler: IclSampler, need: int) -> dict[str, list[tuple[str, str]]]:
    """Polysemous word -> its unordered pairs of unrelated senses whose concepts have ``need`` monosemous words."""
    out: dict[str, list[tuple[str, str]]] = {}
    for word, senses in sorted(concepts.polysemy.items()):
        pairs = [(a, b) for a, b in combinations(sorted(set(senses)), 2)
                 if a in sampler.pools and b in sampler.pools and b not in sampler.family.get(a, {a})
                 and len(sampler.pools[a]) >= need and len(sampler.pools[b]) >= need]
        if pairs:
            out[word] = pairs
    return out


def sense_choice_prompts(concepts: ConceptSet, *, shots: int, episodes: int, queries_per_episode: int,
                         seed: int) -> list[IclPrompt]:
    """Sense-choice prompts: per episode a polysemous word, a pair of its senses as the task (in random order),
    ``shots`` monosemous demonstrations split evenly between them, and up to ``queries_per_episode`` polysemous
    query words having both senses. No gold label: the target sense is chosen per steered reading."""
    sampler = IclSampler(concepts, ways=2, queries_per_episode=queries_per_episode)
    per_sense = math.ceil(shots / 2)
    pairs = sense_pairs(concepts, sampler, per_sense)
    if not pairs:
        raise ValueError(f"concept set {concepts.name!r} has no polysemous word with two unrelated senses of >= "
                         f"{per_sense} monosemous words each; accepted: a concept set with such words (suite "
                         "'polysemy'), or fewer shots")
    words = sorted(pairs)
    rng = np.random.default_rng([seed, zlib.crc32(CONDITION.encode())])
    out = []
    for e in range(episodes):
        word = words[int(rng.integers(len(words)))]
        a, b = pairs[word][int(rng.integers(len(pairs[word])))]
        combo = (a, b) if rng.random() < 0.5 else (b, a)
        counts = [shots // 2, shots // 2]
        if shots % 2:
            counts[int(rng.integers(2))] += 1
        demos = [(w, c) for c, n in zip(combo, counts, strict=True)
                 for w in rng.choice(sampler.pools[c], size=n, replace=False).tolist()]
        demos = [demos[i] for i in rng.permutation(len(demos))]
        others = [w for w in words if w != word and {a, b} <= set(concepts.polysemy[w])]
        queries = [word] + rng.permutation(others).tolist()[:queries_per_episode - 1] if others else [word]
        labels = tuple(concept_label(c) for c in combo)
        pairs_shown = tuple((w, concept_label(c)) for w, c in demos)
        out += [IclPrompt(CONDITION, shots, e, "|".join(combo), labels, pairs_shown, q, "", "",
                          tuple(c for _, c in demos)) for q in queries]
    return out


# ------------------------------------------------------------------------------------------------ directions
def direction_words(concepts: ConceptSet) -> tuple[list[str], list[str]]:
    """(words, labels): every monosemous concept word (no word listed as polysemous), for the directions."""
    sampler = IclSampler(concepts, ways=2)
    pairs = [(w, c) for c, ws in sampler.pools.items() for w in ws]
    return [w for w, _ in pairs], [c for _, c in pairs]


def layer_directions(vectors: np.ndarray, labels: list[str], method: str) -> dict[str, np.ndarray]:
    """Concept -> unit direction (the engine's :func:`concept_directions` on centred vectors) of one layer."""
    labels_arr = np.asarray(labels)
    dirs, names = concept_directions(prepare(vectors, labels_arr, center_vectors=True), labels_arr, method)
    return {n: np.asarray(d, dtype=np.float64) for n, d in zip(names, dirs, strict=True)}


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n == 0:
        raise ValueError("a steering direction has zero length (two concepts with the same direction)")
    return v / n


def unrelated_pair(prompt: IclPrompt, sampler: IclSampler, available: set[str], rng: np.random.Generator
                   ) -> tuple[str, str]:
    """Two concepts related to neither of the prompt's senses (nor to each other), drawn at random."""
    a, b = prompt.task.split("|")
    avoid = sampler.family.get(a, {a}) | sampler.family.get(b, {b})
    pool = sorted(c for c in available if c not in avoid)
    for _ in range(1000):
        if len(pool) < 2:
            break
        c, d = rng.choice(pool, size=2, replace=False).tolist()
        if d not in sampler.family.get(c, {c}):
            return c, d
    raise ValueError(f"no two concepts unrelated to {a!r} and {b!r} have directions; accepted: a concept set with "
                     "at least two more unrelated concepts")


# ------------------------------------------------------------------------------------------------ readouts
def _query_items(tokenizer: Any, prompts: list[IclPrompt], template: PromptTemplate) -> list[PoolItem]:
    """Each prompt's token ids (prefix + query line) and its query word's token positions."""
    items = []
    for p in prompts:
        sp = prompt_spans(p, template)
        enc = tokenizer(sp.text, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
        pos = overlapping(enc["offset_mapping"], enc["special_tokens_mask"], *sp.query)
        if not pos:
            raise ValueError(f"no tokens found for the query word in prompt {sp.text!r}")
        items.append(PoolItem(list(enc["input_ids"]), list(pos)))
    return items


def query_norms(loaded: LoadedModel, items: list[PoolItem], layers: list[int], batch_size: int) -> dict[int, float]:
    """Layer -> median norm of the query word's state (mean over its tokens) in the bare prompts."""
    model, tok = loaded.model, loaded.tokenizer
    vecs = pool_vectors(model, items, "hidden", layers, "mean", batch_size, padding_for(model),
                        padding_token_id(tok), show_progress=False)
    return {li: float(np.median(np.linalg.norm(vecs[str(li)].astype(np.float64), axis=1))) for li in layers}


def in_prompt_choice(loaded: LoadedModel, prompts: list[IclPrompt], template: PromptTemplate, layer: int,
                     vectors: np.ndarray, beta: float, batch_size: int) -> np.ndarray:
    """(R, 2) in_prompt label probabilities of each reading, ``vectors[r]`` added at hidden state ``layer`` of its
    query tokens (the readout reads the last layer)."""
    model, tok = loaded.model, loaded.tokenizer
    last = n_hidden_layers(model)
    spans = [prompt_spans(p, template) for p in prompts]

    def intervene(idx: list[int], positions: list[list[int]]) -> Any:
        return add_to_residual(model, layer, positions, vectors[idx], 1.0)

    readings = read_prompts(model, tok, spans, last, attention=False, batch_size=batch_size, intervene=intervene)
    queries = np.stack([r.query for r in readings])
    probs = state_probabilities(prompts, queries, [r.demos for r in readings], [beta])
    return probs[:, 0]


def lm_choice(loaded: LoadedModel, prompts: list[IclPrompt], template: PromptTemplate, layer: int,
              vectors: np.ndarray, batch_size: int) -> np.ndarray:
    """(R, n_labels) summed label log-probs of each reading (every label scored on the tokens of ``prefix + query +
    label`` as one string, as :mod:`probing.icl.scoring` does), ``vectors[r]`` added at hidden state ``layer`` of
    the query word's tokens. One full forward per (reading, label), batched with left padding."""
    model, tok = loaded.model, loaded.tokenizer
    device = input_device(model)
    scoring = [ScoringPrompt(template.prefix(p.demos), template.query_text(p.query),
                             tuple(template.option(lab) for lab in p.labels)) for p in prompts]
    distinct = {sp: None for sp in scoring}
    tokenized = dict(zip(distinct, tokenize_prompts(tok, list(distinct)), strict=True))
    items = _query_items(tok, prompts, template)
    rows: list[tuple[int, int, tuple[int, ...], int, list[int]]] = []  # (reading, label, ids, context, query pos)
    for r, (sp, it) in enumerate(zip(scoring, items, strict=True)):
        tp = tokenized[sp]
        for j in range(len(tp.options)):
            context, option = tp.sequence(j)
            if max(it.positions) >= len(context) or list(context[:max(it.positions) + 1]) != \
                    it.ids[:max(it.positions) + 1]:
                raise ValueError(f"the query word's tokens of {sp.query!r} are not a prefix of the scored sequence")
            rows.append((r, j, context + option, len(context), it.positions))
    out = np.zeros((len(prompts), max(len(s.options) for s in scoring)))
    pad = padding_token_id(tok)
    order = sorted(range(len(rows)), key=lambda k: -len(rows[k][2]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [rows[k] for k in order[start:start + batch_size]]
            width = max(len(b[2]) for b in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            shifts = []
            for i, (_, _, seq, _, _) in enumerate(batch):
                shift = width - len(seq)
                ids[i, shift:] = torch.tensor(seq)
                mask[i, shift:] = 1
                shifts.append(shift)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            steer = [[p + s for p in b[4]] for b, s in zip(batch, shifts, strict=True)]
            with add_to_residual(model, layer, steer, vectors[[b[0] for b in batch]], 1.0):
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               position_ids=positions.to(device), use_cache=False).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1).cpu()
            for i, (r, j, seq, n_ctx, _) in enumerate(batch):
                s = shifts[i]
                targets = torch.tensor(seq[n_ctx:])
                at = torch.arange(s + n_ctx - 1, s + len(seq) - 1)
                out[r, j] = float(logprobs[i, at, targets].sum())
    return out


# ------------------------------------------------------------------------------------------------ statistics
def rate_ci(values: np.ndarray, episodes: list[Any], words: list[str], n_boot: int, seed: int) -> dict[str, Any]:
    """Mean of ``values`` with its two-way cluster bootstrap interval (episodes x query words)."""
    return cluster_bootstrap(values, [episodes, words], n_boot=n_boot, seed=seed).to_dict()


@dataclass
class SteerResult:
    """A steering run in memory: one row per reading, the dose-response table and the summary."""

    config: SteerConfig
    readings: list[dict[str, Any]]  # (prompt, target, kind, layer, alpha) -> answer, toward target
    table: list[dict[str, Any]]  # steering.csv: (layer, kind, alpha) -> rate toward target, CI, n
    summary: dict[str, Any]

    def figures(self) -> dict[str, Figure]:
        """The dose response: rate toward the target sense against alpha, one panel per layer."""
        return {"dose_response": dose_response_figure(self.table, title=self.summary.get("title", ""))}

    def save(self, run: RunFolder) -> None:
        """config.yaml, steering.csv, readings.csv, summary.json and the figure into ``run``."""
        run.save_config(self.config)
        run.write_csv("steering.csv", self.table)
        run.write_csv("readings.csv", self.readings)
        run.write_summary(self.summary)
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=DOSE_CAPTION)


def _resolve_readout(config: SteerConfig, loaded: LoadedModel) -> str:
    if config.readout == "auto":
        return "lm" if loaded.causal else "in_prompt"
    if config.readout == "lm" and not loaded.causal:
        raise ValueError("readout='lm' needs a causal language model; the loaded model is an encoder; accepted: "
                         "readout='in_prompt' or 'auto'")
    return config.readout


def steer(config: SteerConfig, *, loaded: LoadedModel | None = None, concept_set: ConceptSet | None = None
          ) -> SteerResult:
    """Sample sense-choice prompts, estimate the directions per layer, read every prompt bare and steered (each
    kind, layer, alpha, target), summarise; nothing is written to disk."""
    cs = concept_set if concept_set is not None else load_suite(config.suite, config.polysemy)
    if not cs.polysemy:
        raise ValueError(f"concept set {cs.name!r} lists no polysemous words; accepted: suite='polysemy' or a "
                         "polysemy=FILE")
    prompts = sense_choice_prompts(cs, shots=config.shots, episodes=config.episodes,
                                   queries_per_episode=config.queries_per_episode, seed=config.seed)
    if loaded is None:
        ext = config.extraction
        device, device_map = resolve_device(ext.device)
        loaded = load_model(ext.model, kind="causal" if config.readout == "lm" else "auto", dtype=ext.dtype,
                            device=device, device_map=device_map, trust_remote_code=ext.trust_remote_code)
    readout = _resolve_readout(config, loaded)
    model, tok, t = loaded.model, loaded.tokenizer, config.prompt_template
    n_layers = n_hidden_layers(model)
    layers = resolve_layers(config.extraction.layers, n_layers)
    items = _query_items(tok, prompts, t)
    check_sites(model, torch.tensor([items[0].ids], device=input_device(model)), layers)

    # Directions: the engine's concept directions per layer, on monosemous words (never a query word).
    words, labels = direction_words(cs)
    ext = dataclasses.replace(config.extraction, layers=layers)
    extraction = extract_words(words, ext, loaded=loaded, show_progress=False)
    kept = {w: i for i, w in enumerate(extraction.words)}
    word_labels = [labels[words.index(w)] for w in extraction.words]
    query_words = sorted({p.query for p in prompts})
    assert not set(query_words) & set(extraction.words), "query words are never direction words"
    directions = {li: layer_directions(extraction.vectors[str(li)], word_labels, config.direction_method)
                  for li in layers}
    available = set(directions[layers[0]])
    prompts = [p for p in prompts if set(p.task.split("|")) <= available]
    if not prompts:
        raise ValueError("no episode's two senses both have concept directions (too few represented words)")
    items = _query_items(tok, prompts, t)
    scale = query_norms(loaded, items, layers, config.batch_size)

    sampler = IclSampler(cs, ways=2)
    rng = np.random.default_rng([config.seed, 6])
    unrelated = [unrelated_pair(p, sampler, available, rng) for p in prompts]
    d = extraction.vectors[str(layers[0])].shape[1]

    def answers(layer: int, reading_prompts: list[IclPrompt], vectors: np.ndarray) -> np.ndarray:
        if readout == "lm":
            scores = lm_choice(loaded, reading_prompts, t, layer, vectors, config.batch_size)
        else:
            scores = in_prompt_choice(loaded, reading_prompts, t, layer, vectors, config.beta, config.batch_size)
        return predict(scores, np.random.default_rng([config.seed, 7, layer]))

    bare = answers(layers[0], prompts, np.zeros((len(prompts), d), dtype=np.float32))
    grid = sorted({0.0, *(float(a) for a in config.alphas)})
    alphas = [a for a in grid if a > 0]
    readings: list[dict[str, Any]] = []
    for p, (c1, c2), ans in zip(prompts, unrelated, bare, strict=True):
        for target in (0, 1):
            readings.append(_reading(p, target, "bare", -1, 0.0, int(ans), f"{c1}|{c2}"))
    for li in progress(layers, desc="steer per layer"):
        dirs, s = directions[li], scale[li]
        rows, vecs = [], []
        for k, (p, (c1, c2)) in enumerate(zip(prompts, unrelated, strict=True)):
            a, b = p.task.split("|")
            sense = _unit(dirs[a] - dirs[b])
            unrel = _unit(dirs[c1] - dirs[c2])
            rand = _unit(np.random.default_rng([config.seed, 5, k, li]).standard_normal(d))
            for target in (0, 1):
                sign = 1.0 if target == 0 else -1.0
                for kind, u in (("sense", sense), ("random", rand), ("unrelated", unrel)):
                    for alpha in alphas:
                        rows.append((k, target, kind, alpha))
                        vecs.append(sign * alpha * s * u)
        got = answers(li, [prompts[k] for k, *_ in rows], np.asarray(vecs, dtype=np.float32))
        for (k, target, kind, alpha), ans in zip(rows, got, strict=True):
            readings.append(_reading(prompts[k], target, kind, li, alpha, int(ans), "|".join(unrelated[k])))
    table, per_layer = summarise(readings, layers, grid, n_boot=config.bootstrap, seed=config.seed)
    summary = {
        "model": loaded.ref.name, "readout": readout, "random_weights": is_random_weights(loaded.ref.location),
        "suite": cs.name, "layers": layers, "alphas": grid, "shots": config.shots,
        "episodes": len({p.episode for p in prompts}), "prompts": len(prompts), "readings": len(readings),
        "query_words": query_words, "n_direction_words": len(kept), "direction_method": config.direction_method,
        "direction_words": "every monosemous concept word of the suite (out of context, the extraction template "
                           f"{config.extraction.template!r}); the steered query words are polysemous words, "
                           "disjoint from them",
        "scale": {str(li): scale[li] for li in layers}, "scale_rule": SCALE_RULE,
        "readout_layer": n_layers if readout == "in_prompt" else "logits",
        **({"beta": config.beta} if readout == "in_prompt" else {}),
        "inference": INFERENCE, "per_layer": per_layer,
        "title": f"{loaded.ref.name}{' (random weights)' if is_random_weights(loaded.ref.location) else ''}, "
                 f"{readout} readout",
    }
    return SteerResult(config, readings, table, strict_json(summary))


def _reading(p: IclPrompt, target: int, kind: str, layer: int, alpha: float, answer: int, unrelated: str
             ) -> dict[str, Any]:
    senses = p.task.split("|")
    return {"episode": p.episode, "query": p.query, "senses": p.task, "target": senses[target], "kind": kind,
            "layer": layer, "alpha": alpha, "answer": senses[answer], "toward_target": int(answer == target),
            "unrelated_pair": unrelated}


def summarise(readings: list[dict[str, Any]], layers: list[int], alphas: list[float], *, n_boot: int, seed: int
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(steering.csv rows, per-layer summary): the rate toward the target per (layer, kind, alpha) with its
    interval, the flip rate (among readings whose bare answer was not the target), and the paired differences
    sense - random, sense - unrelated and unrelated - random per (layer, alpha)."""
    bare = [r for r in readings if r["kind"] == "bare"]
    key = {(r["episode"], r["query"], r["target"]): r["toward_target"] for r in bare}
    by: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for r in readings:
        if r["kind"] != "bare":
            by.setdefault((r["kind"], r["layer"], r["alpha"]), []).append(r)
    table, per_layer = [], {}
    for li in layers:
        layer_out: dict[str, Any] = {}
        for kind in DIRECTION_KINDS:
            cells = {}
            for alpha in alphas:
                rs = bare if alpha == 0 else by[(kind, li, alpha)]
                x = np.array([r["toward_target"] for r in rs], dtype=float)
                ci = rate_ci(x, [r["episode"] for r in rs], [r["query"] for r in rs], n_boot, seed)
                flippable = [r for r in rs if not key[(r["episode"], r["query"], r["target"])]]
                flip = float(np.mean([r["toward_target"] for r in flippable])) if flippable else float("nan")
                table.append({"layer": li, "kind": kind, "alpha": alpha, "rate_toward_target": ci["mean"],
                              "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n": ci["n"], "flip_rate": flip,
                              "n_flippable": len(flippable)})
                cells[f"{alpha:g}"] = {**ci, "flip_rate": flip}
            layer_out[kind] = cells
        for first, control in (("sense", "random"), ("sense", "unrelated"), ("unrelated", "random")):
            diffs = {}
            for alpha in alphas:
                if alpha == 0:
                    continue
                a = sorted(by[(first, li, alpha)], key=_order)
                b = sorted(by[(control, li, alpha)], key=_order)
                x = np.array([ra["toward_target"] - rb["toward_target"] for ra, rb in zip(a, b, strict=True)], float)
                diffs[f"{alpha:g}"] = rate_ci(x, [r["episode"] for r in a], [r["query"] for r in a], n_boot, seed)
            layer_out[f"{first}_minus_{control}"] = diffs
        per_layer[str(li)] = layer_out
    return table, per_layer


def _order(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["episode"], r["query"], r["target"])


# ------------------------------------------------------------------------------------------------ entry point
def execute(config: SteerConfig, ctx: JobContext) -> int:
    """``mcicl probe steer``: check the inputs, open the run folder, steer, save, print the largest-alpha rates."""
    seed_everything(config.seed)
    concept_set = load_suite(config.suite, config.polysemy)
    folder = ctx.create_run(inputs={"--model": config.extraction.model, "--suite": config.suite,
                                    "--polysemy": config.polysemy})
    result = steer(config, concept_set=concept_set)
    result.save(folder)
    top = f"{max(result.summary['alphas']):g}"
    for li, cell in result.summary["per_layer"].items():
        s, r, u = (cell[k][top] for k in DIRECTION_KINDS)
        print(f"layer {li}, alpha {top}: toward target {s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]; "
              f"random {r['mean']:.3f}; unrelated {u['mean']:.3f}")
    print(f"output is in {folder.path}")
    return 0
