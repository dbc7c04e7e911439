"""Checkpoints: written atomically every epoch, read with torch.load(weights_only=True) (tensors and
plain containers only, never arbitrary pickled objects), and checked against the run's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ufm.output.rundir import atomic_write

CHECKPOINT = "checkpoint.pt"
FORMAT = 1
# settings that may differ on resume: where and how fast it runs, not what it computes
RESUMABLE = ("device", "amp", "data_root", "download", "compare_ufm", "ufm_steps", "evals_per_decade")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to another model or configuration."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file in the same directory, fsync, then rename over `path`."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f), binary=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn, foreign or non-checkpoint file
        raise CheckpointError(f"cannot read the checkpoint {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ufm.train checkpoint (format {FORMAT})")
    missing = [k for k in ("config", "epoch", "model", "optimizer", "history", "train_seconds") if k not in state]
    if missing:
        raise CheckpointError(f"the checkpoint {path} lacks {', '.join(missing)}: not a complete ufm.train checkpoint")
    return state


def check_config(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """The checkpoint's configuration must be the current one, up to RESUMABLE settings. A checkpoint of an
    earlier version is read with today's defaults for the settings it lacks (e.g. a loss field added since)."""
    from ufm.backbone.config import TrainConfig
    from ufm.errors import ConfigError

    try:
        saved = TrainConfig.from_dict(saved).to_dict()
    except (ConfigError, TypeError, ValueError):
        pass  # compared as saved: the difference is reported key by key
    diff = [f"{k} {saved.get(k)!r} (checkpoint) vs {current.get(k)!r} (now)" for k in current
            if k not in RESUMABLE and saved.get(k) != current.get(k)]
    if diff:
        raise CheckpointError(f"--resume: the checkpoint {path} is of another configuration: " + "; ".join(diff))


def load_model_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """load_state_dict, with a mismatch (other architecture or sizes) as one clear line."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = " ".join(str(e).split())[:300]
        raise CheckpointError(f"--resume: the checkpoint {path} does not match the model ({first})") from None
