"""The loss flags, defined once for both command-line tools (python -m ufm.simulate, python -m ufm.train): each
flag is a field of LossConfig, and `loss_config(args)` builds it."""

from __future__ import annotations

import argparse
from dataclasses import fields

from analysis.hierarchy import LCA_DISTANCES
from ufm.cli.common import number
from ufm.losses import LOSSES, LossConfig
from ufm.losses.config import HUG_MEASURES, HUG_PROXIES, HXE_WEIGHTINGS


def loss_help() -> str:
    return "; ".join(f"{name}: {entry.description}" for name, entry in LOSSES.items())


def add_loss_flags(p: argparse.ArgumentParser, default_loss: str, *, hierarchy_note: str = "") -> None:
    """The loss's flags in three groups (loss, class hierarchy, HUG), with LossConfig's defaults; `hierarchy_note`
    ends --hierarchy's help (what the tool does with a tree besides)."""
    d = LossConfig(default_loss)
    g = p.add_argument_group("loss")
    g.add_argument("--loss", choices=sorted(LOSSES), default=default_loss,
                   help=loss_help() + " (hxe, soft and haframe need --hierarchy; haframe and hug classify "
                                      "without a bias: --no-bias)")
    g.add_argument("--smoothing", type=number(float, 0, 1), default=d.smoothing, help="label smoothing α (--loss ls)")
    g.add_argument("--target-scale", type=number(float, 0, lo_open=True), default=d.target_scale,
                   help="MSE target scale s (targets s·e_y)")
    g.add_argument("--focal-gamma", type=number(float, 0), default=d.focal_gamma,
                   help="focal loss γ: −(1 − p_y)^γ log p_y (--loss focal; γ = 0 is CE)")
    g = p.add_argument_group("class hierarchy (losses hxe, soft, haframe; hierarchical metrics for any loss)")
    g.add_argument("--hierarchy", default=None,
                   help="class tree: cifar100, fgvc_aircraft, inaturalist19, tiered_imagenet_h, balanced:b1,b2,… "
                        "(branching factors, e.g. balanced:2,5,10 has 100 classes), flat:K, or a JSON file "
                        "(nested {name, children}, {parents: …} or {edges: […]})" + hierarchy_note)
    g.add_argument("--alpha", type=number(float, 0), default=None,
                   help="hxe: edge weights exp(−α·height) (default 0.1); haframe: weight of the cosine loss, "
                        "(1 − α)·CE + α·L_cos (default 0.4)")
    g.add_argument("--lca-distance", choices=LCA_DISTANCES, default=d.lca_distance,
                   help="the LCA distance d_ij of the tree (mistake severity, HierDist@k, soft labels, HAFrame "
                        "Gram): height_minus_depth = tree height − depth(LCA), as in the papers' distance files; "
                        "max_leaf_distance = the larger of the two leaves' distances to their LCA; auto = "
                        "height_minus_depth where leaf depths differ (tiered_imagenet_h); where every leaf sits at "
                        "one depth the two coincide")
    g.add_argument("--hxe-weighting", choices=HXE_WEIGHTINGS, default=d.hxe_weighting,
                   help="hxe: weight edges by exp(−α·the child's height) (height, the paper), exp(−α·its depth "
                        "from the root) (depth, the authors' code), or the latter divided by its sum over all "
                        "nodes, so that the weights sum to 1 (depth-normalized, the default of the authors' code)")
    g.add_argument("--beta", type=number(float, 0, lo_open=True), default=d.beta,
                   help="soft: targets softmax(−β·LCA distance/largest LCA distance)")
    g.add_argument("--gamma", type=number(float, 0, lo_open=True), default=d.gamma,
                   help="haframe: S_ij = (1 − s_min)·exp(−γ·d_ij/d_max) + s_min")
    g.add_argument("--s-min", type=number(float, None, 1), default=None,
                   help="haframe: the offset s_min of S (default: the smallest value keeping S positive "
                        "semidefinite, −1/(1ᵀE⁻¹1 − 1) with E = exp(−γ·D/d_max))")
    g = p.add_argument_group("HUG, hyperspherical uniformity gap (--loss hug; Liu et al. 2023)")
    g.add_argument("--hug-measure", choices=HUG_MEASURES, default=d.hug_measure,
                   help="uniformity of the proxies: energy (Riesz s-energy), gram (−log det of the Gaussian "
                        "kernel), maxgap (smooth minimum pairwise distance)")
    g.add_argument("--hug-s", type=number(float, 0), default=d.hug_s, help="Riesz exponent s (0: log energy)")
    g.add_argument("--hug-sigma", type=number(float, 0, lo_open=True), default=d.hug_sigma,
                   help="gram: kernel exp(−r²/(2σ²)) width σ (default 1/√2: the kernel exp(−r²) of the authors' "
                        "earlier Gram-determinant code)")
    g.add_argument("--hug-sharpness", type=number(float, 0, lo_open=True), default=d.hug_sharpness,
                   help="maxgap: t in (1/t)·log Σ exp(−t·r_ij)")
    g.add_argument("--hug-inter", type=number(float, 0), default=d.hug_inter, help="weight of the inter-class term")
    g.add_argument("--hug-intra", type=number(float, 0), default=d.hug_intra,
                   help="weight of the intra-class term mean ||ĥ_i − p̂_y||²")
    g.add_argument("--hug-proxies", choices=HUG_PROXIES, default=d.hug_proxies,
                   help="learned: the classifier rows are trained; fixed: set to the spherical code (or ETF)")
    g.add_argument("--code-budget", type=number(float, 0, lo_open=True), default=d.code_budget, metavar="SECONDS",
                   help="time budget of the reference spherical code (HUG, and the GNC check of any run with "
                        "K > d + 1): a code estimated to take longer is skipped with a note; computed codes are "
                        "cached on disk ($UFM_CACHE, default ~/.cache/ufm)")


def loss_config(args: argparse.Namespace, **overrides) -> LossConfig:
    """The LossConfig of the parsed flags (ConfigError on a bad combination)."""
    values = {f.name: getattr(args, f.name) for f in fields(LossConfig) if f.name != "name"}
    values.update(overrides)
    return LossConfig(args.loss, **values)
