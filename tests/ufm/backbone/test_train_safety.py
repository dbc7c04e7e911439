"""`python -m ufm.train` loses nothing (issue 17): a run directory holding a run is refused without --resume or
--overwrite; SIGINT/SIGTERM at any point (an epoch, a measurement, the checkpoint save, the UFM twin) ends with
summary.json at status "interrupted" and exit 130; a full disk is one line naming the file, exit 1; a damaged
checkpoint is one line naming it, exit 2, and never torch's advice to load with weights_only=False."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ufm
import ufm.backbone.training as training
from ufm.backbone.checkpoint import CHECKPOINT
from ufm.backbone.config import TrainConfig
from ufm.backbone.training import train_backbone
from ufm.cli.train import main
from ufm.output.rundir import RunDirInUse

# as test_training.SMALL: 4 Gaussian classes in R^16, a 2-layer MLP of width 32, 10 batches per epoch
SMALL = ["--dataset", "synthetic", "--classes", "4", "--per-class", "40", "--test-per-class", "10",
         "--input-shape", "16", "--mlp-width", "32", "--mlp-depth", "2", "--batch-size", "16", "--quiet"]
LIB = dict(dataset="synthetic", classes=4, per_class=40, test_per_class=10, input_shape=(16,), mlp_width=32,
           mlp_depth=2, batch_size=16, device="cpu")
REPO = Path(__file__).resolve().parents[3]


def cli(*argv: str) -> int:
    """main(argv), with argparse's SystemExit (parser.error) as its exit status."""
    try:
        return main(list(argv))
    except SystemExit as e:
        return e.code


