"""The GPU check (benchmarks/gpu_check.sh) runs end to end at toy sizes on the CPU, so it cannot rot before a GPU
is lent: every row is measured (no FAILED row), and the script refuses one line without CUDA unless --cpu-smoke."""

import subprocess
from pathlib import Path

import torch

from benchmarks.gpu_check import main

REPO = Path(__file__).resolve().parents[2]


def test_cpu_smoke_measures_every_row(tmp_path, capsys):
    out = tmp_path / "gpu_check.md"
    assert main(["--cpu-smoke", "--out", str(out)]) == 0
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 12 and "FAILED" not in table
    for key in ("one-layer GD step", "batched B", "fixed-frame", "deep UFM", "streamed", "ImageNet-scale", "ResNet18",
                "many classes", "spherical code", "NC at every layer", "data-parallel UFM, NCCL"):
        assert any(key in r for r in rows), key
    assert "skipped: 0 GPUs here, NCCL needs 2" in table
    assert "× floor" in table and "steps/s" in table and "epochs/s" in table


def test_the_shell_wrapper_without_cuda_is_one_line(tmp_path):
    if torch.cuda.is_available():
        return
    import sys

    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "--cpu-smoke" in done.stderr
