"""`python -m ufm.train --track-layers`: each layer's history columns equal a naive computation from forward hooks on
the trained network (tests/analysis/test_layers.naive_layer), the summary fits the separation law over the layers
(He & Su 2023) and holds the MLP against deep neural collapse and its deep-UFM twin."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.layers import separation_law
from tests.analysis.test_layers import naive_layer
from ufm.backbone.config import TrainConfig
from ufm.backbone.data import synthetic
from ufm.backbone.training import train_backbone
from ufm.cli.train import main

SMALL = dict(dataset="synthetic", classes=4, per_class=24, test_per_class=6, input_shape=(10,), mlp_width=12,
             mlp_depth=3, epochs=3, batch_size=32, device="cpu", track_layers="all")


def hooked(body: torch.nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = body.get_submodule(name).register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    body.eval()
    with torch.no_grad():
        body(x)
    handle.remove()
    return seen[0].double()


def test_every_relu_layer_is_measured_and_equals_the_naive_computation():
    cfg = TrainConfig(**SMALL)
    summary, history, net = train_backbone(cfg, None, progress=False)
    names = summary["layers"]["names"]
    assert names == ["layers.2", "layers.4", "layers.6"]  # "all" for the MLP: every ReLU's output
    data = synthetic(cfg)
    last = history[-1]
    for name in names:
        ref = naive_layer(hooked(net.body, name, data.x_train), data.y_train, K=4)
        for key in ("nc1", "separation", "nc1_trace", "ncc_accuracy", "orthogonality"):
            assert last[f"{name}:{key}"] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), (name, key)
        np.testing.assert_allclose([last[f"{name}:sv{i}"] for i in range(1, 4)], ref["singular_values"][:3],
                                   rtol=1e-9)
        assert summary["layers"]["final"][name]["separation"] == last[f"{name}:separation"]
    assert len([r for r in history if "layers.2:nc1" in r]) == len(history)  # every measurement
    law = separation_law([last[f"{n}:separation"] for n in names])
    fitted = summary["layers"]["separation_law"]["final"]
    assert fitted["rho"] == pytest.approx(law.rho, rel=1e-12) and fitted["r2"] == pytest.approx(law.r2, rel=1e-12)
    dnc = summary["layers"]["dnc"]
    assert dnc["prediction"] == {"nc1": 0.0, "rank_means": 3, "orthogonality": 0.0}
    assert set(dnc["layers"]) == set(names)


def test_resnet_stages_and_named_layers():
    cfg = TrainConfig(**{**SMALL, "arch": "resnet18", "resnet_width": 4, "input_shape": (1, 8, 8), "epochs": 1})
    summary, history, _ = train_backbone(cfg, None, progress=False)
    assert summary["layers"]["names"] == ["stem", *[f"blocks.{i}" for i in range(8)]]
    assert "dnc" not in summary["layers"]  # deep neural collapse is the MLP's (ReLU layers of a deep UFM)
    cfg = TrainConfig(**{**SMALL, "track_layers": "layers.4, layers.6", "epochs": 1})
    assert train_backbone(cfg, None, progress=False)[0]["layers"]["names"] == ["layers.4", "layers.6"]


def test_an_unknown_layer_is_one_line_exit_2(tmp_path, capsys):
    argv = ["--dataset", "synthetic", "--classes", "3", "--per-class", "6", "--epochs", "1", "--quiet",
            "--track-layers", "layers.99", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--track-layers" in err and "no submodule 'layers.99'" in err


def test_the_deep_ufm_twin_is_held_beside_each_layer(tmp_path):
    """--compare-ufm with --track-layers on an MLP: the deep UFM of its hidden layers runs into RUN/ufm_deep, and each
    ReLU layer gets the twin's NC1, rank and orthogonality at the matching layer input."""
    out = tmp_path / "run"
    argv = ["--dataset", "synthetic", "--classes", "3", "--per-class", "10", "--test-per-class", "3",
            "--input-shape", "6", "--mlp-width", "8", "--mlp-depth", "2", "--epochs", "2", "--track-layers", "all",
            "--compare-ufm", "--ufm-steps", "40", "--device", "cpu", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    twin = s["layers"]["twin"]
    assert (out / "ufm_deep" / "summary.json").exists() and twin["steps"] == 40
    assert [twin["layers"][n]["layer_input"] for n in ("layers.2", "layers.4")] == [0, 1]
    for n in ("layers.2", "layers.4"):
        assert twin["layers"][n]["backbone"]["nc1"] == s["layers"]["final"][n]["nc1"]
        assert twin["layers"][n]["nc1"] >= 0
