"""The hierarchy block: the tree, the loss's hierarchy parameters, the HAFrame Gram S the angular measures refer
to, and the end-of-run hierarchical measurements (mistake severity, HierDist@k, angular collapse; DESIGN §5.4)."""

from __future__ import annotations

from ufm.output.format import fmt

NAME, ORDER = "hierarchy", 30


def applies(run) -> bool:
    return run.problem.tree is not None


# a run whose final NC1 is below this counts as collapsed (within-class variability ≪ between-class)
NC1_COLLAPSED = 1e-3


def compute(run) -> dict:
    """The "hierarchy" block of summary.json: the tree, the loss's hierarchy parameters, the frame S
    the angular measures refer to, and the end-of-run hierarchical measurements."""
    loss, final, tree = run.cfg.loss, run.final, run.problem.tree
    out = {
        "tree": loss.hierarchy, "name": tree.name, "K": tree.K, "height": tree.tree_height,
        "lca_convention": tree.lca_description,
        "frame": {"gamma": loss.gamma, "s_min": run.problem.s_min, "s_min_is_psd_bound": loss.s_min is None,
                  "role": "the fixed classifier" if loss.name == "haframe"
                  else "reference Gram of the angular measures (not used by the loss)"},
        "measured": {k: final[k] for k in ("accuracy", "mistake_severity", "angular_mean", "angular_std",
                                           "angular_std_signed", "angular_mean_W", "angular_std_W",
                                           "angular_std_signed_W", "hier_nc2", "nc2")
                     if k in final} | {k: v for k, v in final.items()
                                       if k.startswith(("hier_dist@", "best_hier_dist@", "hier_precision@"))},
    }
    if loss.name == "hxe":
        out["hxe"] = {"alpha": loss.alpha, "weighting": loss.hxe_weighting,
                      "weights": {"height": "exp(-alpha * height(C))",
                                  "depth": "exp(-alpha * depth(C)) (the authors' code, before its normalization to "
                                           "sum 1)",
                                  "depth-normalized": "exp(-alpha * depth(C)) / sum over every node v of "
                                                      "exp(-alpha * depth(v)) (the authors' code: weights sum to 1)",
                                  }[loss.hxe_weighting]}
    if loss.name == "soft":
        out["soft_labels"] = {"beta": loss.beta, "targets": "softmax(-beta * LCA distance / largest LCA distance)"}
    if loss.name == "haframe":
        out["haframe"] = {"alpha": loss.alpha, "loss": "(1 - alpha) * CE(Wh) + alpha * sum_k (cos(w_k, h) - S_ky)^2"}
    if "nc1" in final:
        out["nc1"] = final["nc1"]
        out["nc1_collapsed"] = bool(final["nc1"] < NC1_COLLAPSED)
    return out


def lines(h: dict) -> list[str]:
    m, f = h["measured"], h["frame"]
    dists = ", ".join(f"@{k.split('@')[1]} {fmt(v)}" for k, v in m.items() if k.startswith("hier_dist@"))
    lines = [f"hierarchy {h['tree']} ({h['K']} classes, height {h['height']}): mistake severity "
             f"{fmt(m.get('mistake_severity'))}, HierDist {dists}"]
    if "angular_mean" in m:
        W = (f"; classifier {fmt(m['angular_mean_W'])} ± {fmt(m['angular_std_W'])}"
             if "angular_mean_W" in m else "")
        lines.append(f"angular collapse |cos − S| to the HAFrame Gram S (γ = {f['gamma']:g}, s_min = "
                     f"{f['s_min']:.4g}): class means {fmt(m['angular_mean'])} ± {fmt(m['angular_std'])}{W}; "
                     f"hierarchy-aware NC2 {fmt(m.get('hier_nc2'))}")
    if "nc1_collapsed" in h:
        lines.append(f"NC1 → 0: {'yes' if h['nc1_collapsed'] else 'no'} (NC1 = {fmt(h['nc1'])})")
    return lines
