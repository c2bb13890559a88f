"""The quantities the theory talks about, as named functions. Each returns per-seed values (lists of length S).

- losses: logistic and 0-1;
- correct attention: attention mass on demonstrations whose semantic sign equals the query's, and its
  polarisation |2 * correct - 1| per concept (sign-symmetric: high for both attention patterns);
- on the prompts themselves (so per OOD scenario): the score gap, mean x_l^T W_K^T W_Q x_q over same-sign
  demonstrations minus over the others, and the readout on the demonstrations' labels signed by the answer,
  s f_MLP(y_l), for the answer's label (same-sign demonstrations) and the other label;
- products through W_K^T W_Q: concept-specific max_{k,s} <W_Q mu_k^s, W_K mu_k^s>, complement
  max_{k,s} <W_Q mu_k^s, W_K mu_k^{-s}> (both by :func:`mcicl.analysis.engine.qk_products.concept_products`, the
  definition real heads use), noise max |<W_Q x_q, W_K xi_l>| over training prompts, also with
  xi_l split into its part inside the dictionary span and outside it (P_perp xi_l);
- MLP weights: max_r <w_{+,r}, q_k^+>, max_r <w_{-,r}, q_k^-> (correct) and the wrong-label projections;
- idempotent decomposition of M = W_K^T W_Q: coefficients on P_{a_k}, P_{b_k} and on the noise subspace.
"""

from __future__ import annotations

import numpy as np
import torch

from mcicl.analysis.engine.qk_products import concept_products
from mcicl.synthetic.data import Dictionary, Prompts
from mcicl.synthetic.model import OneLayerTransformer, logistic_loss, zero_one_loss


def _seedwise(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.detach().cpu()]


