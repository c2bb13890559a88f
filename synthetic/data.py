"""The data model: a concept dictionary in R^d and a prompt sampler. OOD scenarios are sampler settings.

Concept k has a common direction a_k and a semantic direction b_k; its word features are
mu_k^{+-} = a_k +- b_k (unit norm, cosine (|a|^2-|b|^2)/(|a|^2+|b|^2) = within_cosine). Label features are
q_k^{+-} = c_k +- d_k. A word is x = mu_{k*}^s + sum_j z_j (a_j + t_j b_j) + xi with z_j ~ Bernoulli(polysemy_rate)
over the other concepts j, and xi ~ N(0, sigma^2 I) (``noise: isotropic``) or xi = P_perp g with g ~ N(0, sigma^2 I)
and P_perp the projector off every dictionary direction (``noise: orthogonal``). A prompt is L demonstrations
(x_l, y_l = q_{k*}^{s_l}) and a query x_q whose target is the query's sign s_q. A polysemous query adds a second
task concept's word mu_{k'}^t; in context, a sentence's context adds gamma a_{k*} (it selects the concept the
demonstrations ask about) or, adversarially, gamma a_{k'} (it selects the other one), gamma = context_strength:
the synthetic analogue of a real word's hidden state moving toward its sense's concept centroid (docs/contexts.md).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

from mcicl.synthetic.config import SyntheticConfig

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype named by a config's ``dtype`` field."""
    return _DTYPES[name]


@dataclass
class Dictionary:
    """Ground-truth feature directions. Word tables have C = K + K_irr rows, label tables K (or 1 if shared)."""

    a: torch.Tensor  # (C, d) concept-common directions
    b: torch.Tensor  # (C, d) semantic directions
    c: torch.Tensor  # (K or 1, d) label-common directions
    dl: torch.Tensor  # (K or 1, d) label-semantic directions
    a_unseen: torch.Tensor | None  # (d,) fresh concept for the unseen_concept scenario
    b_unseen: torch.Tensor | None
    c_unseen: torch.Tensor | None
    d_unseen: torch.Tensor | None
    b_switched: torch.Tensor | None  # (K, d) fresh semantic directions for the switched_features scenario
    basis: torch.Tensor  # (n_directions, d) orthonormal rows spanning every direction above but b_switched
    K: int
    shared_labels: bool = False  # one label pair for every concept (c and dl have one row); else row k is concept k

    @property
    def C(self) -> int:
        """Number of word concepts (task + irrelevant)."""
        return self.a.shape[0]

    def mu(self, k: int, s: int) -> torch.Tensor:
        """Word feature mu_k^s."""
        return self.a[k] + s * self.b[k]

    def q(self, k: int, s: int) -> torch.Tensor:
        """Label feature q_k^s."""
        i = 0 if self.shared_labels else k
        return self.c[i] + s * self.dl[i]

    def noise_projector(self) -> torch.Tensor:
        """Projector onto the orthogonal complement of every dictionary direction (the noise subspace)."""
        return torch.eye(self.a.shape[1], dtype=self.a.dtype) - self.basis.T @ self.basis

    def span_projector(self) -> torch.Tensor:
        """Projector onto the span of the dictionary directions (I - noise_projector)."""
        return self.basis.T @ self.basis


def generator(config: SyntheticConfig, purpose: int) -> torch.Generator:
    """A torch Generator for one purpose (1 init, 2 training set, 3 test set, 10+i scenario SCENARIOS[i], ...)."""
    return torch.Generator().manual_seed(config.seed * 1_000_003 + purpose)


@functools.lru_cache(maxsize=64)
def derived_seeds(seed: int, seeds: int) -> tuple[int, ...]:
    """The seeds of ``dictionary: per_seed`` runs: numpy's SeedSequence derives seed i's from (seed, i), so the
    streams are independent, where seed + i would make runs with neighbouring seeds share seeds. Cached: the
    minibatch of every step needs them."""
    return tuple(int(np.random.SeedSequence(seed, spawn_key=(i,)).generate_state(1)[0]) for i in range(seeds))


def seed_configs(config: SyntheticConfig) -> list[SyntheticConfig]:
    """For ``dictionary: per_seed``: one single-seed config per seed i, with seed ``derived_seeds(seed, seeds)[i]``."""
    return [replace(config, seeds=1, dictionary="shared", seed=s) for s in derived_seeds(config.seed, config.seeds)]


