"""The class tree, the HAFrame, the spherical code and the loss options of a configuration, built once
and cached."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from analysis.frames import Frame, SphericalCode, frame_from_gram, haframe_gram, psd_bound, spherical_code
from analysis.hierarchy import Tree, load
from ufm.config import SimConfig
from ufm.losses import HugOptions, LossOptions, hierarchy_data


@lru_cache(maxsize=16)
def class_tree(spec: str, K: int | None = None) -> Tree:
    """`analysis.hierarchy.load`, cached (the LCA matrix of a 1 000-class tree takes a fraction of a second)."""
    return load(spec, K)


@lru_cache(maxsize=16)
def _gram(spec: str, K: int, gamma: float, s_min: float | None) -> tuple[np.ndarray, float]:
    lca = class_tree(spec, K).lca_heights
    s = psd_bound(lca, gamma) if s_min is None else s_min
    return haframe_gram(lca, gamma, s), s


@lru_cache(maxsize=16)
def _frame(spec: str, K: int, gamma: float, s_min: float | None, d: int) -> Frame:
    S, s = _gram(spec, K, gamma, s_min)
    return Frame(S=S, W=frame_from_gram(S, d), gamma=gamma, s_min=s)


def frame_gram(cfg: SimConfig) -> tuple[np.ndarray, float]:
    """(S, s_min) of the HAFrame of `cfg`'s tree (s_min None in cfg: the PSD bound); no d needed."""
    return _gram(cfg.hierarchy, cfg.K, cfg.gamma, cfg.s_min)


def frame_of(cfg: SimConfig) -> Frame:
    """The HAFrame of `cfg`'s tree with its γ and s_min (s_min None: the PSD bound), embedded in R^d."""
    return _frame(cfg.hierarchy, cfg.K, cfg.gamma, cfg.s_min, cfg.d)


def gnc_code(cfg: SimConfig) -> SphericalCode:
    """The generalized-NC target of `cfg`'s K and d: the simplex ETF for K <= d + 1, else the numerical
    spherical code — max-min angle for HUG's maxgap measure, minimal Riesz energy (HUG's exponent s,
    else the Thomson s = 1) otherwise."""
    kind = "maxmin" if cfg.loss == "hug" and cfg.hug_measure == "maxgap" else "energy"
    return spherical_code(cfg.K, cfg.feature_dim, kind=kind, s=gnc_exponent(cfg))


def gnc_exponent(cfg: SimConfig) -> float:
    """The Riesz exponent of the GNC energies: HUG's s under its energy measure, else 1 (Thomson)."""
    return cfg.hug_s if cfg.loss == "hug" and cfg.hug_measure == "energy" else 1.0


@lru_cache(maxsize=16)
def _options(smoothing: float, target_scale: float, loss: str, spec: str | None, K: int, alpha: float | None,
             beta: float, weighting: str, gamma: float, s_min: float | None, d: int,
             hug: HugOptions) -> LossOptions:
    hier = None
    if spec is not None:
        tree = class_tree(spec, K)
        gram = _gram(spec, K, gamma, s_min)[0] if loss == "haframe" else None
        hier = hierarchy_data(tree, alpha=alpha if loss == "hxe" else 0.0, beta=beta if loss == "soft" else None,
                              weighting=weighting, frame_gram=gram)
    return LossOptions(smoothing=smoothing, target_scale=target_scale,
                       cosine_weight=alpha if loss == "haframe" else 0.0, hierarchy=hier, hug=hug)


def soft_targets(cfg: SimConfig) -> np.ndarray:
    """The K×K soft-label targets of `cfg` (row y: softmax(−β·d(y, ·)/tree height))."""
    return loss_options(cfg).hierarchy.soft_targets.numpy()


def loss_options(cfg: SimConfig) -> LossOptions:
    """The options every loss of `cfg` reads (tensors built once per configuration)."""
    hug = HugOptions(cfg.hug_measure, cfg.hug_s, cfg.hug_sigma, cfg.hug_sharpness, cfg.hug_inter, cfg.hug_intra)
    return _options(cfg.smoothing, cfg.target_scale, cfg.loss, cfg.hierarchy, cfg.K, cfg.alpha, cfg.beta,
                    cfg.hxe_weighting, cfg.gamma, cfg.s_min, cfg.d, hug)


# a run whose final NC1 is below this counts as collapsed (within-class variability ≪ between-class)
NC1_COLLAPSED = 1e-3


def hierarchy_summary(cfg: SimConfig, final: dict) -> dict:
    """The "hierarchy" block of summary.json: the tree, the loss's hierarchy parameters, the frame S
    the angular measures refer to, and the end-of-run hierarchical measurements."""
    tree = class_tree(cfg.hierarchy, cfg.K)
    S, s_min = frame_gram(cfg)
    out = {
        "tree": cfg.hierarchy, "name": tree.name, "K": tree.K, "height": tree.tree_height,
        "lca_convention": "d_ij = max of the two leaves' distances to their LCA (equal when leaves share a depth)",
        "frame": {"gamma": cfg.gamma, "s_min": s_min, "s_min_is_psd_bound": cfg.s_min is None,
                  "role": "the fixed classifier" if cfg.loss == "haframe"
                  else "reference Gram of the angular measures (not used by the loss)"},
        "measured": {k: final[k] for k in ("accuracy", "mistake_severity", "angular_mean", "angular_std",
                                           "angular_mean_W", "angular_std_W", "hier_nc2", "nc2")
                     if k in final} | {k: v for k, v in final.items() if k.startswith("hier_dist@")},
    }
    if cfg.loss == "hxe":
        out["hxe"] = {"alpha": cfg.alpha, "weighting": cfg.hxe_weighting,
                      "weights": "exp(-alpha * height(C))" if cfg.hxe_weighting == "height"
                      else "exp(-alpha * depth(C)) (the authors' code, before its normalization to sum 1)"}
    if cfg.loss == "soft":
        out["soft_labels"] = {"beta": cfg.beta, "targets": "softmax(-beta * LCA height / tree height)"}
    if cfg.loss == "haframe":
        out["haframe"] = {"alpha": cfg.alpha, "loss": "(1 - alpha) * CE(Wh) + alpha * sum_k (cos(w_k, h) - S_ky)^2"}
    if "nc1" in final:
        out["nc1"] = final["nc1"]
        out["nc1_collapsed"] = bool(final["nc1"] < NC1_COLLAPSED)
    return out
