"""The UFM twin of a backbone run: the SimConfig with the backbone's training class counts, feature
dimension, loss (and its hierarchy parameters) and weight decay. Its loss options and frame are the
ones the backbone trains with, so both sides optimize the same loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ufm.backbone.config import TrainConfig
from ufm.backbone.networks import feature_dim
from ufm.config import SimConfig


def twin_config(cfg: TrainConfig, counts: Sequence[int]) -> SimConfig:
    """The UFM of `cfg` with these training class counts: free features of the backbone's dimension,
    one per training sample, with λ_W = λ_H = λ_b = --wd (HUG: 0, its loss is scale-invariant). Raises
    ConfigError (e.g. a --hierarchy whose leaf count is not the dataset's K)."""
    return SimConfig(counts=tuple(counts), d=feature_dim(cfg, len(counts)), loss=replace(cfg.loss),
                     wd=0.0 if cfg.loss.name == "hug" else cfg.wd, bias=cfg.bias, steps=cfg.ufm_steps, seed=cfg.seed,
                     device="cpu")
