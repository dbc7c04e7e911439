"""HUG, the hyperspherical uniformity gap (Liu et al., ICLR 2023), on normalized features and proxies."""

from __future__ import annotations

import torch

from ufm.losses.options import HugOptions, LossOptions


def inter_class_nonuniformity(proxies: torch.Tensor, opts: HugOptions) -> torch.Tensor:
    """−(inter-class uniformity) of the normalized proxies, per proxy: E_s/K (energy), −log det/K (gram)
    or the smooth −min distance (1/t)·log Σ_{i<j} exp(−t·r_ij) (maxgap). Minimal at the most uniform
    configuration: the simplex ETF for K <= d + 1, a spherical code beyond. The energy and max-gap measures run in
    K×K tiles within the memory budget (analysis.uniformity, an autograd Function whose backward recomputes the
    tiles); the Gram determinant needs the whole K×K kernel and is refused beyond the budget."""
    from analysis.uniformity import gram_log_det, log_sum_exp_distance, riesz_energy

    K = len(proxies)
    if opts.measure == "energy":
        return riesz_energy(proxies, opts.s) / K
    if opts.measure == "gram":
        return -gram_log_det(proxies, opts.sigma) / K
    return log_sum_exp_distance(proxies, opts.sharpness) / opts.sharpness


def hug(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions, features=None, classifier=None) -> torch.Tensor:
    """Hyperspherical uniformity gap (Liu et al., ICLR 2023): inter-class non-uniformity of the class
    proxies (the classifier rows, normalized) plus the intra-class spread of the normalized features,
    mean_i ‖ĥ_i − p̂_{y_i}‖² (= 2 − 2cos; 0 once every class has collapsed onto its proxy). The two are
    decoupled: the intra-class term moves only the features (the proxies enter it detached), so the
    proxies' trajectory does not depend on the intra-class weight."""
    if features is None or classifier is None:
        raise ValueError("the HUG loss needs the features and the classifier (proxies)")
    o = opts.hug or HugOptions()
    from analysis.uniformity import normalize_rows

    proxies = normalize_rows(classifier)
    intra = (normalize_rows(features) - proxies.detach()[y]).square().sum(1).mean()
    inter = inter_class_nonuniformity(classifier, o)  # a constant when the proxies are fixed
    return o.inter_weight * inter + o.intra_weight * intra
