"""TensorBoard output (`tensorboard=` in ufm.run, ufm.run_batch and ufm.train; --tensorboard on ufm.simulate and
ufm.train): the event files, read back with TensorBoard's own reader, hold every numeric column of history.csv at
its step (float32, as TensorBoard stores scalars), then the summary's final/* and gap/*; a missing package is one
clear error."""

import csv
import math
import sys

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import ufm  # noqa: E402
from ufm import SimConfig  # noqa: E402
from ufm.api import train  # noqa: E402 - not ufm.train: importing the module ufm.train rebinds it
from ufm.backbone.config import TrainConfig  # noqa: E402
from ufm.output.rundir import read_history  # noqa: E402

CFG = dict(K=3, n=4, d=5, loss="mse", wd=1e-2, steps=50, certificate=False, dtype="float64")
TRAIN = dict(dataset="synthetic", classes=3, per_class=8, test_per_class=4, mlp_width=8, mlp_depth=1, epochs=2,
             batch_size=8, device="cpu", evals_per_decade=10)
TRAIN_FLAGS = ["--dataset", "synthetic", "--classes", "3", "--per-class", "8", "--test-per-class", "4",
               "--mlp-width", "8", "--mlp-depth", "1", "--epochs", "2", "--batch-size", "8", "--device", "cpu"]


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """tag → [(step, value)] of every scalar in the event files of `logdir` (TensorBoard's reader, nothing dropped)."""
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def same(a: float, b: float) -> bool:
    """b (a float64 from history.csv or summary.json) as TensorBoard stores it (float32) equals a."""
    b32 = float(np.float32(b))
    return (math.isnan(a) and math.isnan(b32)) or a == b32


def assert_history(logdir, run_dir, step_key: str) -> dict[str, list[tuple[int, float]]]:
    """Every column of history.csv but the step is a scalar with one value per row, equal to the column."""
    with (run_dir / "history.csv").open(encoding="utf-8") as f:
        columns = next(csv.reader(f))
    history = read_history(run_dir)
    logged = scalars(logdir)
    steps = [int(r[step_key]) for r in history]
    assert len(history) >= 2
    for column in columns:
        if column == step_key:
            assert column not in logged  # the step is the x axis, not a scalar
            continue
        assert [s for s, _ in logged[column]] == steps, column
        assert all(same(v, r[column]) for (_, v), r in zip(logged[column], history, strict=True)), column
    return logged


def assert_summary(logged, summary: dict, sections: tuple[str, ...], step: int) -> None:
    for section in sections:
        numbers = {k: v for k, v in summary[section].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert numbers, section
        for key, value in numbers.items():
            assert len(logged[f"{section}/{key}"]) == 1, key
            (s, v), = logged[f"{section}/{key}"]
            assert s == step and same(v, value), (section, key)


def test_a_library_run_logs_its_history_and_summary(tmp_path):
    r = ufm.run(SimConfig(**CFG), tmp_path / "run", progress=False, tensorboard=tmp_path / "tb")
    logged = assert_history(tmp_path / "tb", tmp_path / "run", "step")
    assert_summary(logged, r.summary, ("final", "gap", "rel_gap"), r.history[-1]["step"])
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1


def test_run_batch_writes_one_subdirectory_per_run(tmp_path):
    cfgs = [SimConfig(**{**CFG, "wd": w}) for w in (1e-3, 1e-2)]
    outs = [tmp_path / "a", tmp_path / "b"]
    results = ufm.run_batch(cfgs, outs, tensorboard=tmp_path / "tb")
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["0", "1"]
    for i, (r, out) in enumerate(zip(results, outs, strict=True)):
        logged = assert_history(tmp_path / "tb" / str(i), out, "step")
        assert_summary(logged, r.summary, ("final",), r.history[-1]["step"])
    # a list gives each run its own directory; a list of another length is refused
    ufm.run_batch(cfgs, tensorboard=[tmp_path / "x", tmp_path / "y"])
    assert {p.name for p in tmp_path.iterdir()} >= {"x", "y"}
    with pytest.raises(ValueError, match="2 configurations but 1 tensorboard directories"):
        ufm.run_batch(cfgs, tensorboard=[tmp_path / "x"])


def test_the_simulate_command_line_logs_what_history_csv_holds(tmp_path, capsys):
    from ufm.cli.simulate import main

    flags = ["--K", "3", "--n", "4", "--d", "5", "--loss", "mse", "--wd", "1e-2", "--steps", "50", "--no-certificate",
             "--dtype", "float64", "--quiet", "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb")]
    assert main(flags) == 0
    logged = assert_history(tmp_path / "tb", tmp_path / "run", "step")
    import json

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert_summary(logged, summary, ("final", "gap"), read_history(tmp_path / "run")[-1]["step"])


