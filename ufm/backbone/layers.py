"""A backbone measured layer by layer (`--track-layers`): each tracked layer's NC1, NC1 as a trace ratio, separation
fuzziness D_l, NC2 of the means, nearest-class-center accuracy, rank, orthogonality and singular values of the class
means, on the training set at every measurement (analysis.layers.measure_layers: two forward passes, exact); at the
end the law of data separation fitted over the layers (He & Su 2023) and, for the MLP, each layer held against deep
neural collapse (Súkeník, Mondelli & Lampert 2023: NC1 → 0, class means of rank K, orthogonal after a ReLU).

history.csv gets one column per layer and quantity, named LAYER:KEY (e.g. `layers.2:nc1`, `layers.2:sv1`); layer
names are those of the modules inside the backbone's body (`net.body`)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from analysis.layers import measure_layers, select_layers, separation_law
from ufm.errors import ConfigError

# the per-layer quantities recorded in history.csv (besides the singular values, LAYER:sv1 … LAYER:sv{SV_MAX})
KEYS = ("nc1", "nc1_trace", "separation", "nc2", "ncc_accuracy", "rank_means", "orthogonality")
SV_MAX = 16
# a DNC comparison: a measured quantity within this of its prediction (NC1 and orthogonality → 0) counts as collapsed
DNC_TOL = 0.05


def track_layer_names(spec: str, arch: str, body: nn.Module) -> list[str]:
    """The body's modules that `--track-layers SPEC` names: "all" — for the MLP every ReLU's output (the
    representation after each hidden layer), for ResNet18 and the WRN the stem and every residual block (their
    activations are functional) — or a comma-separated list of module names inside the body. ConfigError naming
    an unknown module.
    >>> from ufm.backbone.networks import MLP
    >>> track_layer_names("all", "mlp", MLP(4, 8, 3, batch_norm=False))
    ['layers.2', 'layers.4', 'layers.6']
    """
    if spec.strip() == "all":
        if arch == "mlp":
            return list(select_layers(body, "all"))
        blocks = body.get_submodule("blocks")
        return ["stem", *[f"blocks.{i}" for i in range(len(blocks))]]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    try:
        return list(select_layers(body, names))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--track-layers: {e}") from None


def measure(body: nn.Module, x: torch.Tensor, y: torch.Tensor, K: int, names: list[str], *, batch_size: int,
            device: torch.device, reduce=None) -> dict[str, float]:
    """The history columns of the tracked layers over (x, y): LAYER:KEY for KEYS and LAYER:sv1… (the largest SV_MAX
    singular values of the centered class means)."""
    def batches():
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size].to(device, non_blocking=True), y[start:start + batch_size].to(device)

    per_layer = measure_layers(body, batches, K, names, reduce=reduce)
    row: dict[str, float] = {}
    for name, m in per_layer.items():
        for key in KEYS:
            row[f"{name}:{key}"] = float(m[key])
        for i, value in enumerate(m["singular_values"][:SV_MAX], 1):
            row[f"{name}:sv{i}"] = float(value)
    return row


def _layer_row(row: dict, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {key: row.get(f"{name}:{key}", math.nan) for key in KEYS}
    svs, i = [], 1
    while f"{name}:sv{i}" in row and not math.isnan(row[f"{name}:sv{i}"]):
        svs.append(row[f"{name}:sv{i}"])
        i += 1
    out["singular_values"] = svs
    return out


def _law(row: dict, names: list[str]) -> dict[str, float] | None:
    D = [row.get(f"{name}:separation", math.nan) for name in names]
    if len(D) < 2 or not all(math.isfinite(v) and v > 0 for v in D):
        return None
    law = separation_law(D)
    return {"rho": law.rho, "a": law.a, "r2": law.r2, "ratio": law.ratio}


def summary_block(history: list[dict], names: list[str], K: int, arch: str, width: int) -> dict[str, Any]:
    """summary.json's "layers": the tracked layers, each layer's numbers at the first and the last measurement, the
    separation law fitted over the layers at both, and (MLP) each ReLU layer against deep neural collapse.
    >>> rows = [{"epoch": 0, "a:separation": 4.0, "b:separation": 2.0}, {"epoch": 9, "a:separation": 1.0,
    ...          "b:separation": 0.25}]
    >>> block = summary_block(rows, ["a", "b"], 3, "resnet18", 8)
    >>> round(block["separation_law"]["final"]["rho"], 6), block["first_epoch"], block["final_epoch"]
    (1.386294, 0, 9)
    """
    first, last = history[0], history[-1]
    block: dict[str, Any] = {
        "names": names, "first_epoch": first.get("epoch"), "final_epoch": last.get("epoch"),
        "first": {n: _layer_row(first, n) for n in names}, "final": {n: _layer_row(last, n) for n in names},
        "separation_law": {"first": _law(first, names), "final": _law(last, names)},
    }
    if arch == "mlp":
        block["dnc"] = dnc_comparison(block["final"], K, width)
    return block


def dnc_comparison(final: dict[str, dict], K: int, width: int) -> dict[str, Any]:
    """Each ReLU layer of the MLP against deep neural collapse (Súkeník, Mondelli & Lampert 2023, the deep UFM's
    global optima): NC1 = 0, class means of rank min(K, width) (centered: K − 1) and orthogonal after the ReLU.
    >>> out = dnc_comparison({"l": {"nc1": 0.01, "rank_means": 2.0, "orthogonality": 0.02}}, 3, 8)
    >>> out["layers"]["l"]["collapsed"], out["prediction"]["rank_means"]
    (True, 2)
    """
    rank = min(K, width) - 1  # the centered means of K orthogonal means span K − 1 dimensions
    layers = {}
    for name, m in final.items():
        ok = (m["nc1"] <= DNC_TOL and m["rank_means"] == rank and m["orthogonality"] <= DNC_TOL)
        layers[name] = {"nc1": m["nc1"], "rank_means": m["rank_means"], "orthogonality": m["orthogonality"],
                        "collapsed": bool(ok)}
    return {"prediction": {"nc1": 0.0, "rank_means": rank, "orthogonality": 0.0},
            "tolerance": DNC_TOL, "layers": layers,
            "note": "deep neural collapse: NC1 → 0, the centered class means of rank K − 1, the class means "
                    f"orthogonal after each ReLU; collapsed = all three within {DNC_TOL}"}


def deep_twin_layers(summary: dict, run_dir, *, progress: bool = True) -> dict[str, Any]:
    """Run the MLP's deep-UFM twin (ufm.backbone.twin.deep_twin_config) into RUN/ufm_deep and hold it layer by layer
    beside the backbone: for each tracked ReLU layer, the twin's NC1, rank and orthogonality at the matching layer
    input (the twin's X_l stands for the MLP's (l+1)-th ReLU output), and the DNC prediction. Returns the block
    summary["layers"]["twin"]."""
    from pathlib import Path

    from analysis.layers import layer_metrics
    from analysis.metrics import class_means, nc_metrics
    from ufm.api import run
    from ufm.backbone.config import TrainConfig
    from ufm.backbone.twin import deep_twin_config
    from ufm.model import layer_inputs

    cfg = TrainConfig.from_dict(summary["config"])
    sim = deep_twin_config(cfg, summary["config"]["counts"])
    result = run(sim, Path(run_dir) / "ufm_deep", progress=progress, overwrite=True)
    y = torch.repeat_interleave(torch.arange(sim.K), torch.tensor(sim.class_counts))
    inputs = layer_inputs({k: v.double() for k, v in result.params.items()}, "relu", nonneg=True)
    step = 3 if cfg.batch_norm else 2  # the MLP's body: Flatten, then [Linear, (BatchNorm), ReLU] per hidden layer
    relu_of = {f"layers.{step * (i + 1)}": i for i in range(cfg.mlp_depth)}  # the i-th ReLU ↔ the twin's X_i
    twin = {}
    for name in summary["layers"]["names"]:
        if name not in relu_of:
            continue
        X = inputs[relu_of[name]]
        m = layer_metrics(nc_metrics(X, y, K=sim.K, pairwise=False), class_means(X, y, sim.K), sim.K)
        twin[name] = {"layer_input": relu_of[name], "nc1": m["nc1"], "rank_means": m["rank_means"],
                      "orthogonality": m["orthogonality"],
                      "backbone": {k: summary["layers"]["final"][name][k] for k in ("nc1", "rank_means",
                                                                                    "orthogonality")}}
    return {"run_dir": str(Path(run_dir) / "ufm_deep"), "status": result.status, "steps": result.summary["steps"],
            "converged": result.summary["converged"], "loss": result.final.get("loss"), "layers": twin}