@torch.no_grad()
def prompt_metrics(model: OneLayerTransformer, prompts: Prompts, K: int, max_demos: int = 2**19) -> dict:
    """Losses, correct attention and per-concept polarisation on ``prompts`` (per seed).

    Computed in blocks of whole instances holding at most ``max_demos`` demonstrations (an instance with more is
    cut into blocks of prompts, by its own size only), so intermediates stay cache-sized and every slice is a
    view. A cell evaluated inside a batch or alone thus runs the same per-instance operations.
    """
    S, n, L = prompts.same.shape
    per_block = max(1, max_demos // (n * L))  # instances per block
    chunk = n if n * L <= max_demos else max(1, max_demos // L)  # prompts per block (only when per_block is 1)
    values = []
    for a in range(0, S, per_block):
        rows = slice(a, a + per_block)
        part = model if per_block >= S else model.instances(rows)
        pieces = [_per_prompt(part, prompts, rows, slice(i, i + chunk)) for i in range(0, n, chunk)]
        values.append([torch.cat(v, 1) for v in zip(*pieces, strict=True)])  # (S', n) each
    loss, err, correct, gap, answer, other = (torch.cat(v, 0) for v in zip(*values, strict=True))
    concept = prompts.concept
    polar = []
    for k in range(K):
        mask = (concept == k).to(correct.dtype)
        mean_k = (correct * mask).sum(1) / mask.sum(1).clamp(min=1)  # (S,)
        polar.append(torch.where(mask.sum(1) > 0, (2 * mean_k - 1).abs(), torch.nan))
    polar_t = torch.stack(polar, 1)  # (S, K)
    return {
        "logistic_loss": _seedwise(loss.mean(1)),
        "zero_one": _seedwise(err.mean(1)),
        "correct_attention": _seedwise(correct.mean(1)),
        "polarisation": _seedwise(torch.nanmean(polar_t, 1)),
        "polarisation_per_concept": polar_t.tolist(),
        "score_gap": _seedwise(gap.mean(1)),
        "readout_answer_label": _seedwise(answer.mean(1)),
        "readout_other_label": _seedwise(other.mean(1)),
    }


def _per_prompt(model: OneLayerTransformer, prompts: Prompts, rows: slice, sl: slice) -> tuple[torch.Tensor, ...]:
    """Per-prompt losses, correct attention, score gap and label readouts (S', b each) of prompts [rows, sl]."""
    x, y, xq, target = (t[rows, sl] for t in (prompts.x, prompts.y, prompts.xq, prompts.target))
    out = model(x, y, xq)
    same = prompts.same[rows, sl].to(out.alpha.dtype)  # (S', b, L)
    correct = (out.alpha * same).sum(-1)  # (S', b)
    # Attention score x_l^T W_K^T W_Q x_q: mean over same-sign demonstrations minus over the others.
    n_same, n_other = same.sum(-1).clamp(min=1), (1 - same).sum(-1).clamp(min=1)
    gap = (out.scores * same).sum(-1) / n_same - (out.scores * (1 - same)).sum(-1) / n_other
    # The readout on each demonstration's label, signed by the answer: same-sign demonstrations carry the
    # answer's label (also under flipped labels), the others the other label.
    label_margin = target[..., None] * model.readout(y)  # (S', b, L)
    answer = (label_margin * same).sum(-1) / n_same
    other = (label_margin * (1 - same)).sum(-1) / n_other
    return logistic_loss(out.f, target), zero_one_loss(out.f, target), correct, gap, answer, other


@torch.no_grad()
def product_matrix(model: OneLayerTransformer, seeds: slice = slice(None)) -> torch.Tensor:
    """M = W_K^T W_Q for the model's seeds ``seeds`` (S, d, d): the score is x_l^T M x_q."""
    return torch.einsum("sji,sjk->sik", model.W_K[seeds], model.W_Q[seeds])


@torch.no_grad()
def weight_metrics(model: OneLayerTransformer, dic: Dictionary, train: Prompts, n_noise: int = 256,
                   seeds: slice = slice(None)) -> dict:
    """Products through W_K^T W_Q, MLP projections and the decomposition coefficients (per seed), for the model's
    seeds ``seeds`` (those whose dictionary is ``dic``; ``train`` holds their training prompts)."""
    # On the dictionary's device: a model trained on a GPU is measured against the CPU dictionary and prompts.
    M = product_matrix(model, seeds).to(dic.a.device)  # (S, d, d): only these seeds (a cell of a stacked batch)
    K = dic.K
    mus = torch.stack([torch.stack([dic.mu(k, s) for k in range(K)]) for s in (1, -1)])  # (2, K, d)
    # <W_Q mu_k^s, W_K mu_k^s> and <W_Q mu_k^s, W_K mu_k^{-s}>: the engine's definition, shared with real heads
    W_Q, W_K = (w[seeds].detach().cpu().numpy() for w in (model.W_Q, model.W_K))
    mus_np = mus.cpu().numpy()
    pairs = [concept_products(W_Q, W_K, mus_np[t], mus_np[1 - t]) for t in (0, 1)]  # sign s = +1, -1
    same = np.stack([p[0] for p in pairs], 1)  # (S, 2, K)
    comp = np.stack([p[1] for p in pairs], 1)
    sub = slice(0, min(n_noise, train.xq.shape[1]))
    xi, xq = train.xi[:, sub].to(dic.a.device), train.xq[:, sub].to(dic.a.device)
    P = dic.noise_projector()
    pulled = torch.einsum("sde,sne->snd", M, xq)  # M x_q, once for the three products below
    signed = torch.einsum("snld,snd->snl", xi, pulled)
    # The noise split into its part inside the dictionary span (which aliases the features) and outside it:
    # <P_perp xi, M x_q> = <xi, P_perp M x_q> (P_perp symmetric), and the in-span part is the rest.
    signed_out = torch.einsum("snld,snd->snl", xi, pulled @ P)
    noise, noise_out, noise_in = signed.abs(), signed_out.abs(), (signed - signed_out).abs()
    qs = torch.stack([torch.stack([dic.q(k, s) for k in range(K)]) for s in (1, -1)])  # (2, K, d)
    w_plus, w_minus = model.w_plus[seeds].to(dic.a.device), model.w_minus[seeds].to(dic.a.device)
    proj_plus = torch.einsum("smd,tkd->stkm", w_plus, qs).amax(-1)  # (S, 2, K): max_r <w_+, q_k^s>
    proj_minus = torch.einsum("smd,tkd->stkm", w_minus, qs).amax(-1)
    a_hat = dic.a[:K] / dic.a[:K].norm(dim=1, keepdim=True)
    b_hat = dic.b[:K] / dic.b[:K].norm(dim=1, keepdim=True)
    return {
        "concept_product": [float(v) for v in same.reshape(len(same), -1).max(1)],
        "complement_product": [float(v) for v in comp.reshape(len(comp), -1).max(1)],
        "noise_product": _seedwise(noise.flatten(1).amax(1)),
        "noise_product_in_span": _seedwise(noise_in.flatten(1).amax(1)),  # max |<W_Q x_q, W_K P_span xi_l>|
        "noise_product_off_span": _seedwise(noise_out.flatten(1).amax(1)),  # max |<W_Q x_q, W_K P_perp xi_l>|
        "mlp_plus_correct": _seedwise(proj_plus[:, 0].mean(1)),  # mean_k max_r <w_{+,r}, q_k^+>
        "mlp_minus_correct": _seedwise(proj_minus[:, 1].mean(1)),  # mean_k max_r <w_{-,r}, q_k^->
        "mlp_plus_wrong": _seedwise(proj_plus[:, 1].mean(1)),  # mean_k max_r <w_{+,r}, q_k^->
        "mlp_minus_wrong": _seedwise(proj_minus[:, 0].mean(1)),  # mean_k max_r <w_{-,r}, q_k^+>
        "coef_a": _seedwise(torch.einsum("kd,sde,ke->sk", a_hat, M, a_hat).mean(1)),  # <P_{a_k}, M>
        "coef_b": _seedwise(torch.einsum("kd,sde,ke->sk", b_hat, M, b_hat).mean(1)),  # <P_{b_k}, M>
        "coef_noise": _seedwise(torch.linalg.matrix_norm(P @ M @ P)),  # |P_noise M P_noise|_F
    }


@torch.no_grad()
def map_metrics(model: OneLayerTransformer, prompts: Prompts) -> dict:
    """What a sweep's map shows of a prompt set, per seed: the 0-1 error and the correct attention (one forward
    pass; :func:`prompt_metrics` adds the losses, polarisation, score gaps and label readouts)."""
    out = model(prompts.x, prompts.y, prompts.xq)
    correct = (out.alpha * prompts.same.to(out.alpha.dtype)).sum(-1).mean(1)
    return {"zero_one": _seedwise(zero_one_loss(out.f, prompts.target).mean(1)),
            "correct_attention": _seedwise(correct)}


def same_concept_attention(alpha: torch.Tensor, demo_concept: torch.Tensor,
                           query_concept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The real probe's statistic on synthetic prompts: the share of the query's attention mass on demonstrations
    of the query's concept, and its chance value (the share of such demonstrations), per seed.

    alpha (S, n, L) attention over demonstrations (rows sum to 1), demo_concept (S, n, L) and query_concept (S, n)
    concept indices -> (value (S,), chance (S,)), each the mean over the n prompts of

        value  = sum_{l: k_l = k_q} alpha_l / sum_l alpha_l,      chance = #{l: k_l = k_q} / L.
    """
    match = (demo_concept == query_concept[..., None]).to(alpha.dtype)
    value = (alpha * match).sum(-1) / alpha.sum(-1)
    return value.mean(1), match.mean(-1).mean(1)


@torch.no_grad()
def mixed_concept_metrics(model: OneLayerTransformer, prompts: Prompts, demo_concept: torch.Tensor) -> dict:
    """On prompts of ``synthetic.data.sample_mixed_prompts`` (demonstrations from several concepts): 0-1 error,
    same-concept attention and its chance, and the correct attention (same concept and sign), per seed."""
    out = model(prompts.x, prompts.y, prompts.xq)
    value, chance = same_concept_attention(out.alpha, demo_concept, prompts.concept)
    correct = (out.alpha * prompts.same.to(out.alpha.dtype)).sum(-1).mean(1)
    return {"zero_one": _seedwise(zero_one_loss(out.f, prompts.target).mean(1)),
            "same_concept_attention": _seedwise(value), "same_concept_chance": _seedwise(chance),
            "correct_attention": _seedwise(correct)}
