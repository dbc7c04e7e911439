"""`python -m ufm.train`: the run directory, checkpoints (weights_only), SIGKILL + --resume reproducing an
uninterrupted run exactly, divergence, bad input, the UFM comparison and DDP under torchrun (gloo, CPU)."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ufm.backbone.checkpoint import CHECKPOINT
from ufm.backbone.config import TrainConfig
from ufm.backbone.data import load_dataset
from ufm.backbone.measure import measure_split
from ufm.backbone.networks import build_network
from ufm.backbone.training import lr_at
from ufm.cli.train import main
from ufm.fit.schedule import log_schedule
from ufm.losses import LOSSES, LossOptions

# a small problem: 4 Gaussian classes in R^16, a 2-layer MLP of width 32
SMALL = ["--dataset", "synthetic", "--classes", "4", "--per-class", "40", "--test-per-class", "10",
         "--input-shape", "16", "--mlp-width", "32", "--mlp-depth", "2", "--batch-size", "16", "--quiet"]
REPO = Path(__file__).resolve().parents[3]


def run_cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ufm.train", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def read_history(run: Path) -> list[dict]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


def measure_checkpoint(run: Path) -> dict:
    """NC of the whole training set, in one process, for the (CE) network saved in the run's checkpoint."""
    state = torch.load(run / CHECKPOINT, weights_only=True)
    cfg = TrainConfig.from_dict(state["config"])
    data = load_dataset(cfg)
    net = build_network(cfg, data.shape, data.K)
    net.load_state_dict(state["model"])
    return measure_split(net, data.x_train, data.y_train, data.K, LOSSES["ce"], LossOptions(), batch_size=1000,
                         device=torch.device("cpu"))


