"""Explicit torch devices named on the command line or in a config: parsed and checked against this machine.

Both worlds use it: synthetic training (``cpu``, ``cuda``, ``cuda:N``) and the probes, whose own ``auto`` and
``balanced`` choices resolve to one of these first (probing/placement.py).
"""

from __future__ import annotations

import re

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def check_device(spec: str, accepted: str = "'cpu', 'cuda', 'cuda:N' or 'mps'", kinds: tuple[str, ...] =
                 ("cpu", "cuda", "mps")) -> str:
    """The normalised device string of ``spec`` (e.g. 'cuda:1'), or a ValueError naming it and ``accepted``: an
    unknown name, a kind outside ``kinds``, CUDA without a visible GPU or that index, MPS where Metal is absent."""
    import torch  # deferred: importing mcicl.core needs no torch (mcicl --help answers at once)

    text = str(spec).strip().lower()
    if not _DEVICE.match(text) or text.split(":")[0] not in kinds:
        raise ValueError(f"device={spec!r} is not a device here; accepted: {accepted}")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={spec!r} asks for CUDA but no CUDA GPU is available to torch "
                             f"{torch.__version__}; accepted here: 'cpu'")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device={spec!r}: only {torch.cuda.device_count()} CUDA device(s) are visible; "
                             f"accepted: 'cuda:0' to 'cuda:{torch.cuda.device_count() - 1}' or 'cpu'")
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device={spec!r} asks for Apple Metal but it is not available; accepted here: 'cpu'")
    return text
