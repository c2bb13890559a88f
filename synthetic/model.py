"""The one-layer transformer of the paper: softmax attention over demonstrations, then a ReLU MLP readout.

Every parameter carries a leading seed axis S: S independent models run as one tensor program.

    alpha_l = softmax_l( x_l^T W_K^T W_Q x_q )                       attention over the L demonstrations
    h       = sum_l alpha_l v_l,  v_l = y_l  (or W_V [x_l; y_l])     attention output (+ W_S x_q with skip)
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


def _rowdot(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """<x_l, p> for every demonstration: x (S, n, L, d), p (S, n, d) -> (S, n, L). One (L x d)(d x 1) matmul per
    prompt."""
    S, n, L, d = x.shape
    return torch.bmm(x.reshape(S * n, L, d), p.reshape(S * n, d, 1)).view(S, n, L)


def _weighted_sum(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_l w_l x_l for every prompt: w (S, n, L), x (S, n, L, d) -> (S, n, d). A weighted-sum embedding bag over
    the demonstrations' rows: on a CPU (1 thread, 3 to 256 instances) 2.5-4x faster than a loop of L multiply-adds
    and 3-9x faster than a (1 x L)(L x d) matmul per prompt."""
    S, n, L, d = x.shape
    bags = torch.arange(S * n * L, device=x.device).view(S * n, L)  # bag i: the L demonstrations of prompt i
    return F.embedding_bag(bags, x.reshape(-1, d), mode="sum", per_sample_weights=w.reshape(S * n, L)).view(S, n, d)


