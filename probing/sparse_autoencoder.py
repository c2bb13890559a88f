"""A small top-k sparse autoencoder (torch) as a dictionary learner for sets too large for the OMP/MOD solver.

Encoder z = TopK_k(ReLU(W_e x + b_e)) (the k largest pre-activations kept, the rest 0), decoder x_hat = z D with
unit-norm rows of D (the atoms; re-normalised after every step, and the gradient's component along each atom
removed first, as in Bricken et al. 2023 / Gao et al. 2024). Loss: mean squared reconstruction error; Adam; no
decoder bias (the paper's model x = sum of features + noise has none; centre the vectors first where a mean is
wanted). Atoms no row used over the last ``resample_every`` steps are restarted at the worst-reconstructed rows of
the batch. Initialisation: decoder rows = distinct data rows drawn with ``seed``, encoder = decoder transposed.
Everything is seeded (a CPU generator), so a seed gives the same dictionary. The learned D is what the rest of
the job uses (codes are OMP codes on it, so every statistic is computed as for the other solver).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mcicl.analysis.engine.sparse_coding import relative_error


def _unit(d: torch.Tensor) -> torch.Tensor:
    return d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)


def train_sae(x: np.ndarray, n_atoms: int, nonzeros: int, *, seed: int = 0, steps: int = 600, lr: float = 1e-2,
              batch_size: int = 1024, resample_every: int = 50, threads: int | None = None) -> np.ndarray:
    """The decoder (n_atoms, d) of a top-``nonzeros`` sparse autoencoder trained on the rows of ``x``, its rows
    sorted by how many rows use them. ``threads``: torch CPU threads while training (restored after); by default 1
    for small problems (a batch x atoms x dimension product under 10^7, where more threads only wait on each
    other: 10x slower measured on 2 shared cores) and torch's own setting above."""
    before = torch.get_num_threads()
    if threads is None:
        threads = 1 if min(batch_size, len(x)) * n_atoms * np.shape(x)[1] < 10**7 else before
    torch.set_num_threads(max(1, threads))
    try:
        return _train(x, n_atoms, nonzeros, seed, steps, lr, batch_size, resample_every)
    finally:
        torch.set_num_threads(before)


def _train(x: np.ndarray, n_atoms: int, nonzeros: int, seed: int, steps: int, lr: float, batch_size: int,
           resample_every: int) -> np.ndarray:
    x_np = np.asarray(x, dtype=np.float32)
    n, dim = x_np.shape
    if not 1 <= n_atoms <= n:
        raise ValueError(f"n_atoms={n_atoms}: accepted 1..{n} (the number of rows)")
    k = min(int(nonzeros), n_atoms)
    gen = torch.Generator().manual_seed(int(seed))
    data = torch.from_numpy(x_np)
    scale = data.norm(dim=1).mean().clamp_min(1e-12)  # rows scaled to mean norm 1, so lr means the same everywhere
    data = data / scale
    dec = _unit(data[torch.randperm(n, generator=gen)[:n_atoms]].clone()
                + 1e-6 * torch.randn(n_atoms, dim, generator=gen))
    dec.requires_grad_(True)
    enc = dec.detach().T.clone().requires_grad_(True)
    b_enc = torch.zeros(n_atoms, requires_grad=True)
    opt = torch.optim.Adam([dec, enc, b_enc], lr=lr)
    # Linear decay to 0 over the last 20% of steps: the atoms settle instead of jittering at the final lr.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, 5.0 * (1 - t / steps)))
    used = torch.zeros(n_atoms)
    bs = min(batch_size, n)
    for step in range(steps):
        batch = data[torch.randint(0, n, (bs,), generator=gen)]
        pre = torch.relu(batch @ enc + b_enc)
        top = pre.topk(k, dim=1)
        z = torch.zeros_like(pre).scatter(1, top.indices, top.values)
        recon = z @ dec
        loss = ((recon - batch) ** 2).sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            # Keep atoms on the unit sphere: drop the gradient's radial part, step, re-normalise.
            u = _unit(dec)
            dec.grad -= (dec.grad * u).sum(dim=1, keepdim=True) * u
        opt.step()
        sched.step()
        with torch.no_grad():
            dec.copy_(_unit(dec))
            used += (z > 0).sum(dim=0)
            if (step + 1) % resample_every == 0 and step + 1 < steps:
                # Rarely used atoms (under a fifth of the even share k / n_atoms) are restarted too: an atom that
                # sits between two features keeps a neighbour idle without leaving it unused.
                dead = torch.nonzero(used < 0.2 * k / n_atoms * bs * resample_every).flatten()
                if len(dead):
                    resid = ((recon - batch) ** 2).sum(dim=1)
                    worst = batch[resid.argsort(descending=True)[:len(dead)]]
                    dec[dead[:len(worst)]] = _unit(worst)
                    enc[:, dead[:len(worst)]] = _unit(worst).T
                    b_enc[dead] = 0.0
                used.zero_()
    with torch.no_grad():
        pre = torch.relu(data @ enc + b_enc)
        idx = pre.topk(k, dim=1).indices
        counts = torch.zeros(n_atoms).scatter_add_(0, idx.flatten(), torch.ones(idx.numel()))
        out = dec.detach()[counts.argsort(descending=True, stable=True)]
    return out.double().numpy()


def learn_sae_dictionaries(x: np.ndarray, n_atoms: int, nonzero_grid: Sequence[int], *, seed: int = 0,
                           max_iter: int = 30, restarts: int = 3) -> dict[int, np.ndarray]:
    """Per sparsity of ``nonzero_grid``, the best (lowest OMP reconstruction error) of ``restarts`` top-k
    autoencoders trained from starts drawn with ``seed``, ``20 * max_iter`` Adam steps each: {k: decoder} (the same
    signature as :func:`mcicl.analysis.engine.sparse_coding.learn_dictionaries`)."""
    rng = np.random.default_rng(seed)
    seeds = [int(rng.integers(2**31)) for _ in range(max(1, restarts))]
    out = {}
    for k in sorted({int(k) for k in nonzero_grid}):
        fits = [train_sae(x, n_atoms, k, seed=s, steps=20 * max_iter) for s in seeds]
        out[k] = min(fits, key=lambda d: relative_error(x, d, k))
    return out
