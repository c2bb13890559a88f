"""The one-layer transformer of the paper: softmax attention over demonstrations, then a ReLU MLP readout.

Every parameter carries a leading seed axis S: S independent models run as one tensor program.

    alpha_l = softmax_l( x_l^T W_K^T W_Q x_q )                       attention over the L demonstrations
    h       = sum_l alpha_l v_l,  v_l = y_l  (or W_V [x_l; y_l])     attention output
    f       = (1/m) sum_r [ ReLU(<w_{+,r}, h>) - ReLU(<w_{-,r}, h>) ] readout
    loss    = log(1 + exp(-s_q f))                                   logistic loss
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.data import Dictionary, Prompts, torch_dtype


@dataclass
class Output:
    """What one forward pass returns: readout f (S, n), attention alpha and its scores (S, n, L), output h."""

    f: torch.Tensor
    alpha: torch.Tensor
    h: torch.Tensor
    scores: torch.Tensor


class OneLayerTransformer(torch.nn.Module):
    """S independent one-layer transformers (W_Q, W_K, optional W_V, ReLU readout w_+, w_-)."""

    def __init__(self, config: SyntheticConfig, dictionary: Dictionary, generator: torch.Generator):
        super().__init__()
        S, d, m, s0 = config.seeds, config.d, config.m, config.sigma0
        dt = torch_dtype(config.dtype)

        def gauss(*shape: int) -> torch.Tensor:
            return s0 * torch.randn(*shape, generator=generator, dtype=dt)

        self.W_Q = torch.nn.Parameter(gauss(S, d, d))  # (S, d, d)
        self.W_K = torch.nn.Parameter(gauss(S, d, d))  # (S, d, d)
        self.projected = config.value == "projected"
        if self.projected:
            # Start at the label map v_l = y_l plus noise, so "projected" contains the default model.
            eye = torch.cat([torch.zeros(d, d, dtype=dt), torch.eye(d, dtype=dt)], 1)
            self.W_V = torch.nn.Parameter(eye + gauss(S, d, 2 * d))  # (S, d, 2d)
        w_plus, w_minus = gauss(S, m, d), gauss(S, m, d)  # (S, m, d)
        if config.readout_init == "aligned":
            # Break the sign symmetry: w_+ leans towards +d_k and w_- towards -d_k for every task concept k.
            direction = dictionary.dl / dictionary.dl.norm(dim=1, keepdim=True)  # (K or 1, d)
            w_plus = w_plus + config.readout_align * direction.sum(0)
            w_minus = w_minus - config.readout_align * direction.sum(0)
        self.w_plus = torch.nn.Parameter(w_plus)
        self.w_minus = torch.nn.Parameter(w_minus)

    def forward(self, x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor) -> Output:
        """Readout, attention and attention output for demonstrations x, labels y (S, n, L, d), query xq (S, n, d)."""
        # x_l^T W_K^T W_Q x_q, computed as x_l . (W_K^T (W_Q x_q)) so the cost is not L d^2 per prompt.
        query = torch.einsum("sij,snj->sni", self.W_Q, xq)  # W_Q x_q        (S, n, d)
        pulled = torch.einsum("sij,sni->snj", self.W_K, query)  # W_K^T W_Q x_q  (S, n, d)
        scores = torch.einsum("snld,snd->snl", x, pulled)  # (S, n, L)
        alpha = torch.softmax(scores, dim=-1)
        v = torch.einsum("sij,snlj->snli", self.W_V, torch.cat([x, y], -1)) if self.projected else y
        h = torch.einsum("snl,snld->snd", alpha, v)  # (S, n, d)
        f = self.readout(h)  # (S, n)
        return Output(f, alpha, h, scores)

    def readout(self, v: torch.Tensor) -> torch.Tensor:
        """The MLP readout (1/m) sum_r [ReLU(<w_{+,r}, v>) - ReLU(<w_{-,r}, v>)] of vectors v (S, ..., d)."""
        return (F.relu(torch.einsum("smd,s...d->s...m", self.w_plus, v))
                - F.relu(torch.einsum("smd,s...d->s...m", self.w_minus, v))).mean(-1)

    def run(self, prompts: Prompts) -> Output:
        """Forward pass on a Prompts batch."""
        return self(prompts.x, prompts.y, prompts.xq)


def logistic_loss(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(-s f)) elementwise (numerically stable)."""
    return F.softplus(-target * f)


def zero_one_loss(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 unless sign(f) agrees with the target: f = 0 and a non-finite f (NaN, +-inf) count as errors."""
    return (~((target * f > 0) & torch.isfinite(f))).to(f.dtype)