def build_dictionary(config: SyntheticConfig) -> Dictionary:
    """The concept dictionary of ``config``, fixed by ``config.seed`` (with ``dictionary: per_seed`` the run draws
    one per seed, from ``seed_configs``)."""
    cfg = config
    rng = np.random.default_rng([cfg.seed, 7])
    n = cfg.directions_needed()
    # Orthonormal directions: QR of a Gaussian matrix (the columns of Q are uniformly random and orthonormal).
    q, _ = np.linalg.qr(rng.standard_normal((cfg.d, n)))
    dirs = iter(q.T)
    C, nl = cfg.K + cfg.K_irr, 1 if cfg.shared_labels else cfg.K
    e_a = np.stack([next(dirs) for _ in range(C)])
    e_b = np.stack([next(dirs) for _ in range(C)])
    e_c = np.stack([next(dirs) for _ in range(nl)])
    e_d = np.stack([next(dirs) for _ in range(nl)])
    a_norm, b_norm = math.sqrt((1 + cfg.within_cosine) / 2), math.sqrt((1 - cfg.within_cosine) / 2)
    if cfg.cross_overlap > 0:
        # a_k = |a| (sqrt(1-rho) e_k + sqrt(rho) g): <mu_k^s, mu_j^t> = |a|^2 rho = cross_overlap for k != j.
        g = next(dirs)
        rho = cfg.cross_overlap / a_norm**2
        a = a_norm * (math.sqrt(1 - rho) * e_a + math.sqrt(rho) * g)
    else:
        a = a_norm * e_a
    b = b_norm * e_b
    c_norm, d_norm = math.sqrt((1 + cfg.label_cosine) / 2), math.sqrt((1 - cfg.label_cosine) / 2)
    unseen = [None] * 4
    if "unseen_concept" in cfg.scenarios:
        u = [next(dirs) for _ in range(4)]
        unseen = [a_norm * u[0], b_norm * u[1], c_norm * u[2], d_norm * u[3]]
    switched = None
    if "switched_features" in cfg.scenarios:
        # Drawn after the dictionary and orthogonalised against it, so the dictionary (and the trained model)
        # do not depend on whether this scenario is evaluated.
        g = rng.standard_normal((cfg.d, cfg.K))
        full, _ = np.linalg.qr(np.concatenate([q, g], 1))
        switched = b_norm * full[:, n:].T
    dt = torch_dtype(cfg.dtype)

    def t(x: np.ndarray | None) -> torch.Tensor | None:
        return None if x is None else torch.as_tensor(np.asarray(x), dtype=dt)

    return Dictionary(t(a), t(b), t(c_norm * e_c), t(d_norm * e_d), *(t(x) for x in unseen), t(switched), t(q.T),
                      cfg.K, cfg.shared_labels)


@dataclass(frozen=True)
class PromptSpec:
    """How prompts are drawn: the training distribution, or an OOD scenario's shift of it."""

    L: int
    prior: tuple[float, ...]  # pi over the K task concepts
    sigma: float
    polysemy_rate: float
    cooccurrence: str  # "patterned" (training rule), "switched" (the complement rule), "random"
    noise: str = "isotropic"  # "isotropic" or "orthogonal" (off the dictionary span)
    both_signs: bool = True
    label_noise: float = 0.0
    demo_label_noise: float = 0.0
    flip_labels: bool = False
    polysemous_query: bool = False
    unseen: bool = False
    switched_semantics: bool = False  # the task concept's b_k is replaced by Dictionary.b_switched[k]
    query_context: int = 0  # polysemous query in context: +1 selects k*, -1 selects k', 0 none
    context_strength: float = 0.0


def skewed_prior(K: int, mass: float) -> tuple[float, ...]:
    """A prior with ``mass`` on concept c0 and the rest spread uniformly (uniform when mass is 0)."""
    if mass <= 0 or K == 1:
        return tuple([1.0 / K] * K)
    return tuple([mass] + [(1 - mass) / (K - 1)] * (K - 1))


def train_spec(cfg: SyntheticConfig) -> PromptSpec:
    """The training (and in-distribution test) prompt distribution."""
    return PromptSpec(cfg.L, skewed_prior(cfg.K, cfg.train_skew), cfg.sigma, cfg.polysemy_rate, cfg.cooccurrence,
                      cfg.noise, cfg.both_signs, cfg.label_noise, cfg.demo_label_noise)


