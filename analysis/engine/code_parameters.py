"""The synthetic data model's generative parameters read off a fitted sparse code, and the held-out statistics on
which worlds built from such parameters are compared with real vectors. Pure functions over arrays.

The data model (``synthetic/data.py``) writes a word of concept k and sense s as
x = mu_k^s + sum_{j in S} mu_j^{t_j} + xi: its own unit feature, the unit features of a random set S of other
concepts (each allowed concept with probability polysemy_rate) and noise xi ~ N(0, sigma^2 I_d). Given word vectors
``x`` with concept labels, a dictionary D (unit atoms) and OMP codes Z with at most k atoms per word:

- *owner of an atom*: the concept whose words most often have it as their largest-|loading| (primary) atom; an
  atom that is no word's primary atom belongs to no labelled concept (an irrelevant concept's feature, of which
  the model has two per concept: K_irr = round(unowned atoms / 2)).
- *own part* P_i = sum over atoms owned by word i's concept of Z_ij D_j (the estimate of mu_k^s), *other part*
  O_i = Z_i D - P_i (the co-occurring features), *residual* R_i = x_i - Z_i D (the noise).
- within_cosine: in the model a concept's words use two features mu^+, mu^- in equal shares, so the mean cosine
  of own parts over distinct pairs of a concept's n words is p + (1 - p) cos(mu^+, mu^-) with p = (n/2 - 1)/(n - 1)
  the share of same-sense pairs; solved per concept, averaged over concepts.
- cross_overlap: cos(mu_k^s, mu_j^t) for k != j, the mean cosine of own parts across concepts, averaged over pairs.
- other_energy: E||O||^2 / E||P||^2, the co-occurring features' energy in units of the own feature (1 per feature
  when the features are orthogonal; the world builder turns it into polysemy_rate with its own co-occurrence rule).
- noise_energy: sigma^2 d = E||R||^2 / E||P||^2 * d / (d - k): OMP fits k atoms, so the residual keeps the noise
  off a k-dimensional subspace only.

Every estimate is in units of the own feature's norm (the model's features have norm 1), so a real space's scale
does not enter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import wasserstein_distance

from mcicl.analysis.engine.measures import concept_cosines, encode_labels, unit_rows
from mcicl.analysis.engine.sparse_coding import sense_loading, sparse_codes


@dataclass(frozen=True)
class CodeParameters:
    """The data model's parameters as a fitted code reads them (see the module docstring)."""

    n_concepts: int
    n_irrelevant: int  # irrelevant concepts: unowned atoms / 2, rounded
    within_cosine: float
    cross_overlap: float
    other_energy: float  # E||other part||^2 / E||own part||^2
    noise_energy: float  # sigma^2 d in own-feature units
    per_concept_within: np.ndarray
    atom_owner: np.ndarray  # (n_atoms,) concept index, -1 for an atom no word has as its primary atom
    concept_names: list[str]

    def row(self) -> dict[str, Any]:
        """The scalar estimates (JSON-safe)."""
        return {"n_concepts": self.n_concepts, "n_irrelevant": self.n_irrelevant,
                "within_cosine": self.within_cosine, "cross_overlap": self.cross_overlap,
                "other_energy": self.other_energy, "noise_energy": self.noise_energy,
                "owned_atoms": int((self.atom_owner >= 0).sum()), "atoms": len(self.atom_owner)}


def atom_usage(codes: np.ndarray, label_codes: np.ndarray, n_concepts: int) -> np.ndarray:
    """(concepts, atoms): the share of each concept's words that use each atom, a word using an atom when its
    |loading| there is at least half its largest (OMP fills every one of its k slots; slots spent on noise carry
    small loadings)."""
    a = np.abs(np.asarray(codes, dtype=np.float64))
    top = a.max(axis=1, keepdims=True)
    uses = (a >= 0.5 * top) & (top > 0)
    out = np.zeros((n_concepts, a.shape[1]))
    np.add.at(out, label_codes, uses.astype(np.float64))
    return out / np.maximum(np.bincount(label_codes, minlength=n_concepts), 1)[:, None]


