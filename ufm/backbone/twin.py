"""The UFM twin of a backbone run: the SimConfig with the backbone's training class counts, feature
dimension, loss (and its hierarchy parameters) and weight decay. Its loss options and frame are the
ones the backbone trains with, so both sides optimize the same loss."""

from __future__ import annotations

from collections.abc import Sequence

from ufm.backbone.config import TrainConfig
from ufm.backbone.networks import feature_dim
from ufm.config import SimConfig


def twin_config(cfg: TrainConfig, counts: Sequence[int]) -> SimConfig:
    """The UFM of `cfg` with these training class counts: free features of the backbone's dimension,
    one per training sample, with λ_W = λ_H = λ_b = --wd (HUG: 0, its loss is scale-invariant). Raises
    ConfigError (e.g. a --hierarchy whose leaf count is not the dataset's K)."""
    wd = 0.0 if cfg.loss == "hug" else cfg.wd
    return SimConfig(
        counts=tuple(counts), d=feature_dim(cfg, len(counts)), loss=cfg.loss, wd_W=wd, wd_H=wd, wd_b=wd,
        bias=cfg.bias, steps=cfg.ufm_steps, seed=cfg.seed, smoothing=cfg.smoothing,
        target_scale=cfg.target_scale, hierarchy=cfg.hierarchy, alpha=cfg.alpha, beta=cfg.beta,
        hxe_weighting=cfg.hxe_weighting, gamma=cfg.gamma, s_min=cfg.s_min, hug_measure=cfg.hug_measure,
        hug_s=cfg.hug_s, hug_inter=cfg.hug_inter, hug_intra=cfg.hug_intra, device="cpu",
    )
