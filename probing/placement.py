"""Device choice for probe commands: ``auto`` (cuda, then mps, then cpu), an explicit device, or ``balanced``.

``balanced`` means ``device_map="auto"`` (accelerate spreads a model too large for one GPU over all GPUs and
CPU memory; without a GPU it places the whole model in CPU memory); inputs then go to the device of the input
embedding. Tested on CPU only (equal vectors and scores to a plain load); not yet run on several GPUs.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from mcicl.core.devices import check_device

ACCEPTED = "'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or 'balanced'"


def resolve_device(spec: str) -> tuple[str, str | None]:
    """(device to move the model to, device_map for from_pretrained or None) for a --device value."""

    text = str(spec).strip().lower()
    if text == "balanced":
        if importlib.util.find_spec("accelerate") is None:
            raise ValueError("device='balanced' (device_map='auto') needs the package accelerate: "
                             "pip install accelerate (or pip install 'mcicl[multi-gpu]')")
        return ("cuda" if torch.cuda.is_available() else "cpu"), "auto"
    if text == "auto":
        if torch.cuda.is_available():
            return "cuda", None
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps", None
        return "cpu", None
    return check_device(text, ACCEPTED), None


def input_device(model: Any) -> Any:
    """The device the model's inputs must be on (that of its input embedding, also under device_map)."""
    return model.get_input_embeddings().weight.device
