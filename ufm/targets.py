"""Which closed-form target of `analysis.theory` applies to a configuration."""

from __future__ import annotations

from analysis.theory import Target, ce_etf, mse_bias_free, mse_free_bias, not_applicable
from ufm.config import SimConfig


def theory_target(cfg: SimConfig) -> Target:
    """The closed form for this loss, bias setting and class counts, or a Target saying why none applies."""
    if cfg.loss == "mse":
        if not cfg.bias:
            return mse_bias_free(cfg.class_counts, cfg.d, cfg.wd_W, cfg.wd_H, cfg.target_scale)
        if cfg.wd_b > 0:
            return not_applicable("mse_regularized_bias",
                                  "MSE with a regularized bias (wd_b > 0) has no closed form here yet; "
                                  "use --wd-b 0 (free bias) or --no-bias")
        if not cfg.balanced:
            return not_applicable("mse_free_bias", "the free-bias closed form needs balanced classes")
        return mse_free_bias(cfg.K, cfg.n, cfg.d, cfg.wd_W, cfg.wd_H, cfg.target_scale)
    if cfg.loss in ("ce", "ls"):
        smoothing = cfg.smoothing if cfg.loss == "ls" else 0.0
        name = "ce_etf" if smoothing == 0 else "ls_etf"
        if not cfg.balanced:
            return not_applicable(name, "the CE closed form needs balanced classes "
                                        "(imbalance leads to minority collapse)")
        # with or without a bias: the optimal bias is constant across classes (CE ignores a constant
        # shift of the logits), so the bias-free optimum is the optimum
        return ce_etf(cfg.K, cfg.n, cfg.d, cfg.wd_W, cfg.wd_H, smoothing)
    return not_applicable("none", f"no closed form for loss {cfg.loss!r}")