def atom_owners(codes: np.ndarray, label_codes: np.ndarray, n_concepts: int) -> np.ndarray:
    """Per atom: the concept it is an own feature of, or -1. Atom j belongs to concept c when c's words use it
    (:func:`atom_usage`) at least twice as often as any other concept's words do and at least half as often as c's
    most used atom. Why both: in the data model a concept's own feature is used by the words of one of its two
    senses (share 1/2), a co-occurring one by a share polysemy_rate of several concepts' words, so an irrelevant
    concept's feature fails the second test even where chance makes one concept its heaviest user."""
    u = atom_usage(codes, label_codes, n_concepts)
    order = np.sort(np.vstack([np.zeros((1, u.shape[1])), u]), axis=0)  # a zero row: one concept has no rival
    best, second = order[-1], order[-2]
    owner = u.argmax(axis=0)
    top_of_owner = u.max(axis=1)[owner]
    ok = (best > 0) & (best >= 2 * second) & (best >= 0.5 * top_of_owner)
    return np.where(ok, owner, -1)


def code_parameters(x: np.ndarray, labels: np.ndarray, dictionary: np.ndarray, codes: np.ndarray,
                    nonzeros: int) -> CodeParameters:
    """The data model's parameters from word vectors ``x`` (n, d), their concept ``labels``, a ``dictionary``
    (m, d) of unit atoms and the words' codes (n, m) with at most ``nonzeros`` atoms each."""
    x = np.asarray(x, dtype=np.float64)
    dic = np.asarray(dictionary, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.float64)
    lab, names = encode_labels(labels)
    K = len(names)
    owner = atom_owners(codes, lab, K)
    own_mask = owner[None, :] == lab[:, None]  # (n, m): atom j belongs to word i's concept
    own = (codes * own_mask) @ dic
    recon = codes @ dic
    other, resid = recon - own, x - recon
    own_energy = float((own ** 2).sum(axis=1).mean())
    if own_energy <= 0:
        raise ValueError("no word loads on an atom of its own concept; accepted: codes whose largest atoms are "
                         "shared by words of one concept")
    U = unit_rows(own)
    S = np.stack([U[lab == c].sum(axis=0) for c in range(K)])  # (K, d) sums of unit own parts
    # Words with no own part (every atom they use is shared) have zero unit rows: counted out of the pairs.
    n = np.bincount(lab, weights=(np.abs(U).sum(axis=1) > 0).astype(np.float64), minlength=K)
    G = S @ S.T
    has_pairs = n >= 2
    mean_pair = np.full(K, np.nan)
    # sum over ordered distinct pairs of cos = ||sum u||^2 - sum ||u||^2 (the unit rows of non-zero own parts)
    self_sq = np.bincount(lab, weights=(U ** 2).sum(axis=1), minlength=K)
    mean_pair[has_pairs] = (np.diag(G)[has_pairs] - self_sq[has_pairs]) / (n[has_pairs] * (n[has_pairs] - 1))
    p_same = np.where(has_pairs, (n / 2 - 1) / np.maximum(n - 1, 1), np.nan)
    within = (mean_pair - p_same) / (1 - p_same)
    cross = G / np.maximum(np.outer(n, n), 1)
    off = ~np.eye(K, dtype=bool)
    d, k = x.shape[1], min(int(nonzeros), len(dic))
    noise = float((resid ** 2).sum(axis=1).mean()) / own_energy * d / max(d - k, 1)
    return CodeParameters(
        n_concepts=K, n_irrelevant=int(round(int((owner < 0).sum()) / 2)),
        within_cosine=float(np.nanmean(within)), cross_overlap=float(cross[off].mean()) if K > 1 else 0.0,
        other_energy=float((other ** 2).sum(axis=1).mean()) / own_energy, noise_energy=noise,
        per_concept_within=within, atom_owner=owner, concept_names=names)