def test_an_interrupted_run_keeps_its_rows_and_closes_the_file(tmp_path, monkeypatch):
    """Ctrl-C in the middle of the loop: the rows measured before it and the summary of status "interrupted" are
    in the event file, which is closed."""
    import ufm.fit.loop as loop
    from ufm.output.tensorboard import ScalarLog

    real, calls = loop.measure, []

    def measure(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    closed = []
    monkeypatch.setattr(loop, "measure", measure)
    monkeypatch.setattr(ScalarLog, "close", lambda self, close=ScalarLog.close: (closed.append(1), close(self)))
    r = ufm.run(SimConfig(**CFG), tmp_path / "run", progress=False, tensorboard=tmp_path / "tb")
    assert r.status == "interrupted" and len(r.history) == 3 and closed
    logged = assert_history(tmp_path / "tb", tmp_path / "run", "step")
    assert_summary(logged, r.summary, ("final",), r.history[-1]["step"])


def test_a_library_training_run_logs_each_epoch(tmp_path):
    r = train(TrainConfig(**TRAIN), tmp_path / "run", progress=False, tensorboard=tmp_path / "tb")
    assert [row["epoch"] for row in r.history] == [0, 1, 2]
    logged = assert_history(tmp_path / "tb", tmp_path / "run", "epoch")
    assert "test_nc1" in logged and "lr" in logged
    assert_summary(logged, r.summary, ("final", "test"), 2)


def test_the_train_command_line_logs_each_epoch(tmp_path):
    from ufm.cli.train import main

    flags = [*TRAIN_FLAGS, "--quiet", "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb")]
    assert main(flags) == 0
    assert_history(tmp_path / "tb", tmp_path / "run", "epoch")


def test_without_the_package_the_library_and_the_command_lines_say_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as where it is not installed
    for call in (lambda: ufm.run(SimConfig(**CFG), tensorboard=tmp_path / "tb"),
                 lambda: ufm.run_batch([SimConfig(**CFG)], tensorboard=tmp_path / "tb"),
                 lambda: train(TrainConfig(**TRAIN), tensorboard=tmp_path / "tb")):
        with pytest.raises(ImportError, match=r"^tensorboard= needs the tensorboard package.*pip install 'ufm\[tens"):
            call()
    assert not (tmp_path / "tb").exists()
    from ufm.cli.simulate import main as simulate
    from ufm.cli.train import main as train_cli

    for main, flags in ((simulate, ["--K", "3", "--steps", "5"]), (train_cli, TRAIN_FLAGS)):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main([*flags, "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1
        assert "--tensorboard needs the tensorboard package" in err and "pip install 'ufm[tensorboard]'" in err


def test_a_bad_tensorboard_argument_is_named(tmp_path):
    with pytest.raises(TypeError, match="^tensorboard must be None or a directory"):
        ufm.run(SimConfig(**CFG), tensorboard=3)
    with pytest.raises(ValueError, match="^tensorboard must name a directory"):
        ufm.run(SimConfig(**CFG), tensorboard=" ")
    with pytest.raises(TypeError, match=r"^tensorboard\[1\] must be None or a directory"):
        ufm.run_batch([SimConfig(**CFG)] * 2, tensorboard=[tmp_path, 5])
    with pytest.raises(TypeError, match="^tensorboard must be None or a directory"):
        train(TrainConfig(**TRAIN), tensorboard=1.5)


def test_an_unwritable_tensorboard_directory_is_one_line(tmp_path, capsys):
    from ufm.cli.simulate import main

    with pytest.raises(SystemExit) as e:
        main(["--K", "3", "--steps", "5", "--out", str(tmp_path / "run"), "--tensorboard", "/proc/ufm-tb"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("python -m ufm.simulate: error: --tensorboard /proc/ufm-tb: cannot write")