def scenario_spec(cfg: SyntheticConfig, name: str) -> PromptSpec:
    """The test distribution of OOD scenario ``name``: the training spec with one thing changed."""
    base = train_spec(cfg)
    shifts = {
        "length_short": lambda: replace(base, L=max(2 if cfg.both_signs else 1, cfg.L // 2)),
        "length_long": lambda: replace(base, L=2 * cfg.L),
        "length_long_4x": lambda: replace(base, L=4 * cfg.L),
        "skewed_concepts": lambda: replace(base, prior=skewed_prior(cfg.K, 0.8)),
        "uniform_concepts": lambda: replace(base, prior=skewed_prior(cfg.K, 0.0)),
        # The query concept's semantic direction b_k is replaced by a fresh direction b'_k in the demonstrations
        # and the query alike; labels follow the sign on b'_k. A model that reads the sign off the query alone
        # (it learned b_k) is at chance; a rule that compares the query with the demonstrations is not. No
        # co-occurring features: under the patterned rule their signs would leak the answer to such a model.
        "switched_features": lambda: replace(base, switched_semantics=True, polysemy_rate=0.0),
        # Co-occurrence always on a concept pair and sign pattern outside the training rule; with
        # cooccurrence="random" training saw every pair, so this is only a change of pattern, not OOD.
        "switched_cooccurrence": lambda: replace(base, cooccurrence="switched",
                                                 polysemy_rate=max(cfg.polysemy_rate, 0.1)),
        "flipped_labels": lambda: replace(base, flip_labels=True),
        "polysemous_query": lambda: replace(base, polysemous_query=True),
        "noise_x2": lambda: replace(base, sigma=2 * cfg.sigma),
        "noise_x5": lambda: replace(base, sigma=5 * cfg.sigma),
        "unseen_concept": lambda: replace(base, unseen=True),
        "polysemous_in_context": lambda: replace(base, polysemous_query=True, query_context=1,
                                                 context_strength=cfg.context_strength),
        "polysemous_in_context_adversarial": lambda: replace(base, polysemous_query=True, query_context=-1,
                                                             context_strength=cfg.context_strength),
    }
    if name not in shifts:
        raise ValueError(f"unknown OOD scenario {name!r}; accepted: {', '.join(shifts)}")
    return shifts[name]()


@dataclass
class Prompts:
    """A batch of prompts for S seeds: demonstrations, labels, query, target and bookkeeping."""

    x: torch.Tensor  # (S, n, L, d) demonstration words
    y: torch.Tensor  # (S, n, L, d) demonstration labels
    xq: torch.Tensor  # (S, n, d) query words
    target: torch.Tensor  # (S, n) +-1, the answer the demonstrations imply (with label noise)
    same: torch.Tensor  # (S, n, L) bool: demonstration's semantic sign equals the query's
    concept: torch.Tensor  # (S, n) task concept index (K for the unseen concept)
    xi: torch.Tensor  # (S, n, L, d) the demonstrations' noise

    def index(self, idx: torch.Tensor) -> Prompts:
        """The prompts at per-seed indices ``idx`` (S, B)."""
        return Prompts(*(Prompts.gather(getattr(self, f), idx)
                         for f in ("x", "y", "xq", "target", "same", "concept", "xi")))

    @staticmethod
    def gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``t[s, idx[s]]`` for every seed s of a per-seed tensor t (S, n, ...): (S, B, ...), contiguous.

        One index_select of whole rows on the (S n, ...) view: 2-2.5x faster than t[rows, idx] (two index tensors)
        at 64-256 stacked instances.
        """
        S, n = t.shape[:2]
        flat = (idx + n * torch.arange(S, device=idx.device)[:, None]).flatten()
        return t.flatten(0, 1).index_select(0, flat).unflatten(0, idx.shape)

    def seeds(self, sl: slice) -> Prompts:
        """The prompts of the seeds in ``sl`` (a view, no copy)."""
        return Prompts(*(getattr(self, f.name)[sl] for f in fields(Prompts)))

    def to(self, device: torch.device | str) -> Prompts:
        """The prompts on ``device``."""
        return Prompts(*(getattr(self, f.name).to(device) for f in fields(Prompts)))

    @staticmethod
    def cat(parts: Sequence[Prompts]) -> Prompts:
        """Prompt sets of several seed groups (same n, L and d) concatenated along the seed axis S."""
        return Prompts(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Prompts)))


@functools.lru_cache(maxsize=64)
def _allowed(C: int, K: int, rule: str) -> torch.Tensor:
    """(K+1, C) bool: which concepts j may co-occur in a word of concept k (row K: the unseen concept). Cached
    (every prompt draw reads it): callers index it and never write to it."""
    k = torch.arange(K + 1)[:, None]
    j = torch.arange(C)[None, :]
    if rule == "patterned":
        ok = (j + k) % 2 == 0
    elif rule == "switched":
        ok = (j + k) % 2 == 1
    else:
        ok = torch.ones(K + 1, C, dtype=torch.bool)
    ok = ok & (j != k)
    ok[K] = True  # the unseen concept's words co-occur with any trained concept
    return ok


def _cooccurring(dic: Dictionary, spec: PromptSpec, k: torch.Tensor, s: torch.Tensor,
                 gen: torch.Generator, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_j z_j (a_j + t_j b_j) for words of concept ``k`` and sign ``s`` (same shape), where it is not zero:
    (rows, sums), the flat indices of the words with at least one co-occurring feature and their sums (rows, d).

    ``exclude`` (same shape as ``k``, -1 for none) switches off one partner concept per word: the caller adds
    that concept itself (a polysemous word's second sense), which must not appear twice.
    """
    C, d = dic.C, dic.a.shape[1]
    allowed = _allowed(C, dic.K, spec.cooccurrence).index_select(0, k.reshape(-1)).view(*k.shape, C)  # (..., C)
    if exclude is not None:
        allowed = allowed & (torch.arange(C) != exclude[..., None])
    z = (torch.rand(*k.shape, C, generator=gen) < spec.polysemy_rate) & allowed
    t = torch.where(torch.rand(*k.shape, C, generator=gen) < 0.5, 1, -1) if spec.cooccurrence == "random" else None
    # Most words have no partner (1 - 0.9^3 = 27% have one at the default rate): the products run on the others
    # only, row by row the same sums as on every word.
    z = z.reshape(-1, C)
    rows = z.any(1).nonzero().squeeze(1)
    zt = z.index_select(0, rows).to(dic.a.dtype)  # (rows, C)
    if t is not None:
        tt = t.reshape(-1, C).index_select(0, rows).to(dic.a.dtype)
        return rows, zt @ dic.a + (zt * tt) @ dic.b
    # Patterned (partners share the word's sign t_j = s: the training rule) or switched (never seen: t_j = -s).
    # One product z [a | b] gives sum_j z_j a_j and sum_j z_j b_j; the second times +-s is exactly
    # sum_j z_j t_j b_j (a sign flip commutes with rounding), so the sums equal the two products z a + (z t) b.
    ab = zt @ _stacked(dic)  # (rows, 2d)
    sign = s.reshape(-1).index_select(0, rows)[:, None].to(dic.a.dtype)
    if spec.cooccurrence != "patterned":
        sign = -sign
    return rows, ab[:, :d] + sign * ab[:, d:]


def _stacked(dic: Dictionary) -> torch.Tensor:
    """[a | b] (C, 2d), cached on the dictionary (it never changes after it is built)."""
    return _cached(dic, "_ab", lambda: torch.cat([dic.a, dic.b], 1))


def _signs(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(shape, generator=gen) < 0.5, 1, -1)


def sample_words(dic: Dictionary, spec: PromptSpec, k: torch.Tensor, s: torch.Tensor,
                 gen: torch.Generator, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(words, noise) for concepts ``k`` and signs ``s`` (any shape); words = mu_k^s + co-occurring + xi.

    ``exclude``: a partner concept per word that may not co-occur (see ``_cooccurring``)."""
    d = dic.a.shape[1]
    if spec.unseen:
        base = dic.a_unseen + s[..., None].to(dic.a.dtype) * dic.b_unseen
    elif spec.switched_semantics:
        base = dic.a[k] + s[..., None].to(dic.a.dtype) * dic.b_switched[k]
    else:
        # mu_k^s = a_k + s b_k looked up in a (2C, d) table: the same sums as a[k] + s * b[k], one gather.
        base = F.embedding(2 * k + (s > 0).long(), _word_table(dic))
    rows, cooc = _cooccurring(dic, spec, k, s, gen, exclude)
    # normal_(0, sigma) draws the stream randn draws and scales it inside the fill: (r cos theta) sigma + 0, the
    # same value as sigma * randn, one pass fewer.
    xi = torch.empty(*k.shape, d, dtype=dic.a.dtype).normal_(0.0, spec.sigma, generator=gen)
    if spec.noise == "orthogonal":
        xi = xi @ dic.noise_projector()  # symmetric projector: xi P = P xi per word
    # words = (mu + co-occurring) + xi, the co-occurring part added only where it is not zero (elsewhere
    # (mu + 0) + xi = mu + xi exactly): the same values, without a pass over the words that have no partner.
    flat_xi = xi.reshape(-1, d)
    if base.shape[:-1] == k.shape:  # a fresh (words, d) tensor: add the noise in place (no new buffer)
        base = base.view(-1, d)
        fix = (base.index_select(0, rows) + cooc) + flat_xi.index_select(0, rows)
        x = base.add_(flat_xi)
    else:  # one word for all (the unseen concept): broadcast
        base = base.expand(*k.shape, d).reshape(-1, d)
        fix = (base.index_select(0, rows) + cooc) + flat_xi.index_select(0, rows)
        x = base + flat_xi
    x.index_copy_(0, rows, fix)
    return x.view(*k.shape, d), xi


def _word_table(dic: Dictionary) -> torch.Tensor:
    """The (2C, d) table of mu_k^s, row 2k + (s > 0), cached on the dictionary."""
    return _cached(dic, "_mu", lambda: torch.stack([dic.a - dic.b, dic.a + dic.b], 1).flatten(0, 1))


def _cached(dic: Dictionary, name: str, make) -> torch.Tensor:
    """A table derived from ``dic.a`` and ``dic.b``, kept on the dictionary and rebuilt if either tensor was
    replaced or written to since (keyed by their identity and version counters)."""
    key = (id(dic.a), dic.a._version, id(dic.b), dic.b._version)
    held = dic.__dict__.get(name)
    if held is None or held[0] != key:
        held = dic.__dict__[name] = (key, make())
    return held[1]


def labels(dic: Dictionary, k: torch.Tensor, s: torch.Tensor, unseen: bool = False) -> torch.Tensor:
    """Label features q_k^s (shape (*k.shape, d))."""
    sf = s[..., None].to(dic.a.dtype)
    # Shared labels: every concept, the unseen one included, uses the one pair. Per-concept labels (also for K = 1,
    # where the table has one row too): the unseen concept has its own fresh pair.
    if unseen and not dic.shared_labels:
        return dic.c_unseen + sf * dic.d_unseen
    i = torch.zeros_like(k) if dic.shared_labels else k
    # q_i^s = c_i + s d_i looked up in a (2 rows, d) table per label pair: the same sums, one gather.
    table = torch.stack([dic.c - dic.dl, dic.c + dic.dl], 1).flatten(0, 1)
    return F.embedding(2 * i + (s > 0).long(), table)


def sample_prompts(dic: Dictionary, spec: PromptSpec, S: int, n: int, gen: torch.Generator) -> Prompts:
    """``n`` prompts for each of ``S`` seeds, drawn from ``spec``."""
    L, K = spec.L, dic.K
    prior = torch.tensor(spec.prior, dtype=torch.float64)
    k = torch.multinomial(prior.expand(S * n, K), 1, replacement=True, generator=gen).reshape(S, n)
    if spec.unseen:
        k = torch.full((S, n), K, dtype=torch.long)
    s_demo = _signs((S, n, L), gen)
    if spec.both_signs and L >= 2:
        # A prompt whose demonstrations all share one sign cannot answer a query of the other sign:
        # flip one random demonstration there, so every prompt shows both senses.
        one_sided = (s_demo == s_demo[..., :1]).all(-1)
        pos = torch.randint(L, (S, n), generator=gen)
        flip = one_sided[..., None] & (torch.arange(L) == pos[..., None])
        s_demo = torch.where(flip, -s_demo, s_demo)
    s_q = _signs((S, n), gen)
    kk = torch.cat([k[..., None].expand(S, n, L), k[..., None]], -1)  # (S, n, L+1)
    ss = torch.cat([s_demo, s_q[..., None]], -1)
    exclude = None
    if spec.polysemous_query:
        # A second task concept k' != k*, always present in the query (once: not also as a co-occurring feature).
        k2 = (k + 1 + torch.randint(K - 1, (S, n), generator=gen)) % K
        exclude = torch.cat([torch.full((S, n, L), -1), k2[..., None]], -1)
    words, xi = sample_words(dic, spec, kk, ss, gen, exclude)
    x, xq = words[..., :L, :], words[..., L, :]
    if spec.polysemous_query:
        xq = xq + dic.a[k2] + _signs((S, n), gen)[..., None].to(dic.a.dtype) * dic.b[k2]
        if spec.query_context:
            selected = k if spec.query_context > 0 else k2
            xq = xq + spec.context_strength * dic.a[selected]
    label_sign = -s_demo if spec.flip_labels else s_demo
    target = -s_q if spec.flip_labels else s_q
    if spec.demo_label_noise > 0:
        label_sign = torch.where(torch.rand(S, n, L, generator=gen) < spec.demo_label_noise, -label_sign,
                                 label_sign)
    if spec.label_noise > 0:
        target = torch.where(torch.rand(S, n, generator=gen) < spec.label_noise, -target, target)
    y = labels(dic, k[..., None].expand(S, n, L), label_sign, unseen=spec.unseen)
    same = s_demo == s_q[..., None]
    return Prompts(x, y, xq, target.to(dic.a.dtype), same, k, xi[..., :L, :])


def sample_mixed_prompts(dic: Dictionary, spec: PromptSpec, S: int, n: int, gen: torch.Generator,
                         concepts: int = 2) -> tuple[Prompts, torch.Tensor]:
    """Prompts whose demonstrations come from ``concepts`` distinct task concepts, as in the real n-way concept
    task: the query's concept k and ``concepts - 1`` others drawn uniformly from the rest, each demonstration
    labelled with its own concept's label q_{k_l}^{s_l}. The L slots are split as evenly as possible
    (slot l gets group l mod ``concepts``, group 0 being the query's concept), then shuffled within the prompt;
    ``both_signs`` applies to the query concept's demonstrations. The target is the query's sign s_q, so only
    same-concept, same-sign demonstrations carry the answer's label.

    Returns (prompts, demo_concept (S, n, L)); ``prompts.same`` is True for demonstrations of the query's
    concept *and* sign. Only the training distribution's settings are used (no OOD shifts)."""
    L, K = spec.L, dic.K
    if concepts < 2 or concepts > K:
        raise ValueError(f"concepts={concepts}; accepted: an integer in [2, K = {K}]")
    if L < 2 * concepts:
        raise ValueError(f"L={L} demonstrations; accepted: L >= 2 x concepts = {2 * concepts} (at least two "
                         "demonstrations of the query's concept, for both signs)")
    prior = torch.tensor(spec.prior, dtype=torch.float64)
    k = torch.multinomial(prior.expand(S * n, K), 1, replacement=True, generator=gen).reshape(S, n)
    # The other concepts: the lowest random keys among the concepts that are not k.
    keys = torch.rand(S, n, K, generator=gen).scatter(-1, k[..., None], 2.0)
    others = keys.argsort(-1)[..., :concepts - 1]  # (S, n, concepts - 1)
    group = (torch.arange(L) % concepts).expand(S, n, L)
    group = group.gather(-1, torch.rand(S, n, L, generator=gen).argsort(-1))  # shuffled slots
    table = torch.cat([k[..., None], others], -1)  # (S, n, concepts): group g -> concept
    demo_concept = table.gather(-1, group)
    s_demo = _signs((S, n, L), gen)
    own = group == 0
    if spec.both_signs:
        # Among the query concept's demonstrations, flip one at random where they all share one sign.
        ref = torch.where(own, s_demo, 0).sum(-1).abs() == own.sum(-1)  # one-sided
        pick = torch.where(own, torch.rand(S, n, L, generator=gen), 2.0).argmin(-1)
        flip = ref[..., None] & (torch.arange(L) == pick[..., None])
        s_demo = torch.where(flip, -s_demo, s_demo)
    s_q = _signs((S, n), gen)
    kk = torch.cat([demo_concept, k[..., None]], -1)
    ss = torch.cat([s_demo, s_q[..., None]], -1)
    words, xi = sample_words(dic, spec, kk, ss, gen)
    target = s_q
    if spec.label_noise > 0:
        target = torch.where(torch.rand(S, n, generator=gen) < spec.label_noise, -target, target)
    label_sign = s_demo
    if spec.demo_label_noise > 0:
        label_sign = torch.where(torch.rand(S, n, L, generator=gen) < spec.demo_label_noise, -label_sign,
                                 label_sign)
    y = labels(dic, demo_concept, label_sign)
    same = own & (s_demo == s_q[..., None])
    prompts = Prompts(words[..., :L, :], y, words[..., L, :], target.to(dic.a.dtype), same, k, xi[..., :L, :])
    return prompts, demo_concept
