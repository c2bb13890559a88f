"""Baseline learners that take the same prompts as the transformer (in the spirit of dtsip's baselines).

Each returns a score f (S, n) whose sign is the predicted answer, so one evaluation loop scores them all
(``model.zero_one_loss``). Label vectors y_l are read as signs with the training label code
ell(y) = sign(<y, sum_k d_k>) (what a trained readout learns); a label of a fresh code reads as 0.

- ``QueryOnly``: logistic regression on the query word x_q alone, fitted on the training prompts (it ignores
  the context): what a context-blind model achieves.
- ``nearest_demonstration``: the label of the demonstration with the largest <x_l, x_q> (1-nearest neighbour).
- ``averaging``: f = (1/L) sum_l ell(y_l) <x_l, x_q> (dtsip's AveragingModel).
- ``oracle``: the rule of the known generator: the query's coordinate on its concept's true semantic direction
  in the scenario (b_k, or the fresh b'_k / b_unseen), sign-flipped where the scenario flips the answer. It
  knows the concept (the labels reveal it) and ignores the weaker sign evidence of co-occurring features, so
  its error bounds the Bayes error from above (for isotropic noise it is Phi(-|b| / sigma) + label noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mcicl.synthetic.data import Dictionary, Prompts, PromptSpec

BASELINES = ("query_only", "nearest_demonstration", "averaging", "oracle")


def label_signs(dic: Dictionary, y: torch.Tensor) -> torch.Tensor:
    """ell(y) = sign(<y, sum_k d_k>) for label vectors y (..., d): +1, -1, or 0 for a label of a fresh code."""
    code = dic.dl.sum(0).to(y.dtype)
    proj = y @ code
    tol = 1e-3 * float(code.norm()) ** 2
    return torch.where(proj.abs() > tol, torch.sign(proj), torch.zeros_like(proj))


@dataclass
class QueryOnly:
    """Context-blind logistic regression x_q -> target per seed: weights (S, d), bias (S,)."""

    weight: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def fit(cls, train: Prompts, ridge: float = 1e-3, iterations: int = 25) -> QueryOnly:
        """Ridge-penalised logistic regression fitted by Newton's method on every seed's training prompts."""
        X = torch.cat([train.xq, torch.ones_like(train.xq[..., :1])], -1).double()  # (S, n, d+1)
        t = train.target.double()  # (S, n) +-1
        S, n, p = X.shape
        w = torch.zeros(S, p, dtype=torch.float64)
        penalty = ridge * torch.eye(p, dtype=torch.float64)
        penalty[-1, -1] = 0.0  # the bias is not penalised
        for _ in range(iterations):
            margin = t * torch.einsum("snp,sp->sn", X, w)
            prob = torch.sigmoid(-margin)  # d/dmargin of log(1 + exp(-margin)) is -prob
            grad = -torch.einsum("snp,sn->sp", X, t * prob) / n + w @ penalty
            curv = prob * (1 - prob)
            hess = torch.einsum("snp,sn,snq->spq", X, curv, X) / n + penalty
            step = torch.linalg.solve(hess, grad)
            w = w - step
            if float(step.abs().max()) < 1e-10:
                break
        dt = train.xq.dtype
        return cls(w[:, :-1].to(dt), w[:, -1].to(dt))

    def __call__(self, prompts: Prompts) -> torch.Tensor:
        """Scores (S, n) from the query alone."""
        return torch.einsum("snd,sd->sn", prompts.xq, self.weight) + self.bias[:, None]


def nearest_demonstration(dic: Dictionary, prompts: Prompts) -> torch.Tensor:
    """The label sign of the demonstration with the largest inner product with the query (S, n)."""
    sim = torch.einsum("snld,snd->snl", prompts.x, prompts.xq)
    best = sim.argmax(-1, keepdim=True)
    return label_signs(dic, prompts.y).gather(-1, best).squeeze(-1)


def averaging(dic: Dictionary, prompts: Prompts) -> torch.Tensor:
    """(1/L) sum_l ell(y_l) <x_l, x_q> (S, n)."""
    sim = torch.einsum("snld,snd->snl", prompts.x, prompts.xq)
    return (label_signs(dic, prompts.y) * sim).mean(-1)


def oracle(dic: Dictionary, spec: PromptSpec, prompts: Prompts) -> torch.Tensor:
    """The known generator's rule: the query's coordinate on its true semantic direction, answer-flip applied."""
    if spec.unseen:
        semantic = dic.b_unseen.expand(*prompts.concept.shape, -1)
    elif spec.switched_semantics:
        semantic = dic.b_switched[prompts.concept]
    else:
        semantic = dic.b[prompts.concept]
    coordinate = (prompts.xq * semantic).sum(-1)  # s_q |b|^2 + <xi, b_k>: every other feature is orthogonal
    return -coordinate if spec.flip_labels else coordinate


def baseline_scores(dic: Dictionary, spec: PromptSpec, prompts: Prompts, query_only: QueryOnly) -> dict:
    """Every baseline's scores (S, n) on ``prompts`` drawn from ``spec``, keyed by BASELINES."""
    return {"query_only": query_only(prompts), "nearest_demonstration": nearest_demonstration(dic, prompts),
            "averaging": averaging(dic, prompts), "oracle": oracle(dic, spec, prompts)}