def test_learning_rate_schedules():
    cos = TrainConfig(lr=0.1, epochs=10, schedule="cosine")
    assert lr_at(cos, 0) == pytest.approx(0.1) and lr_at(cos, 5) == pytest.approx(0.05)
    assert lr_at(cos, 10) == pytest.approx(0.0, abs=1e-15)
    step = TrainConfig(lr=0.1, epochs=9, schedule="step")
    assert [lr_at(step, e) for e in (0, 2, 3, 5, 6, 8)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert lr_at(TrainConfig(lr=0.1, schedule="constant"), 77) == 0.1


def test_run_directory_checkpoint_and_final_metrics(tmp_path):
    """History on the log-spaced epochs; summary.json with the contract's keys; the checkpoint loads with
    weights_only=True, and the network in it reproduces the final measurement."""
    out = tmp_path / "run"
    assert main([*SMALL, "--epochs", "12", "--out", str(out)]) == 0
    rows = read_history(out)
    assert [int(r["epoch"]) for r in rows] == log_schedule(12, 10)
    summary = json.loads((out / "summary.json").read_text())
    for key in ("config", "final", "theory", "gap", "steps", "seconds", "converged", "test", "timing"):
        assert key in summary
    for key in ("loss", "accuracy", "nc1", "nc2", "nc3", "nc4", "W_norm_sq", "H_norm_sq"):
        assert key in summary["final"]
    assert summary["config"]["K"] == 4 and summary["config"]["counts"] == [40] * 4 and summary["epochs"] == 12
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 12 and len(state["history"]) == len(rows)
    again = measure_checkpoint(out)
    assert again["nc1"] == pytest.approx(summary["final"]["nc1"], rel=1e-5)
    assert again["accuracy"] == summary["final"]["accuracy"]


def _final_numbers(run: Path) -> dict:
    final = json.loads((run / "summary.json").read_text())["final"]
    return {k: v for k, v in final.items() if k not in ("train_seconds", "measure_seconds")}


def test_sigkill_mid_run_then_resume_ends_exactly_like_an_uninterrupted_run(tmp_path):
    argv = [*SMALL, "--per-class", "300", "--batch-size", "4", "--epochs", "16", "--seed", "3"]
    full = tmp_path / "full"
    assert run_cli(*argv, "--out", str(full)).returncode == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ufm.train", *argv, "--out", str(killed)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    epoch = 0
    deadline = time.monotonic() + 240
    while epoch < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        if (killed / CHECKPOINT).exists():
            epoch = torch.load(killed / CHECKPOINT, weights_only=True)["epoch"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "summary.json").exists()
    assert 3 <= torch.load(killed / CHECKPOINT, weights_only=True)["epoch"] < 16
    resumed = run_cli(*argv, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _final_numbers(killed) == _final_numbers(full)
    assert [r["epoch"] for r in read_history(killed)] == [r["epoch"] for r in read_history(full)]


def test_resume_with_another_configuration_is_refused(tmp_path):
    out = tmp_path / "run"
    assert run_cli(*SMALL, "--epochs", "2", "--out", str(out)).returncode == 0
    r = run_cli(*SMALL, "--epochs", "2", "--wd", "0", "--out", str(out), "--resume")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "another configuration" in r.stderr and "wd" in r.stderr
    r = run_cli(*SMALL, "--epochs", "2", "--mlp-width", "8", "--out", str(out), "--resume")
    assert r.returncode == 2 and "mlp_width" in r.stderr


@pytest.mark.parametrize("content, message", [(b"not a checkpoint", "cannot read the checkpoint"),
                                              ({"format": 1, "epoch": 3}, "lacks config"),
                                              ({"weights": torch.zeros(3)}, "not a ufm.train checkpoint")])
def test_corrupt_or_foreign_checkpoint_is_one_line(content, message, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    if isinstance(content, bytes):
        (out / CHECKPOINT).write_bytes(content)
    else:
        torch.save(content, out / CHECKPOINT)
    assert main([*SMALL, "--epochs", "2", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_divergence_stops_with_a_clear_message_and_keeps_what_was_written(tmp_path):
    out = tmp_path / "run"
    r = run_cli(*SMALL, "--epochs", "5", "--lr", "1e8", "--loss", "mse", "--schedule", "constant", "--out", str(out))
    assert r.returncode == 3
    assert "diverged in epoch" in r.stderr and "smaller --lr" in r.stderr and "Traceback" not in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["divergence"]["epoch"] >= 1
    assert read_history(out)[0]["epoch"] == "0" and math.isfinite(float(read_history(out)[0]["nc1"]))


BAD = {
    "unknown arch": ["--arch", "vgg"],
    "unknown dataset": ["--dataset", "imagenet"],
    "negative wd": ["--wd", "-1"],
    "negative epochs": ["--epochs", "-1"],
    "zero batch": ["--batch-size", "0"],
    "bad shape": ["--input-shape", "3x0x4"],
    "WRN depth": ["--arch", "wrn28", "--wrn-depth", "27"],
    "haframe with bias": ["--loss", "haframe", "--hierarchy", "balanced:2,5"],
    "hxe without tree": ["--loss", "hxe"],
    "tree of another K": ["--loss", "hxe", "--hierarchy", "balanced:2,3"],
    "resume without out": ["--resume"],
    "amp on CPU": ["--amp", "on", "--device", "cpu"],
    "missing cifar": ["--dataset", "cifar10", "--data-root", "/nonexistent/ufm-data"],
    "BatchNorm on one sample": ["--batch-norm", "--batch-size", "1"],
    "HAFrame head (BatchNorm) on one sample": ["--loss", "haframe", "--no-bias", "--hierarchy", "balanced:2,5",
                                               "--batch-size", "1"],
}


@pytest.mark.parametrize("argv", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_line_and_exit_2(argv, capsys, tmp_path):
    try:
        code = main(["--epochs", "1", "--quiet", *argv] + ([] if "--resume" in argv else ["--out", str(tmp_path)]))
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err, err


def test_compare_ufm_writes_both_runs_and_the_plot(tmp_path):
    out = tmp_path / "run"
    code = main([*SMALL, "--loss", "mse", "--epochs", "6", "--compare-ufm", "--ufm-steps", "300", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    twin = summary["ufm"]["config"]
    assert twin["counts"] == [40] * 4 and twin["d"] == 32 and twin["loss"] == "mse" and twin["wd_W"] == 5e-4
    assert summary["theory"]["applies"] and summary["comparison"]["nc1"]["ufm"] is not None
    assert (out / "ufm" / "history.csv").exists() and (out / "comparison.png").stat().st_size > 10_000
    # the gap is measured − predicted for the compared NC quantities
    assert summary["gap"]["nc1"] == pytest.approx(summary["final"]["nc1"] - summary["theory"]["predicted"]["nc1"])


def test_torchrun_two_cpu_processes_measure_the_whole_training_set(tmp_path):
    """DDP (gloo): the reduced NC metrics of the two shards are those of the whole training set, as measured
    by one process on the network saved in the checkpoint."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "ufm.train", *SMALL, "--epochs", "3", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    # torchrun's own report ends stderr; the failing process's message (e.g. gloo's "terminate called …") is earlier
    assert r.returncode == 0, "\n".join(line for line in r.stderr.splitlines()
                                          if any(w in line for w in ("rror", "terminate", "what()", "Abort")))[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    whole = measure_checkpoint(out)
    for key in ("nc1", "nc2", "nc3", "nc4", "accuracy", "data_loss"):
        expected = whole["loss"] if key == "data_loss" else whole[key]
        assert summary["final"][key] == pytest.approx(expected, rel=1e-5, abs=1e-9), key


def test_weight_decay_drives_a_real_network_further_into_collapse(tmp_path):
    """Source 3's finding on a small MLP (digits, 20 samples per class, MSE): with weight decay NC1 falls
    well over an order of magnitude from its first measurement and ends clearly below the run without
    weight decay, which interpolates (training loss → 0) and plateaus. Measured: NC1 0.52 → 6.5e-3 with
    λ = 5e-3, → 1.75e-2 with λ = 0."""
    from ufm.backbone.training import train

    def run(wd: float) -> list[dict]:
        cfg = TrainConfig(loss="mse", train_per_class=20, mlp_width=128, mlp_depth=2, batch_size=20, epochs=800,
                          wd=wd, evals_per_decade=2)
        return train(cfg, tmp_path / f"wd{wd}", progress=False)

    on, off = run(5e-3), run(0.0)
    first = json.loads((tmp_path / "wd0.005" / "summary.json").read_text())
    assert first["final"]["nc1"] == on["final"]["nc1"]
    start = float(read_history(tmp_path / "wd0.005")[0]["nc1"])
    assert on["final"]["nc1"] < start / 40
    assert on["final"]["nc1"] < off["final"]["nc1"] / 2
    assert off["final"]["data_loss"] < 1e-4 < on["final"]["data_loss"]  # only the run without decay interpolates


def test_a_checkpoint_of_an_earlier_version_resumes():
    """A checkpoint saved before the loss fields were shared (no hug_sigma/hug_sharpness/hug_proxies, α left
    None) is the same configuration; a real difference is still refused."""
    from ufm.backbone.checkpoint import CheckpointError, check_config

    current = TrainConfig.from_dict(dict(dataset="synthetic", loss="hxe", hierarchy="balanced:2,2", classes=4))
    old = {k: v for k, v in current.to_dict().items() if k not in ("hug_sigma", "hug_sharpness", "hug_proxies")}
    old["alpha"] = None
    check_config(old, current.to_dict(), Path("ckpt.pt"))
    with pytest.raises(CheckpointError, match="wd"):
        check_config({**old, "wd": 1e-2}, current.to_dict(), Path("ckpt.pt"))


def test_hierarchical_test_measures_are_in_the_history():
    """With a class tree the test split gets every hierarchical prediction measure (test_KEY columns), and they
    obey their definitions: the best distance among the top k is at most their mean, precisions lie in [0, 1]."""
    import ufm

    cfg = TrainConfig.from_dict(dict(dataset="synthetic-hier", hierarchy="balanced:3,4", input_shape=(16,),
                                     per_class=10, test_per_class=5, mlp_width=16, epochs=2, batch_size=20,
                                     device="cpu"))
    last = ufm.train(cfg, progress=False).history[-1]
    for k in (5, 20):
        assert 0.0 <= last[f"test_best_hier_dist@{k}"] <= last[f"test_hier_dist@{k}"] + 1e-12
        assert 0.0 <= last[f"test_hier_precision@{k}"] <= 1.0
    assert "test_mistake_severity" in last and "test_hier_dist@1" in last
