"""`python -m ufm.simulate` loses nothing and claims nothing falsely (issue 17): an existing run is not overwritten,
an interrupt during the certificate or the final save still leaves a summary (status interrupted, exit 130), a
full disk is one line naming the file (exit 1), divergence by growth, the saddle at 0 and an accuracy far from
the target's are not "converged", a run that cannot fit in memory is refused before it allocates, and the
reference spherical code of a large K is skipped with its reason."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ufm
from ufm.cli.simulate import main
from ufm.config import SimConfig
from ufm.errors import ConfigError

SMALL = ["--K", "3", "--n", "4", "--d", "5", "--steps", "30", "--quiet"]
REPO = Path(__file__).resolve().parents[3]


def one_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip() and not x.startswith("run directory")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_existing_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMALL, "--out", str(out)]) == 0
    before = (out / "summary.json").read_bytes()
    with pytest.raises(SystemExit) as e:
        main([*SMALL, "--K", "4", "--out", str(out)])
    assert e.value.code == 2 and "--overwrite" in one_line(capsys.readouterr().err)
    assert (out / "summary.json").read_bytes() == before
    (out / "notes.txt").write_text("mine")
    assert main([*SMALL, "--K", "4", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["K"] == 4
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    with pytest.raises(ValueError, match="overwrite=True"):
        ufm.run(SimConfig(K=3, n=4, d=5, steps=5), out, progress=False)


def test_sigint_during_the_certificate_writes_an_interrupted_summary(tmp_path):
    """The run of the issue: imbalanced CE at K = 30 (its certificate and minority checks take seconds); a SIGINT
    once training is over ends with exit 130 and a summary with status interrupted."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "ufm.simulate", "--K", "30", "--loss", "ce", "--d", "64", "--n", "10",
            "--imbalance", "5", "--minority", "10", "--steps", "10", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE,
                            text=True)
    for _ in range(600):  # until training is over (the history has its last row)
        if (out / "history.csv").exists() and ",10," in (out / "history.csv").read_text().replace("\n10,", ",10,"):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    summary = json.loads((out / "summary.json").read_text())
    if proc.returncode == 0:  # the end-of-run work finished before the signal arrived: nothing to test
        pytest.skip("the run ended before the signal")
    assert proc.returncode == 130 and summary["status"] == "interrupted" and "Traceback" not in err
    assert summary["final"] and (out / "params.pt").exists()


def test_an_interrupt_inside_the_final_save_keeps_the_summary(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"

    def interrupted_save(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    assert main([*SMALL, "--out", str(out)]) == 130
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["params_written"] is False
    assert not (out / "params.pt").exists() and not list(out.glob(".params.pt.*"))  # nothing torn


@pytest.mark.parametrize("failure", ["enospc", "torch"])
def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, failure):
    out = tmp_path / "run"
    real_save = torch.save

    def full_disk(*args, **kwargs):
        if isinstance(args[0], dict) and args[0].get("kind") == "ufm.simulate":  # the checkpoints: the disk fills later
            return real_save(*args, **kwargs)
        if failure == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    assert main([*SMALL, "--out", str(out)]) == 1
    line = one_line(capsys.readouterr().err)
    assert "params.pt" in line and ("no space left" in line or "disk full" in line), line
    assert json.loads((out / "summary.json").read_text())["status"] == "ok"  # the summary came first
    assert not list(out.glob(".*.tmp"))


def test_growth_is_divergence():
    r = ufm.run(SimConfig(K=4, n=10, d=8, optimizer="adam", lr=1e6, certificate=False, steps=50), progress=False)
    assert r.status == "diverged" and "grew" in r.summary["divergence"]["reason"] and not r.summary["converged"]


def test_the_saddle_at_zero_is_not_convergence():
    """--init-scale 1e-30: the gradient is ~0 because the run never left W = H = 0, a strict saddle (σ_max of
    the loss gradient at the origin, √n = 3.16, exceeds N·sqrt(wd_W·wd_H) = 0.02)."""
    r = ufm.run(SimConfig(K=4, n=10, d=8, init_scale=1e-30, steps=500, certificate=False), progress=False)
    assert not r.summary["converged"] and "saddle" in r.summary["doubts"][0]
    assert "did NOT reach" in r.table().splitlines()[-1]
    ok = ufm.run(SimConfig(K=4, n=10, d=8, wd=0.1, certificate=False), progress=False)  # collapse to 0 is optimal
    assert ok.summary["converged"] and not ok.summary["doubts"]


def test_an_accuracy_far_from_the_target_is_not_convergence():
    """HUG in d = 1: the features cannot cross the two points of the sphere, the gradient vanishes at
    accuracy ~0.5 while the simplex-ETF target predicts 1."""
    r = ufm.run(SimConfig(K=2, n=10, d=1, loss="hug", certificate=False), progress=False)
    assert not r.summary["converged"] and any("accuracy" in d for d in r.summary["doubts"])


@pytest.mark.parametrize("kwargs", [dict(d=10**9), dict(n=10**9), dict(K=10**6, n=2, d=2000)])
def test_a_run_that_cannot_fit_is_refused_before_allocating(kwargs):
    with pytest.raises(ConfigError, match="GiB, mostly the parameters"):
        ufm.run(SimConfig(**{"K": 10, "n": 10, "d": 8, **kwargs}), progress=False)


def test_the_logits_of_many_classes_count_only_their_blocks():
    """K = 10⁶, n = 2: the N×K logits would be 8·10¹² bytes, but they exist one block at a time, so the estimate
    counts the blocks (at most twice the memory budget) and the run is not refused for them (DESIGN §8)."""
    from analysis.blocked import budget
    from ufm.fit.memory import estimate_bytes, memory_terms

    cfg = SimConfig(K=10**6, n=2, d=8)
    with budget("256MiB"):
        terms = memory_terms(cfg)
        logits = next(v for k, v in terms.items() if k.startswith("the logits"))
        assert logits == 2 * 256 * 2**20 and estimate_bytes(cfg) < 2**31


def test_a_large_k_skips_the_reference_code_with_its_reason():
    """A code whose search is estimated over --code-budget (here 10 ms for 300 points in R^16, about a second) is
    skipped with the estimate and the flag, the measured uniformity kept."""
    cfg = SimConfig.from_dict(dict(K=300, n=1, d=16, steps=3, certificate=False, code_budget=0.01))
    r = ufm.run(cfg, progress=False)
    assert "not computed" in r.summary["gnc"]["skipped"] and "--code-budget" in r.summary["gnc"]["skipped"]
    assert "energy_W" in r.summary["gnc"]
    assert any(line.startswith("GNC: the reference spherical code") for line in r.check_lines)


def test_negative_numbers_reach_the_range_check(capsys):
    with pytest.raises(SystemExit) as e:
        main([*SMALL, "--wd", "-1e-4"])
    assert e.value.code == 2 and "must be >= 0" in one_line(capsys.readouterr().err)


def test_help_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "(default: None)" not in out and "(default 10) (default" not in out and "verdict" in out
