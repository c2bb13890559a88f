"""How long one steered reading takes: `probe steer`'s in_prompt path on the default MiniLM, one torch thread, one
steered layer, seconds per reading (prompt x target x direction kind x alpha), beside the bare forward of the same
prompts. The cost of a run is about readings x this (readings: prompts x 2 targets x 3 kinds x alphas x layers).

    .venv/bin/python benchmarks/bench_steer.py

Goal: a steered reading costs no more than 1.2 bare readings (the hook and the per-row vectors are cheap).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from mcicl.probing.icl.in_prompt import prompt_spans, read_prompts
from mcicl.probing.icl.tasks import load_suite
from mcicl.probing.mechanism import steering
from mcicl.probing.mechanism.steer_config import SteerConfig
from mcicl.probing.models import load_model


def main() -> None:
    torch.set_num_threads(1)
    loaded = load_model("default", device="cpu")
    prompts = steering.sense_choice_prompts(load_suite("polysemy"), shots=8, episodes=40, queries_per_episode=2,
                                            seed=0)[:64]
    t = SteerConfig().prompt_template
    vectors = np.random.default_rng(0).normal(size=(len(prompts), 384)).astype(np.float32)
    read_prompts(loaded.model, loaded.tokenizer, [prompt_spans(p, t) for p in prompts[:8]], 6, attention=False)
    start = time.perf_counter()
    read_prompts(loaded.model, loaded.tokenizer, [prompt_spans(p, t) for p in prompts], 6, attention=False)
    bare = (time.perf_counter() - start) / len(prompts)
    start = time.perf_counter()
    steering.in_prompt_choice(loaded, prompts, t, 3, vectors, 10.0, 32)
    steered = (time.perf_counter() - start) / len(prompts)
    print(f"bare reading     {1000 * bare:7.1f} ms")
    print(f"steered reading  {1000 * steered:7.1f} ms  ({steered / bare:4.2f}x bare)")


if __name__ == "__main__":
    main()
