"""Exports for the geometry engine: sampled words, polysemous words, the ground-truth dictionary, learned spaces.

All files are ``analysis.vectors.LabelledVectors``: labels are task concept names "c0", "c1", ...; signs are
the semantic sign +1/-1 of each word.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from mcicl.core.configuration import load_config, to_dict
from mcicl.core.vectors import LabelledVectors
from mcicl.synthetic.checkpoints import latest_checkpoint
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.data import Dictionary, generator, sample_words, train_spec

FEATURES = "features.npz"
POLYSEMY = "features.polysemy.npz"
DICTIONARY = "dictionary.npz"


def _sign(s: int) -> str:
    return "+" if s > 0 else "-"


def export_features(config: SyntheticConfig, dic: Dictionary, folder: str | Path) -> dict[str, Path]:
    """Write features.npz, features.polysemy.npz and dictionary.npz into ``folder``; return their paths."""
    files = {"features": FEATURES, "polysemy": POLYSEMY, "dictionary": DICTIONARY}
    return {name: lv.save(Path(folder) / files[name]) for name, lv in feature_sets(config, dic).items()}


def feature_sets(config: SyntheticConfig, dic: Dictionary) -> dict[str, LabelledVectors]:
    """The exported vector sets, in memory: sampled monosemous words ("features"), polysemous words
    ("polysemy", when K >= 2) and the ground-truth dictionary mu_k^{+-} ("dictionary")."""
    gen = generator(config, 5)
    spec = train_spec(config)
    n, K = config.n_features, config.K
    meta = {"world": "synthetic", "space": "input", "config": to_dict(config)}
    # Monosemous words: n per (concept, sign), drawn like training words (co-occurring features + noise).
    k = torch.arange(K).repeat_interleave(2 * n)
    s = torch.tensor([1, -1]).repeat_interleave(n).repeat(K)
    words, _ = sample_words(dic, spec, k, s, gen)
    names = [f"c{int(ki)}{_sign(int(si))}_{i % n}" for i, (ki, si) in enumerate(zip(k, s, strict=True))]
    out = {"features": LabelledVectors(words.numpy(), names, [f"c{int(ki)}" for ki in k], s.numpy(), meta)}
    # Polysemous words: each carries two task concepts k < k2 (senses), random signs.
    rows, wnames, wlabels, wsigns = [], [], [], []
    for k1 in range(K):
        for k2 in range(k1 + 1, K):
            kk = torch.full((n,), k1)
            s1 = torch.where(torch.rand(n, generator=gen) < 0.5, 1, -1)
            s2 = torch.where(torch.rand(n, generator=gen) < 0.5, 1, -1)
            x, _ = sample_words(dic, spec, kk, s1, gen, exclude=torch.full((n,), k2))
            x = x + dic.a[k2] + s2[:, None].to(x.dtype) * dic.b[k2]
            rows.append(x)
            wnames += [f"c{k1}{_sign(int(a))}c{k2}{_sign(int(b))}_{i}" for i, (a, b) in enumerate(zip(s1, s2,
                                                                                                  strict=True))]
            wlabels += [f"c{k1}|c{k2}"] * n
            wsigns += s1.tolist()
    if rows:
        out["polysemy"] = LabelledVectors(torch.cat(rows).numpy(), wnames, wlabels, np.array(wsigns),
                                          {**meta, "signs": "sign of the first sense"})
    # Ground truth: one row per mu_k^+ and mu_k^-.
    mus = torch.stack([dic.mu(k, s) for k in range(K) for s in (1, -1)])
    out["dictionary"] = LabelledVectors(
        mus.numpy(), [f"mu_c{k}{_sign(s)}" for k in range(K) for s in (1, -1)],
        [f"c{k}" for k in range(K) for _ in (1, -1)], np.array([s for _ in range(K) for s in (1, -1)]),
        {**meta, "space": "dictionary"})
    return out


def learned_vectors(run_dir: str | Path, which: str = "query", seed_index: int = 0,
                    words: str = FEATURES) -> LabelledVectors:
    """A train run's exported words (``words``: features.npz or features.polysemy.npz) through its final
    W_Q ("query") or W_K ("key")."""

    run_dir = Path(run_dir)
    if which not in ("query", "key"):
        raise ValueError(f"which={which!r}; accepted: 'query' (W_Q x) or 'key' (W_K x)")
    config = load_config(SyntheticConfig, run_dir / "config.yaml")
    if not 0 <= seed_index < config.seeds:
        raise ValueError(f"seed_index={seed_index}; accepted: 0..{config.seeds - 1} (the run has "
                         f"{config.seeds} seeds)")
    found = latest_checkpoint(run_dir / "checkpoints")
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}: is {run_dir} a synthetic train run?")

    weights = load_file(str(found[1]))
    W = weights["W_Q" if which == "query" else "W_K"][seed_index].double().numpy()
    mapped = through(LabelledVectors.load(run_dir / words), W, which)
    mapped.meta.update({"step": found[0], "seed_index": seed_index})
    return mapped


def through(words: LabelledVectors, W: np.ndarray, which: str) -> LabelledVectors:
    """``words`` mapped through a learned matrix (W_Q: "query", W_K: "key"): rows W x."""
    mapped = words.vectors.astype(np.float64) @ np.asarray(W, dtype=np.float64).T
    return LabelledVectors(mapped.astype(np.float32), words.words, words.labels, words.signs,
                           {**words.meta, "space": f"learned_{which}"})