# ------------------------------------------------------------------------------------ held-out statistics


@dataclass(frozen=True)
class HeldOutStatistics:
    """Per-unit statistics of one labelled set of words, the things a world is compared on."""

    within: np.ndarray  # per concept: mean raw cosine over distinct pairs of its words
    cross: np.ndarray  # per unordered concept pair: mean raw cosine between their words
    off_loading: np.ndarray  # per word: share of its code's |loading| on atoms its concept does not own


def heldout_statistics(x: np.ndarray, labels: np.ndarray, dictionary: np.ndarray, owner: np.ndarray,
                       owner_names: list[str], nonzeros: int) -> HeldOutStatistics:
    """Within/cross cosines per concept pair (the geometry engine's :func:`concept_cosines`) and each word's
    off-concept loading: its OMP code on ``dictionary`` (fitted on other words, whose concepts ``owner`` names by
    index into ``owner_names``), the share of |loading| outside its own concept's atoms (1 - sense_loading)."""
    cos = concept_cosines(x, labels)
    index = {c: i for i, c in enumerate(owner_names)}
    own = np.array([index.get(str(lab), -2) for lab in np.asarray(labels, dtype=str)])
    codes = sparse_codes(np.asarray(x, dtype=np.float64), dictionary, nonzeros)
    off = 1.0 - sense_loading(codes, owner, own)
    iu = np.triu_indices(len(cos.names), k=1)
    return HeldOutStatistics(cos.within, cos.cross[iu], off)


def world_distance(real: HeldOutStatistics, world: HeldOutStatistics) -> dict[str, float]:
    """Distances between the real units' and a world's distributions (1-Wasserstein, scipy): cosines =
    (W1 of per-concept within cosines + W1 of per-pair cross cosines) / 2; loadings = W1 of per-word off-concept
    loadings."""
    cosines = 0.5 * (wasserstein_distance(real.within, world.within) + wasserstein_distance(real.cross, world.cross))
    return {"cosines": float(cosines), "loadings": float(wasserstein_distance(real.off_loading, world.off_loading))}


def paired_distances(real: HeldOutStatistics, worlds: dict[str, HeldOutStatistics], reference: str, *,
                     n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Each world's distances from ``real`` and, for every other world, ``reference``'s distance minus that world's
    (below 0: ``reference`` is closer), with 95% percentile intervals from a paired bootstrap: each draw resamples
    the real units (concepts for within cosines, concept pairs for cross cosines, words for loadings; the same draw
    for every world) and each world's own simulated units (independently), so a difference's interval carries the
    real data's variation once, not twice."""
    rng = np.random.default_rng([seed, 71])
    point = {name: world_distance(real, w) for name, w in worlds.items()}
    draws: dict[str, list[dict[str, float]]] = {name: [] for name in worlds}

    def pick(a: np.ndarray) -> np.ndarray:
        return a[rng.integers(0, len(a), len(a))]

    for _ in range(n_boot):
        r = HeldOutStatistics(pick(real.within), pick(real.cross), pick(real.off_loading))
        for name, w in worlds.items():
            draws[name].append(world_distance(r, HeldOutStatistics(pick(w.within), pick(w.cross),
                                                                   pick(w.off_loading))))
    out: dict[str, dict[str, Any]] = {}
    for name in worlds:
        row: dict[str, Any] = {}
        for stat in ("cosines", "loadings"):
            mine = np.array([d[stat] for d in draws[name]])
            row[stat] = point[name][stat]
            row[f"{stat}_ci"] = [float(np.quantile(mine, 0.025)), float(np.quantile(mine, 0.975))]
            if name != reference:
                diff = np.array([d[stat] for d in draws[reference]]) - mine
                row[f"{stat}_{reference}_minus_this"] = point[reference][stat] - point[name][stat]
                row[f"{stat}_{reference}_minus_this_ci"] = [float(np.quantile(diff, 0.025)),
                                                            float(np.quantile(diff, 0.975))]
        out[name] = row
    return out
