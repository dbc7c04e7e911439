"""The launch form the docs give, typed as a user would: `torchrun --nproc-per-node 2 -m ufm.simulate -- --K … --d …`
runs one problem on two gloo processes; rank 0 writes the run directory (config.json records the 2 processes,
params.pt the whole H) and the final loss equals the single-process run's. Without the `--`, torchrun's own parser
takes --n and --d for ambiguous prefixes of its own flags (exit 2): the help says to add it."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ufm
from ufm.config import SimConfig

ROOT = Path(__file__).resolve().parents[3]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
FLAGS = ["--K", "3", "--n", "3", "--d", "4", "--steps", "60", "--wd", "5e-3", "--dtype", "float64", "--device", "cpu",
         "--quiet"]


def launch(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([TORCHRUN, "--nproc-per-node", "2", "-m", "ufm.simulate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_documented_launch_runs_one_problem_on_two_processes(tmp_path):
    out = tmp_path / "run"
    done = launch("--", *FLAGS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("run directory:") == 1  # rank 0 alone reports
    assert json.loads((out / "config.json").read_text())["processes"] == 2
    params = torch.load(out / "params.pt", weights_only=True)
    ref = ufm.run(SimConfig(K=3, n=3, d=4, steps=60, wd=5e-3, dtype="float64", device="cpu"), progress=False)
    torch.testing.assert_close(params["H"], ref.params["H"], rtol=0, atol=1e-10)
    torch.testing.assert_close(params["W"], ref.params["W"], rtol=0, atol=1e-10)
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["step"]) for r in rows] == [r["step"] for r in ref.history]
    assert abs(float(rows[-1]["loss"]) - ref.history[-1]["loss"]) < 1e-10
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and abs(summary["final"]["nc1"] - ref.final["nc1"]) <= 1e-9 * ref.final["nc1"]


def test_without_the_separator_torchrun_rejects_ufm_flags_and_the_help_names_the_form():
    done = launch(*FLAGS)
    assert done.returncode == 2 and "torchrun: error: ambiguous option: --" in done.stderr  # --n, --d
    help_text = subprocess.run([sys.executable, "-m", "ufm.simulate", "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60).stdout
    assert "torchrun --nproc-per-node P -m ufm.simulate -- --K 5 --d 8" in help_text


@pytest.mark.parametrize("flags", [["--optimizer", "lbfgs"]])
def test_a_run_that_cannot_be_sharded_ends_with_one_line_from_rank_0(flags, tmp_path):
    done = launch("--", *FLAGS, *flags, "--out", str(tmp_path / "run"))
    assert done.returncode == 1  # torchrun's code for a failed worker (the worker exited 2), with its own report
    lines = [line for line in done.stderr.splitlines() if "ufm.simulate: error" in line]
    assert len(lines) == 1 and "not lbfgs" in lines[0]
    assert f'File "{ROOT / "ufm"}' not in done.stderr  # no traceback from ufm's processes
