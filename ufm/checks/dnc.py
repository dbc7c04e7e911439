"""Deep neural collapse against low rank (Súkeník, Lampert & Mondelli 2024): a deep ReLU UFM under bias-free MSE
is held against the objective of the best DNC configuration (the `dnc` theory target); a run that ends below
it has found a better, non-collapsed (low-rank) solution. The paper ('Neural collapse versus low-rank bias') shows such
solutions beyond two classes and layers; a brute-force search (about 150 restarts a case) finds them at L >= 4 (2 % to
9 % below DNC) and at L = 3 only for larger K and λ (K = 10), none at L = 3 for K = 3, 4, 6."""

from __future__ import annotations

from ufm.fit.measure import layer_singular_values
from ufm.output.format import fmt

NAME, ORDER = "dnc", 45
# below the DNC objective by more than this (relative) counts as beating it; float64 runs reach DNC to ~1e-10
BELOW_RTOL = 1e-8


def applies(run) -> bool:
    return run.target is not None and run.target.name == "dnc" and run.measured


def compute(run) -> dict:
    dnc, loss = run.target.predicted["loss"], run.final["loss"]
    below = loss < dnc * (1 - BELOW_RTOL)
    verdict = ("below the best DNC configuration: a low-rank (non-collapsed) solution beats deep neural collapse"
               if below else "at the DNC objective" if abs(loss - dnc) <= 1e-6 * abs(dnc)
               else "above the DNC objective (not converged, or a worse critical point)")
    ranks = [run.final[k] for k in sorted((k for k in run.final if k.startswith("rank_layer")),
                                          key=lambda k: int(k[len("rank_layer"):]))]
    svs = [layer_singular_values(run.final, layer) for layer in range(len(ranks))]
    return {"dnc_objective": dnc, "objective": loss, "rel_gap": (loss - dnc) / abs(dnc), "below_dnc": bool(below),
            "class_mean_ranks": ranks, "class_mean_singular_values": svs, "verdict": verdict}


def lines(block: dict) -> list[str]:
    return [f"DNC: objective {fmt(block['objective'])} vs the best DNC configuration {fmt(block['dnc_objective'])} "
            f"(relative {block['rel_gap']:+.2e}): {block['verdict']}; rank of the class means by layer "
            f"{block['class_mean_ranks']} (DNC: K at every layer)"]
