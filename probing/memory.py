"""Will the model fit? A memory estimate made before any weight is loaded, and the budget it is checked against.

The estimate builds the model from its config on the meta device (``torch.device("meta")``: shapes, no storage),
so a 70B config costs milliseconds: parameter bytes = (parameters + buffers) x the bytes of the chosen dtype.
Activations of one batch are estimated as the hidden states kept (batch x tokens x d x (layers + 1), float32),
plus one block's widest intermediate (batch x tokens x max(ffn width, 4d)) and one attention matrix
(batch x heads x tokens^2), at the chosen dtype; ``batch_size="auto"`` is estimated at one item (it halves
from there on its own). The budget is the device's free memory (CUDA: ``torch.cuda.mem_get_info``; CPU and MPS:
available system memory; ``balanced``: every GPU plus CPU memory), or ``MCICL_MEMORY_LIMIT`` (e.g. ``8GB``,
``512MiB``, or bytes) when set, which also lets a test force a small limit.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from mcicl.probing.models import encoder_class, is_causal_config, pretrained_kwargs, resolve_model

log = logging.getLogger("mcicl")
LIMIT_ENV = "MCICL_MEMORY_LIMIT"
ESTIMATE_TOKENS = 64  # tokens per item assumed by the activation estimate (a word in a template, a short context)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class DoesNotFitError(ValueError):
    """The model (or one item) cannot fit in the memory of the chosen device; the message names the sizes."""


def gib(n: float) -> str:
    """Bytes as GiB text with two decimals."""
    return f"{n / 2**30:.2f} GiB"


def parse_bytes(text: str) -> int:
    """Bytes of a size such as '8GB', '512MiB', '1.5 GiB' or '1000000'."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{LIMIT_ENV}={text!r} is not a size; accepted: a number of bytes or one with a unit "
                         "(KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 8GB")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a model needs before it runs (parameters) and for one batch (activations)."""

    parameters: int
    parameter_bytes: int
    activation_bytes: int
    dtype: str
    batch_size: int
    tokens: int

    @property
    def total(self) -> int:
        """Parameter plus activation bytes."""
        return self.parameter_bytes + self.activation_bytes


def estimate_from_config(config: Any, *, dtype: str = "float32", batch_size: int | str = 1,
                         tokens: int = ESTIMATE_TOKENS) -> MemoryEstimate:
    """The :class:`MemoryEstimate` of the model ``config`` describes, built on the meta device (no weights)."""
    cls = AutoModelForCausalLM if is_causal_config(config) else encoder_class(config)
    with torch.device("meta"):
        model = cls.from_config(config)
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    size = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    d = int(getattr(text, "hidden_size", 0) or getattr(text, "d_model", 0) or 0)
    layers = next((int(getattr(text, k)) for k in ("num_hidden_layers", "n_layer", "num_layers")
                   if isinstance(getattr(text, k, None), int)), 1)
    heads = next((int(getattr(text, k)) for k in ("num_attention_heads", "n_head", "num_heads")
                  if isinstance(getattr(text, k, None), int)), 1)
    ffn = next((int(getattr(text, k)) for k in ("intermediate_size", "n_inner", "ffn_dim", "d_ff")
                if isinstance(getattr(text, k, None), int)), 4 * d)
    b = 1 if batch_size == "auto" else int(batch_size)
    acts = b * tokens * d * (layers + 1) * 4 + b * tokens * max(ffn, 4 * d) * size + b * heads * tokens**2 * size
    return MemoryEstimate(int(n), int(n * size), int(acts), dtype, b, tokens)


def system_available() -> int | None:
    """Bytes of system memory available (psutil, else /proc/meminfo's MemAvailable), or None where unknown."""
    try:
        import psutil  # deferred: optional (not a dependency of mcicl); /proc/meminfo serves on Linux

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_budget(device: str, device_map: str | None = None) -> tuple[int, str]:
    """(bytes available, where they are) for a model placed on ``device`` (or spread by ``device_map``)."""
    limit = os.environ.get(LIMIT_ENV)
    if limit:
        return parse_bytes(limit), f"{device} (limit set by {LIMIT_ENV}={limit})"
    system = system_available()
    if system is None:
        return 2**62, f"{device} (available memory unknown here: not checked)"
    if device_map is not None:
        gpus = sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())) \
            if torch.cuda.is_available() else 0
        return int(gpus + system), f"{torch.cuda.device_count()} GPU(s) free plus CPU memory available"
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return int(torch.cuda.mem_get_info(index)[0]), f"cuda:{index} free"
    return system, f"{device} (system memory available)"


def check_fits(spec: str, *, dtype: str, device: str, device_map: str | None, batch_size: int | str,
               trust_remote_code: bool = False, revision: str | None = None) -> MemoryEstimate | None:
    """The estimate for model ``spec`` (its config at ``revision``, the one the loader will read), or a
    DoesNotFitError naming the sizes when it cannot fit; None when the config cannot be read here (the loader then
    gives its own error)."""
    try:
        ref = resolve_model(spec, revision)
        config = AutoConfig.from_pretrained(ref.location, **pretrained_kwargs(ref, trust_remote_code))
        estimate = estimate_from_config(config, dtype=dtype, batch_size=batch_size)
    except Exception as err:  # noqa: BLE001 (an estimate never blocks a load the loader would explain better)
        log.debug("no memory estimate for %s: %s", spec, err)
        return None
    budget, where = memory_budget(device, device_map)
    log.debug("memory estimate for %s: %s parameters + %s activations; budget %s on %s", spec,
              gib(estimate.parameter_bytes), gib(estimate.activation_bytes), gib(budget), where)
    if estimate.total > budget:
        batch = "batch_size auto, estimated at 1 item" if batch_size == "auto" else f"a batch of {batch_size}"
        raise DoesNotFitError(
            f"model {spec!r} needs about {gib(estimate.total)}: {estimate.parameters:,} parameters = "
            f"{gib(estimate.parameter_bytes)} at {dtype} + {gib(estimate.activation_bytes)} of activations for "
            f"{batch} x {estimate.tokens} tokens; {where}: {gib(budget)}. Accepted: a smaller --dtype (float16, "
            "bfloat16), a smaller --batch-size or 'auto', a device with more memory, or --device balanced")
    return estimate