def one_line(err: str) -> str:
    """The error line of stderr (the only line apart from "run directory: …"), asserting it is one."""
    lines = [line for line in err.strip().splitlines() if not line.startswith("run directory:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def checkpoint_epoch(out: Path) -> int:
    return torch.load(out / CHECKPOINT, weights_only=True)["epoch"]


def leftovers(out: Path) -> list[str]:
    """Temporary files of atomic writes left behind (there must be none)."""
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-epoch run (copied by the tests that change it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([*SMALL, "--epochs", "2", "--out", str(out)]) == 0
    return out


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


# ---- overwrite protection ------------------------------------------------------------------------------------


def test_a_finished_run_is_refused_and_kept(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert cli(*SMALL, "--epochs", "1", "--out", str(out)) == 2
    line = one_line(capsys.readouterr().err)
    assert "already holds a finished run" in line and "--resume" in line and "--overwrite" in line
    assert str(out) in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing replaced, nothing added
    assert checkpoint_epoch(out) == 2


def test_a_started_run_is_refused(finished, tmp_path, capsys):
    """A run killed in its first epochs (config.json, history.csv and a checkpoint; no summary yet)."""
    out = copy_run(finished, tmp_path / "run")
    (out / "summary.json").unlink()
    assert cli(*SMALL, "--epochs", "2", "--out", str(out)) == 2
    assert "already holds a started run" in one_line(capsys.readouterr().err)
    assert checkpoint_epoch(out) == 2 and not (out / "summary.json").exists()


def test_overwrite_replaces_the_run_and_keeps_the_users_files(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path / "run")
    (out / "notes.txt").write_text("mine")
    (out / "comparison.png").write_bytes(b"an old plot")
    (out / "ufm").mkdir()
    (out / "ufm" / "summary.json").write_text("{}")
    assert cli(*SMALL, "--epochs", "3", "--seed", "1", "--out", str(out), "--overwrite") == 0
    assert checkpoint_epoch(out) == 3 and summary_of(out)["epochs"] == 3 and summary_of(out)["config"]["seed"] == 1
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "comparison.png").exists() and not (out / "ufm" / "summary.json").exists()


def test_resume_and_overwrite_together_are_refused(finished, capsys):
    assert cli(*SMALL, "--epochs", "2", "--out", str(finished), "--resume", "--overwrite") == 2
    assert "exclude each other" in one_line(capsys.readouterr().err)


def test_resume_without_checkpoint_refuses_a_run_of_another_tool(tmp_path, capsys):
    """--resume-or-start starts afresh where there is no checkpoint, but not over a `ufm.simulate` run (params.pt)."""
    out = tmp_path / "sim"
    out.mkdir()
    (out / "config.json").write_text('{"K": 4}')
    (out / "params.pt").write_bytes(b"tensors")
    assert cli(*SMALL, "--epochs", "1", "--out", str(out), "--resume-or-start") == 2
    line = one_line(capsys.readouterr().err)
    assert "holds no checkpoint.pt" in line and "not a ufm.train run" in line
    assert (out / "params.pt").read_bytes() == b"tensors"


def test_resume_with_nothing_to_resume_refuses_and_resume_or_start_starts(tmp_path, capsys):
    """--resume into an empty --out (a typo, a lost disk) says so and exits 2, writing nothing; --resume-or-start
    starts the run there, and a second --resume-or-start continues it (nothing left to train: same epochs)."""
    out = tmp_path / "fresh"
    assert cli(*SMALL, "--epochs", "1", "--out", str(out), "--resume") == 2
    line = one_line(capsys.readouterr().err)
    assert "--resume: --out" in line and "holds no checkpoint.pt" in line and "--resume-or-start" in line
    assert not (out / "config.json").exists() and not (out / "summary.json").exists()
    assert cli(*SMALL, "--epochs", "1", "--out", str(out), "--resume-or-start") == 0
    assert checkpoint_epoch(out) == 1 and summary_of(out)["epochs"] == 1
    assert cli(*SMALL, "--epochs", "1", "--out", str(out), "--resume", "--resume-or-start") == 2
    assert "not both" in one_line(capsys.readouterr().err)


def test_resume_with_nothing_to_resume_in_the_library(tmp_path):
    """ufm.train(resume=True) names the argument in Python terms and offers resume_or_start=True."""
    cfg = TrainConfig.from_dict({**LIB, "epochs": 1})
    with pytest.raises(RunDirInUse, match=r"resume=True: out .* holds no checkpoint.pt.*resume_or_start=True"):
        ufm.train(cfg, tmp_path / "empty", progress=False, resume=True)
    with pytest.raises(ValueError, match="resume=True .*needs out"):
        ufm.train(cfg, None, progress=False, resume=True)
    r = ufm.train(cfg, tmp_path / "empty", progress=False, resume_or_start=True)
    assert r.summary["epochs"] == 1 and checkpoint_epoch(tmp_path / "empty") == 1


def test_the_library_refuses_too(finished, tmp_path):
    """ufm.backbone.training.train_backbone (under ufm.train): RunDirInUse unless resume or overwrite."""
    cfg = TrainConfig.from_dict({**LIB, "epochs": 2})
    with pytest.raises(RunDirInUse, match="finished run"):
        train_backbone(cfg, finished, progress=False)
    with pytest.raises(ValueError, match="exclude each other"):
        train_backbone(cfg, finished, progress=False, resume=True, overwrite=True)
    out = copy_run(finished, tmp_path / "run")
    summary, history, _ = train_backbone(TrainConfig.from_dict({**LIB, "epochs": 1}), out, progress=False,
                                         overwrite=True)
    assert summary["epochs"] == 1 and checkpoint_epoch(out) == 1 and len(history) == 2


def test_under_torchrun_every_process_refuses_and_nothing_is_touched(finished, tmp_path):
    """DDP (gloo, 2 CPU processes): the main process judges --out and the other takes its verdict; the refusal is
    printed once, the run ends with status 2 (no process waits for another), no file of the run changes."""
    out = copy_run(finished, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "ufm.train", *SMALL, "--epochs", "3", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert r.returncode != 0 and r.stderr.count("already holds a finished run") == 1, r.stderr[-2000:]
    assert "exitcode  : 2" in r.stderr  # (torchrun may stop the other process before it reports its own 2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_interrupt_while_setting_up(finished, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the data loads: a fresh --out gets a summary saying so; an --overwrite not yet carried out and a
    --resume leave the earlier run exactly as it was."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "setup_run", interrupted)
    fresh = tmp_path / "fresh"
    assert cli(*SMALL, "--epochs", "2", "--out", str(fresh)) == 130
    assert "before training started" in one_line(capsys.readouterr().err)
    assert summary_of(fresh)["status"] == "interrupted" and summary_of(fresh)["epochs"] == 0
    for flag in ("--overwrite", "--resume"):
        out = copy_run(finished, tmp_path / flag.strip("-"))
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        assert cli(*SMALL, "--epochs", "2", "--out", str(out), flag) == 130
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ---- interrupts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_training_writes_an_interrupted_summary_and_exits_130(sig, tmp_path):
    """A real process, signalled once training is under way (its first checkpoint on disk): exit 130, summary.json
    "interrupted", and the checkpoint it names whole (loadable, of that epoch) wherever the signal landed."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ufm.train", *SMALL, "--epochs", "100000", "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "history.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # history.csv is first written right after the epoch-1 checkpoint
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err
    summary = summary_of(out)
    assert summary["status"] == "interrupted"
    assert summary["epochs"] >= summary["checkpoint_epoch"] == checkpoint_epoch(out) >= 1
    assert leftovers(out) == []


def test_an_interrupt_inside_the_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    """torch.save interrupted in epoch 3's save: the epoch-2 checkpoint stays whole, the summary comes anyway and
    says which epoch the checkpoint holds; --resume continues from it to the end."""
    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"half a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert main([*SMALL, "--epochs", "6", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    summary = summary_of(out)
    assert summary["status"] == "interrupted" and summary["epochs"] == 3 and summary["checkpoint_epoch"] == 2
    assert checkpoint_epoch(out) == 2 and leftovers(out) == []
    monkeypatch.setattr(torch, "save", real_save)
    assert main([*SMALL, "--epochs", "6", "--out", str(out), "--resume"]) == 0
    assert summary_of(out)["status"] == "ok" and checkpoint_epoch(out) == 6 == summary_of(out)["checkpoint_epoch"]


def test_an_interrupt_in_the_last_save_comes_after_the_summary(tmp_path, monkeypatch):
    """The last epoch: summary.json is written first, then the checkpoint; interrupting that save rewrites the
    summary as "interrupted" with the checkpoint of the epoch before."""
    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(obj["epoch"])
        assert (out / "summary.json").exists() == (obj["epoch"] == 3)  # only the last save follows the summary
        if obj["epoch"] == 3:
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert main([*SMALL, "--epochs", "3", "--out", str(out)]) == 130
    assert calls == [1, 2, 3]
    summary = summary_of(out)
    assert summary["status"] == "interrupted" and summary["epochs"] == 3 and summary["checkpoint_epoch"] == 2
    assert checkpoint_epoch(out) == 2


def test_an_interrupt_during_a_measurement(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real, calls = training.evaluate, []

    def evaluate(run, epoch):
        calls.append(epoch)
        if epoch == 3:
            raise KeyboardInterrupt
        return real(run, epoch)

    monkeypatch.setattr(training, "evaluate", evaluate)
    assert main([*SMALL, "--epochs", "6", "--out", str(out)]) == 130
    summary = summary_of(out)
    # epoch 3 trained but not measured: the summary's numbers and the checkpoint are those of epoch 2
    assert summary["status"] == "interrupted" and summary["final_epoch"] == 2 and summary["checkpoint_epoch"] == 2
    assert checkpoint_epoch(out) == 2


def test_an_interrupt_during_the_ufm_twin_then_resume_runs_it(tmp_path, monkeypatch, capsys):
    import ufm.api

    out = tmp_path / "run"
    argv = [*SMALL[:-1], "--loss", "mse", "--epochs", "2", "--compare-ufm", "--ufm-steps", "50", "--out", str(out)]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ufm.api, "run", interrupted)
        assert main(argv) == 130
    printed = capsys.readouterr()
    assert "during the UFM twin" in printed.err and "Traceback" not in printed.err
    assert "UFM twin (" in printed.out and "interrupted, no comparison" in printed.out  # the table, without twin
    summary = summary_of(out)
    assert summary["status"] == "interrupted" and "twin" in summary["interrupted_during"]
    assert summary["epochs"] == 2 == checkpoint_epoch(out)
    assert main([*argv, "--resume"]) == 0
    summary = summary_of(out)
    assert summary["status"] == "ok" and summary["ufm"]["steps"] == 50 and summary["comparison"]["nc1"]["ufm"] > 0


# ---- a full disk ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["ENOSPC", "torch's unexpected pos"])
def test_a_full_disk_during_the_checkpoint_is_one_line_naming_it(failure, tmp_path, monkeypatch, capsys):
    """Epoch 2's save fails: exit 1, one line naming checkpoint.pt; the epoch-1 checkpoint and a summary (status
    "error", saying which file) stay; no temporary file is left."""
    out = tmp_path / "run"
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if obj["epoch"] == 2:
            f.write(b"part of it")
            if failure == "ENOSPC":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 448 vs 342")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert main([*SMALL, "--epochs", "4", "--out", str(out)]) == 1
    line = one_line(capsys.readouterr().err)
    assert str(out / CHECKPOINT) in line and line.startswith("python -m ufm.train: error: cannot write")
    assert ("no space left on device" if failure == "ENOSPC" else "disk full") in line
    assert checkpoint_epoch(out) == 1 and leftovers(out) == []
    summary = summary_of(out)
    assert summary["status"] == "error" and summary["checkpoint_epoch"] == 1 and CHECKPOINT in summary["error"]


def test_a_full_disk_at_the_first_write_names_that_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    assert main([*SMALL, "--epochs", "2", "--out", str(out)]) == 1
    line = one_line(capsys.readouterr().err)
    assert f"cannot write {out / 'config.json'}: no space left on device" in line
    assert sorted(p.name for p in out.iterdir()) == []


# ---- damaged checkpoints on --resume ---------------------------------------------------------------------------


def _edited(**changes):
    def edit(state: dict) -> dict:
        for key, change in changes.items():
            state[key] = change(state[key]) if callable(change) else change
        return state
    return edit


def _reshaped_first_weight(model: dict) -> dict:
    name = next(k for k in model if k.endswith("weight"))
    return {**model, name: torch.zeros(5, 5)}


def _bad_momentum(opt: dict) -> dict:
    for buf in opt["state"].values():
        buf["momentum_buffer"] = torch.zeros(7)
    return opt


DAMAGED = {
    "empty file": (b"", "is empty"),
    "random bytes": (random.Random(0).randbytes(4096), "cannot read the checkpoint"),
    "a foreign pickle (numpy array)": ({"format": 1, "x": np.arange(3)}, "cannot read the checkpoint"),
    "a list": ([1, 2], "not a ufm.train checkpoint"),
    "epoch 10**9": (_edited(epoch=10**9), "lies outside 0..2"),
    "epoch -1": (_edited(epoch=-1), "is not an integer >= 0"),
    "epoch 1.5": (_edited(epoch=1.5), "is not an integer >= 0"),
    "a weight of another shape": (_edited(model=_reshaped_first_weight), "does not match the model"),
    "a momentum buffer of another shape": (_edited(optimizer=_bad_momentum), "does not match the optimizer"),
    "a history of numbers": (_edited(history=[1, 2]), "history row"),
    "a config that is a list": (_edited(config=[1]), "config is not a mapping"),
    "negative training time": (_edited(train_seconds=-1.0), "train_seconds"),
}


@pytest.mark.parametrize("content, message", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_checkpoint_is_one_line_naming_it_and_never_unsafe_advice(content, message, finished, tmp_path,
                                                                            capsys):
    out = copy_run(finished, tmp_path / "run")
    ckpt = out / CHECKPOINT
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != CHECKPOINT}
    if isinstance(content, bytes):
        ckpt.write_bytes(content)
    elif callable(content):
        torch.save(content(torch.load(ckpt, weights_only=True)), ckpt)
    else:
        torch.save(content, ckpt)
    assert cli(*SMALL, "--epochs", "2", "--out", str(out), "--resume") == 2
    err = capsys.readouterr().err
    line = one_line(err)
    assert message in line and str(ckpt) in line, line
    assert "weights_only" not in err.lower() and "weights only" not in err.lower()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != CHECKPOINT} == before  # nothing rewritten


# ---- the UFM twin announces itself -----------------------------------------------------------------------------


def test_the_twin_prints_its_size_and_an_estimate_then_a_progress_bar(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*SMALL[:-1], "--loss", "mse", "--epochs", "2", "--compare-ufm", "--ufm-steps", "40", "--out", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("UFM twin:"))
    assert line.startswith("UFM twin: K=4, N=160, d=32, 40 steps, about ") and "estimate" in line
    assert "40/40" in err  # the twin's bar reached its last step


def test_the_estimate_leaves_the_twin_unchanged():
    """estimate_twin steps its own copy of the parameters: the twin run after it ends where one without it does."""
    from ufm.api import run
    from ufm.backbone.twin import estimate_twin, twin_config
    from ufm.problem import resolve

    sim = twin_config(TrainConfig.from_dict({**LIB, "loss": "mse", "ufm_steps": 30}), [40] * 4)
    plain = run(sim, progress=False).final
    problem = resolve(sim)
    est = estimate_twin(problem)
    assert (est.K, est.N, est.d, est.steps) == (4, 160, 32, 30) and 0 < est.seconds < float("inf")
    assert run(problem, progress=False).final == plain


def test_a_network_that_cannot_fit_is_refused_before_it_is_built(capsys, tmp_path):
    """--mlp-width 1000000000 used to end in an out-of-memory traceback: the network is counted on the meta device
    (nothing allocated) and refused with one line."""
    from ufm.cli.train import main

    try:
        code = main(["--dataset", "synthetic", "--mlp-width", "1000000000", "--quiet", "--out", str(tmp_path / "run")])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "GiB" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