class Attention(torch.autograd.Function):
    """h = sum_l alpha_l v_l with alpha = softmax_l(<x_l, p>): the attention block, forward and backward.

    Inputs x, v (S, n, L, d) and the pulled query p = W_K^T W_Q x_q (S, n, d); outputs h (S, n, d) and, not
    differentiable, the scores and alpha (S, n, L). With g = dLoss/dh the backward is
        g_alpha_l  = <v_l, g>,      g_score_l = alpha_l (g_alpha_l - sum_j alpha_j g_alpha_j),
        g_p        = sum_l g_score_l x_l,   g_v_l = alpha_l g,   g_x_l = g_score_l p,
    each contraction with the kernel measured fastest on a CPU: a (L x d)(d x 1) matmul per prompt for the dot
    products, an embedding bag for the weighted sums (with the batched-matmul readout and the index_select
    minibatch gather, 1.6-2.8x less time per training step than einsums at 64-256 stacked instances, 1 thread).
    Gradients are computed only for inputs that need them (v needs one only with ``value: projected``).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, v: torch.Tensor, p: torch.Tensor):
        scores = _rowdot(x, p)  # (S, n, L)
        alpha = torch.softmax(scores, -1)
        h = _weighted_sum(alpha, v)  # (S, n, d)
        ctx.save_for_backward(x, v, p, alpha)
        ctx.mark_non_differentiable(scores, alpha)
        return h, scores, alpha

    @staticmethod
    def backward(ctx, g_h: torch.Tensor, _g_scores: torch.Tensor, _g_alpha: torch.Tensor):
        x, v, p, alpha = ctx.saved_tensors
        g_alpha = _rowdot(v, g_h)  # (S, n, L)
        g_scores = alpha * (g_alpha - (alpha * g_alpha).sum(-1, keepdim=True))
        g_x = g_scores[..., None] * p[:, :, None] if ctx.needs_input_grad[0] else None
        g_v = alpha[..., None] * g_h[:, :, None] if ctx.needs_input_grad[1] else None
        g_p = _weighted_sum(g_scores, x) if ctx.needs_input_grad[2] else None
        return g_x, g_v, g_p


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
        self.skip = config.skip
        if self.skip:
            self.W_S = torch.nn.Parameter(gauss(S, d, d))  # (S, d, d): h += W_S x_q
        self.hide_labels = config.demo_labels == "hidden"
        w_plus, w_minus = gauss(S, m, d), gauss(S, m, d)  # (S, m, d)
        if config.readout_init == "aligned":  # an oracle warm start: it reads the true label directions
            # Break the sign symmetry: w_+ leans towards +d_k and w_- towards -d_k for every task concept k.
            direction = dictionary.dl / dictionary.dl.norm(dim=1, keepdim=True)  # (K or 1, d)
            w_plus = w_plus + config.readout_align * direction.sum(0)
            w_minus = w_minus - config.readout_align * direction.sum(0)
        self.w_plus = torch.nn.Parameter(w_plus)
        self.w_minus = torch.nn.Parameter(w_minus)

    def forward(self, x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor) -> Output:
        """Readout, attention and attention output for demonstrations x, labels y (S, n, L, d), query xq (S, n, d)."""
        # x_l^T W_K^T W_Q x_q, computed as x_l . (W_K^T (W_Q x_q)) so the cost is not L d^2 per prompt.
        query = torch.bmm(xq, self.W_Q.transpose(1, 2))  # W_Q x_q        (S, n, d)
        pulled = torch.bmm(query, self.W_K)  # W_K^T W_Q x_q  (S, n, d)
        if self.hide_labels:  # the context-blind control: the demonstrations' labels never reach the model
            y = torch.zeros_like(y)
        v = self.values(x, y) if self.projected else y  # (S, n, L, d)
        h, scores, alpha = Attention.apply(x, v, pulled)  # (S, n, d), (S, n, L), (S, n, L)
        if self.skip:  # the query's own route to the readout, around attention
            h = h + torch.bmm(xq, self.W_S.transpose(1, 2))
        f = self.readout(h)  # (S, n)
        return Output(f, alpha, h, scores)

    def values(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """v_l = W_V [x_l; y_l] = W_V[:, :d] x_l + W_V[:, d:] y_l for x, y (S, n, L, d)."""
        S, n, L, d = x.shape
        W_x, W_y = self.W_V[:, :, :d].transpose(1, 2), self.W_V[:, :, d:].transpose(1, 2)  # (S, d, d)
        return torch.baddbmm(torch.bmm(x.reshape(S, n * L, d), W_x), y.reshape(S, n * L, d), W_y).view(S, n, L, d)

    def readout(self, v: torch.Tensor) -> torch.Tensor:
        """The MLP readout (1/m) sum_r [ReLU(<w_{+,r}, v>) - ReLU(<w_{-,r}, v>)] of vectors v (S, ..., d)."""
        S, d, m = v.shape[0], v.shape[-1], self.w_plus.shape[1]
        w = torch.cat([self.w_plus, self.w_minus], 1)  # (S, 2m, d)
        act = F.relu(torch.bmm(w, v.reshape(S, -1, d).transpose(1, 2)), inplace=True)  # (S, 2m, N), N = v's vectors
        sign = torch.cat([v.new_full((m,), 1 / m), v.new_full((m,), -1 / m)])  # mean of the w_+ minus the w_- terms
        return torch.bmm(sign.expand(S, 1, 2 * m), act).view(v.shape[:-1])

    def instances(self, sl: slice) -> OneLayerTransformer:
        """Instances ``sl`` as a model of their own, for evaluation in blocks: its parameters are views of this
        model's (no copy, no gradient)."""
        part = OneLayerTransformer.__new__(OneLayerTransformer)
        torch.nn.Module.__init__(part)
        part.__dict__.update({k: v for k, v in self.__dict__.items() if not k.startswith("_")})  # projected
        for name, p in self.named_parameters():
            part.register_parameter(name, torch.nn.Parameter(p.detach()[sl], requires_grad=False))
        return part

    def run(self, prompts: Prompts) -> Output:
        """Forward pass on a Prompts batch."""
        return self(prompts.x, prompts.y, prompts.xq)


def logistic_loss(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(-s f)) elementwise (numerically stable)."""
    return F.softplus(-target * f)


def zero_one_loss(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 unless sign(f) agrees with the target: f = 0 and a non-finite f (NaN, +-inf) count as errors."""
    return (~((target * f > 0) & torch.isfinite(f))).to(f.dtype)
