"""Checkpoints: written atomically every epoch, read with torch.load(weights_only=True) (tensors and
plain containers only, never arbitrary pickled objects), and checked against the run's configuration
before anything of them is used: a torn, foreign or edited file is one line naming it (CheckpointError),
never a traceback, and never torch's advice to load it unsafely."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from ufm.backbone.interrupts import interrupts_deferred
from ufm.errors import ConfigError
from ufm.output.rundir import atomic_write

CHECKPOINT = "checkpoint.pt"
FORMAT = 1
# settings that may differ on resume: where and how fast it runs, not what it computes
RESUMABLE = ("device", "amp", "data_root", "download", "compare_ufm", "ufm_steps", "evals_per_decade")
KEYS = ("config", "epoch", "model", "optimizer", "history", "train_seconds")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be read, or that belongs to another model or configuration."""


def save_checkpoint(path: Path, state: dict[str, Any], then: Callable[[], None] | None = None) -> None:
    """torch.save to a temporary file in the same directory, fsync, then rename over `path`: an interrupt or a
    full disk during the save leaves the previous checkpoint as it was (atomic_write removes its temporary file;
    a full disk is an OSError naming `path`).

    `then()` runs right after the rename, with the fsync, the rename and it shielded from interrupts (held back
    from the moment torch.save returns, delivered after `then`): the caller's record of which epoch the file on
    disk holds can never fall behind the file, whenever Ctrl-C lands."""
    with ExitStack() as shield:
        def write(f) -> None:
            torch.save({"format": FORMAT, **state}, f)
            shield.enter_context(interrupts_deferred())

        atomic_write(path, write, binary=True)
        if then is not None:
            then()


def _torch_reason(e: BaseException) -> str:
    """Torch's message, on one line and shortened, where it is safe to show: never when it advises retrying with
    weights_only=False (loading a file of unknown origin that way runs arbitrary code: the whole text is dropped,
    not just that sentence), never an empty pair of parentheses."""
    text = " ".join(str(e).split())
    if not text or "weights_only" in text.lower() or "weights only" in text.lower():
        return ""
    return f" (torch: {text[:200]})"


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_checkpoint(path: Path, epochs: int | None = None) -> dict[str, Any]:
    """The checkpoint's state after checks of its structure: a dict of format FORMAT with the KEYS, `epoch` an
    integer >= 0 (and <= `epochs` where given: check_epoch), `model` a dict of tensors, `optimizer` a state dict,
    `history` rows of numbers with increasing epochs up to `epoch`, `train_seconds` finite and >= 0. Whether the
    tensors fit the network is load_model_state's and load_optimizer_state's check."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise CheckpointError(f"the checkpoint {path} is empty (0 bytes): not a ufm.train checkpoint; move it "
                                  "away to start afresh")
        with warnings.catch_warnings():  # e.g. torch's UserWarning about the pickle protocol of a foreign file
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # a torn, foreign or non-checkpoint file (EOFError, IndexError, UnpicklingError, …)
        raise CheckpointError(f"cannot read the checkpoint {path}: not a readable ufm.train checkpoint (truncated, "
                              f"corrupted or of another format){_torch_reason(e)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ufm.train checkpoint (format {FORMAT})")
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise CheckpointError(f"the checkpoint {path} lacks {', '.join(missing)}: not a complete ufm.train checkpoint")

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"the checkpoint {path} is damaged: {what}")

    epoch = state["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise bad(f"its epoch {epoch!r} is not an integer >= 0")
    if epochs is not None:
        check_epoch(epoch, epochs, path)
    if not isinstance(state["config"], dict):
        raise bad("its config is not a mapping")
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in model.items()):
        raise bad("its model is not a state dict (names to tensors)")
    opt = state["optimizer"]
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or \
            not isinstance(opt.get("param_groups"), list):
        raise bad("its optimizer is not an optimizer state dict")
    seconds = state["train_seconds"]
    if not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
        raise bad(f"its train_seconds {seconds!r} is not a finite number >= 0")
    if not isinstance(state.get("scaler", {}), dict):
        raise bad("its loss-scaler state is not a mapping")
    history = state["history"]
    if not isinstance(history, list):
        raise bad("its history is not a list of rows")
    last = -1
    for row in history:
        if not isinstance(row, dict) or not all(isinstance(k, str) and _is_number(v) for k, v in row.items()):
            raise bad("a history row is not a mapping of names to numbers")
        if not {"epoch", "data_loss", "measure_seconds"} <= row.keys():
            raise bad("a history row lacks epoch, data_loss or measure_seconds")
        if not last < row["epoch"] <= epoch:
            raise bad(f"its history's epochs are not increasing within 0..{epoch}")
        last = row["epoch"]
    return state


def check_epoch(epoch: int, epochs: int, path: Path) -> None:
    """The epoch a checkpoint holds lies in 0..epochs (the configured --epochs): an edited one (10⁹) is refused
    instead of ending the run at once with a summary that claims those epochs."""
    if not 0 <= epoch <= epochs:
        raise CheckpointError(f"the checkpoint {path} is damaged: its epoch {epoch} lies outside 0..{epochs} (the "
                              "configured --epochs)")


def check_config(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """The checkpoint's configuration must be the current one, up to RESUMABLE settings. A checkpoint of an
    earlier version is read with today's defaults for the settings it lacks (e.g. a loss field added since)."""
    from ufm.backbone.config import TrainConfig

    try:
        saved = TrainConfig.from_dict(saved).to_dict()
    except (ConfigError, TypeError, ValueError, AttributeError, KeyError):
        pass  # compared as saved: the difference is reported key by key
    diff = [f"{k} {saved.get(k)!r} (checkpoint) vs {current.get(k)!r} (now)" for k in current
            if k not in RESUMABLE and saved.get(k) != current.get(k)]
    if diff:
        raise CheckpointError(f"--resume: the checkpoint {path} is of another configuration: " + "; ".join(diff))


def load_model_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """load_state_dict, with a mismatch (other architecture or sizes) as one clear line."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as e:
        first = " ".join(str(e).split())[:300]
        raise CheckpointError(f"--resume: the checkpoint {path} does not match the model ({first})") from None


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any], path: Path) -> None:
    """load_state_dict, then the check torch leaves to the first step: every per-parameter buffer (SGD's momentum,
    Adam's moments) has its parameter's shape. Without it an edited checkpoint fails mid-epoch with a traceback."""
    try:
        opt.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        first = " ".join(str(e).split())[:300]
        raise CheckpointError(f"--resume: the checkpoint {path} does not match the optimizer ({first})") from None
    for group in opt.param_groups:
        for p in group["params"]:
            for name, buf in opt.state.get(p, {}).items():
                if isinstance(buf, torch.Tensor) and buf.dim() > 0 and buf.shape != p.shape:
                    raise CheckpointError(f"--resume: the checkpoint {path} does not match the optimizer (its "
                                          f"{name} has shape {tuple(buf.shape)}, the parameter {tuple(p.shape)})")
