"""Synthetic-run checkpoints: ``checkpoints/step_XXXXXXX.safetensors`` (weights) + ``.json`` (step, config)."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mcicl.core.configuration import to_dict
from mcicl.core.io import write_json
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.model import OneLayerTransformer


def save_checkpoint(model: OneLayerTransformer, folder: Path, step: int, config: SyntheticConfig) -> Path:
    """Write ``folder/step_XXXXXXX.safetensors`` (weights) + ``.json`` (step, config); return the weights path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:07d}.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    write_json(path.with_suffix(".json"), {"step": step, "config": to_dict(config)})
    return path


def latest_checkpoint(folder: Path) -> tuple[int, Path] | None:
    """(step, path) of the newest checkpoint in ``folder``, or None."""
    found = sorted(folder.glob("step_*.safetensors"))
    return (int(found[-1].stem.split("_")[1]), found[-1]) if found else None


def load_weights(model: OneLayerTransformer, path: Path) -> None:
    """Load a safetensors checkpoint into ``model``; a truncated, corrupt or mismatched file is one clear
    ValueError naming it (not a SafetensorError traceback)."""
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"checkpoint {path} cannot be read ({err}); it is truncated or corrupt: delete it to "
                         "resume from the checkpoint before it, or start a new run") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise ValueError(f"checkpoint {path} does not fit this model ({first}); resume with the run's own "
                         "config.yaml") from None
