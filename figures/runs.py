"""Running and reading the runs a figure draws: UFM simulations and backbone trainings into a runs
directory, then their summary.json, history.csv and params.pt (figures never re-implement a metric); and
saving a figure atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ufm.backbone.config import TrainConfig
from ufm.config import SimConfig
from ufm.output.rundir import atomic_write, read_history


def simulate(runs: Path, name: str, cfg: SimConfig) -> Path:
    """Run the UFM of `cfg` into runs/name (quietly), replacing a run left there by an earlier regeneration
    (figures make every run anew); return the run directory."""
    from ufm.api import run

    out = runs / name
    run(cfg, out, progress=False, overwrite=True)
    return out


def train(runs: Path, name: str, cfg: TrainConfig) -> Path:
    """Train the backbone of `cfg` into runs/name (quietly), replacing a run left there by an earlier
    regeneration; return the run directory."""
    from ufm.backbone.training import train as run

    out = runs / name
    run(cfg, out, progress=False, overwrite=True)
    return out


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


history = read_history  # a run's history.csv, one dict of floats per row


def params(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "params.pt", weights_only=True)


def positive(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    """The points a log axis can show (finite, > 0)."""
    keep = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y) and y > 0]
    return [x for x, _ in keep], [y for _, y in keep]


def save(fig, path: Path) -> Path:
    """Write `fig` to `path` atomically, in the format its suffix names (a reader never sees a torn picture, and
    the file gets the mode a plain open() would: the user's umask). An OSError names `path`."""
    path = Path(path)
    try:
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".").lower()), binary=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    return path
