"""analysis.measure (`python -m analysis.measure`): the NC metrics of saved features and of checkpoints equal
nc_metrics on the same arrays (float64, 1e-10), streamed from memory maps in small blocks; bad input is one line on
stderr and exit status 2."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.measure import (
    _auroc,
    build_parser,
    main,
    measure_checkpoints,
    measure_files,
    open_features,
)
from analysis.metrics import METRIC_KEYS, nc_metrics
from analysis.ood import nc5
from tests.analysis import measure_factories as factories
from tests.analysis.test_tracking import gaussian_classes

TOL = 1e-10
REPO = Path(__file__).resolve().parents[2]


def data(K=4, d=6, counts=(20, 14, 9, 7), seed=0):
    """tests/analysis/test_tracking.gaussian_classes (shuffled float64 Gaussian classes, a classifier near the means,
    a small bias), and OOD features."""
    H, y, W, b = gaussian_classes(K, d, counts, seed)
    ood = 1.5 * np.random.default_rng([seed, 1]).normal(size=(15, d))
    return H, y, W, b, ood


def assert_equal_metrics(ours, ref, tol=TOL):
    """Same NC keys, NaN exactly where ref is NaN, the others within tol (relative to max(1, |ref|))."""
    assert set(METRIC_KEYS) <= set(ours)
    for key in METRIC_KEYS:
        if math.isnan(ref[key]):
            assert math.isnan(ours[key]), key
        else:
            assert abs(ours[key] - ref[key]) <= tol * max(1.0, abs(ref[key])), (key, ours[key], ref[key])


def run(argv, capsys):
    """main(argv): (exit status, stdout, stderr); a usage error exits through argparse (SystemExit)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def rows_of(path):
    return json.loads(Path(path).read_text())["rows"]


def as_floats(metrics):
    return {k: math.nan if v is None else v for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------ files of features


def test_npz_equals_nc_metrics(tmp_path, capsys):
    H, y, W, b, _ = data()
    np.savez(tmp_path / "f.npz", features=H, labels=y, W=W, b=b, epoch=np.array(3))
    rc, out, err = run([tmp_path / "f.npz", "--json", tmp_path / "nc.json"], capsys)
    assert rc == 0, err
    [row] = rows_of(tmp_path / "nc.json")
    assert (row["N"], row["K"], row["d"], row["source"]) == (50, 4, 6, str(tmp_path / "f.npz"))
    assert_equal_metrics(as_floats(row["metrics"]), nc_metrics(H, y, W, b))
    assert "nc1" in out.splitlines()[0] and str(tmp_path / "f.npz") in out.splitlines()[1]
    assert sorted(os.listdir(tmp_path)) == ["f.npz", "nc.json"]  # the atomic write left no temporary file


def test_pt_equals_nc_metrics_with_the_aliases(tmp_path, capsys):
    H, y, W, b, _ = data(seed=1)
    torch.save({"H": torch.from_numpy(H), "y": torch.from_numpy(y), "W": torch.from_numpy(W),
                "b": torch.from_numpy(b), "note": "epoch 3"}, tmp_path / "f.pt")
    rc, _, err = run([tmp_path / "f.pt", "--json", tmp_path / "nc.json"], capsys)
    assert rc == 0, err
    assert_equal_metrics(as_floats(rows_of(tmp_path / "nc.json")[0]["metrics"]), nc_metrics(H, y, W, b))


def test_npy_pair_in_one_folder_and_labels_flag(tmp_path, capsys):
    H, y, W, b, _ = data(seed=2)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name, a in (("features", H), ("labels", y), ("W", W), ("b", b)):
        np.save(run_dir / f"{name}.npy", a)
    files = [run_dir / f"{n}.npy" for n in ("features", "labels", "W", "b")]
    rc, _, err = run([*files, "--json", tmp_path / "a.json"], capsys)
    assert rc == 0, err
    assert_equal_metrics(as_floats(rows_of(tmp_path / "a.json")[0]["metrics"]), nc_metrics(H, y, W, b))
    # features saved at two "epochs" under other names, the labels given once for both: one row each
    np.save(tmp_path / "ep1.npy", H)
    np.save(tmp_path / "ep2.npy", 2 * H + 1)
    rc, out, err = run([tmp_path / "ep1.npy", tmp_path / "ep2.npy", "--labels", run_dir / "labels.npy",
                        "--json", tmp_path / "b.json"], capsys)
    assert rc == 0, err
    rows = rows_of(tmp_path / "b.json")
    assert [r["source"] for r in rows] == [str(tmp_path / "ep1.npy"), str(tmp_path / "ep2.npy")]
    assert_equal_metrics(as_floats(rows[0]["metrics"]), nc_metrics(H, y))
    assert_equal_metrics(as_floats(rows[1]["metrics"]), nc_metrics(2 * H + 1, y))
    assert "nc3, nc4, accuracy" in err  # the note: no W


def test_streaming_from_memory_maps_equals_in_memory(tmp_path, capsys):
    H, y, W, b, _ = data(K=5, d=7, counts=(13, 11, 9, 7, 3), seed=3)
    np.save(tmp_path / "features.npy", H.astype(np.float32))
    np.save(tmp_path / "labels.npy", y.astype(np.int32))
    np.savez(tmp_path / "stored.npz", features=H, labels=y, W=W, b=b)
    np.savez_compressed(tmp_path / "packed.npz", features=H, labels=y, W=W, b=b)
    [npy] = open_features([tmp_path / "features.npy", tmp_path / "labels.npy"])
    [stored] = open_features([tmp_path / "stored.npz"])
    [packed] = open_features([tmp_path / "packed.npz"])
    assert isinstance(npy.features, np.memmap) and isinstance(npy.labels, np.memmap)
    assert isinstance(stored.features, np.memmap) and isinstance(stored.labels, np.memmap)
    assert not isinstance(packed.features, np.memmap)  # a compressed member is read whole
    assert np.array_equal(stored.features, H) and np.array_equal(stored.labels, y)
    ref = nc_metrics(H, y, W, b)
    for path in ("stored.npz", "packed.npz"):
        for rows in (7, 1, 1000):
            [row] = measure_files([tmp_path / path], block_rows=rows)
            assert_equal_metrics(row.metrics, ref)
    # float32 features: the blocks equal one block of all rows (the same streaming arithmetic) and nc_metrics
    [small] = measure_files([tmp_path / "features.npy", tmp_path / "labels.npy"], block_rows=7)
    [whole] = measure_files([tmp_path / "features.npy", tmp_path / "labels.npy"], block_rows=10**6)
    assert_equal_metrics(small.metrics, whole.metrics, tol=1e-5)
    assert_equal_metrics(small.metrics, nc_metrics(torch.from_numpy(H.astype(np.float32)), y), tol=1e-5)
    rc, _, err = run([tmp_path / "stored.npz", "--block-rows", "7", "--json", tmp_path / "nc.json"], capsys)
    assert rc == 0, err
    assert_equal_metrics(as_floats(rows_of(tmp_path / "nc.json")[0]["metrics"]), ref)


def test_concat_and_options(tmp_path, capsys):
    H, y, W, b, _ = data(seed=4)
    np.savez(tmp_path / "a.npz", features=H[:30], labels=y[:30], W=W, b=b)
    np.savez(tmp_path / "b.npz", features=H[30:], labels=y[30:], W=W, b=b)
    rc, out, err = run([tmp_path / "a.npz", tmp_path / "b.npz", "--concat", "--global-mean", "classes",
                        "--no-pairwise", "--side", "features", "--K", "4", "--json", tmp_path / "nc.json"], capsys)
    assert rc == 0, err
    [row] = rows_of(tmp_path / "nc.json")
    assert row["N"] == 50 and row["source"] == f"{tmp_path / 'a.npz'} + {tmp_path / 'b.npz'}"
    assert_equal_metrics(as_floats(row["metrics"]),
                         nc_metrics(H, y, W, b, global_mean="classes", pairwise=False, side="features"))
    assert row["metrics"]["cdnv"] is None  # --no-pairwise: NaN, written as null
    # a class absent: excluded on request, and counted
    keep = y != 2
    np.savez(tmp_path / "gap.npz", features=H[keep], labels=y[keep], W=W, b=b)
    [row] = measure_files([tmp_path / "gap.npz"], missing="exclude")
    assert row.metrics["excluded_classes"] == 1.0 and row.K == 4
    assert_equal_metrics(row.metrics, nc_metrics(H[keep], y[keep], W, b, K=4, missing="exclude"))


def test_ood_auroc(tmp_path, capsys):
    H, y, W, b, ood = data(seed=5)
    np.savez(tmp_path / "f.npz", features=H, labels=y, W=W, b=b, ood=ood)
    rc, out, err = run([tmp_path / "f.npz", "--block-rows", "6", "--json", tmp_path / "nc.json"], capsys)
    assert rc == 0, err
    [row] = rows_of(tmp_path / "nc.json")
    assert row["N_ood"] == 15 and "ood_auroc_nearest_mean" in out
    assert_equal_metrics(as_floats(row["metrics"]), nc_metrics(H, y, W, b))
    means = np.stack([H[y == k].mean(0) for k in range(4)])

    def distance(X):
        return np.sqrt(((X[:, None, :] - means[None]) ** 2).sum(-1)).min(1)

    def brute_auroc(inside, outside):  # every pair, ties half
        diff = inside[:, None] - outside[None, :]
        return float(((diff > 0) + 0.5 * (diff == 0)).mean())

    m = row["metrics"]
    assert abs(m["ood_auroc_nearest_mean"] - brute_auroc(-distance(H), -distance(ood))) < 1e-12
    assert abs(m["ood_auroc_max_logit"] - brute_auroc((H @ W.T + b).max(1), (ood @ W.T + b).max(1))) < 1e-12
    assert abs(m["ood_distance_ratio"] - distance(ood).mean() / distance(H).mean()) < 1e-10
    assert abs(m["nc5"] - nc5(means, ood)) < 1e-12 and m["nc5"] > 0
    # the midranks count ties half
    assert _auroc(torch.tensor([1.0, 2.0, 2.0]), torch.tensor([2.0, 0.0])) == brute_auroc(
        np.array([1.0, 2.0, 2.0]), np.array([2.0, 0.0]))


# ------------------------------------------------------------------------------------------ checkpoints


def save_checkpoints(folder):
    """Three checkpoints of the factory's network in three layouts (ufm.train's, a bare state dict, a
    "state_dict" key), named so that a plain string sort would put epoch_10 first."""
    folder.mkdir()
    models = {}
    for epoch, layout in ((1, "ufm"), (2, "bare"), (10, "lightning")):
        torch.manual_seed(epoch)
        model = factories.make_model()
        sd = model.state_dict()
        state = {"ufm": {"format": 1, "epoch": epoch, "model": sd, "optimizer": {}},
                 "bare": sd, "lightning": {"epoch": epoch, "state_dict": sd}}[layout]
        torch.save(state, folder / f"epoch_{epoch}.pt")
        models[epoch] = model
    (folder / "notes.txt").write_text("not a checkpoint")
    return models


def hooked_reference(model, ood=False):
    x, y = factories.inputs()
    with torch.no_grad():
        H = model.act(model.body(x))
        ref = nc_metrics(H, y, model.fc.weight, model.fc.bias)
        if ood:
            return ref, H, model.act(model.body(factories.ood_inputs()))
    return ref


def test_checkpoint_folder_rows_equal_nc_metrics_of_the_hooked_features(tmp_path, capsys):
    models = save_checkpoints(tmp_path / "ckpts")
    spec = "tests.analysis.measure_factories"
    rc, out, err = run([tmp_path / "ckpts", "--model", f"{spec}:make_model", "--data", f"{spec}:loader",
                        "--layer", "fc", "--json", tmp_path / "nc.json"], capsys)
    assert rc == 0, err
    rows = rows_of(tmp_path / "nc.json")
    assert [Path(r["source"]).name for r in rows] == ["epoch_1.pt", "epoch_2.pt", "epoch_10.pt"]
    assert [r["epoch"] for r in rows] == [1, None, 10]
    assert out.splitlines()[0].split()[:2] == ["source", "epoch"]
    for row, epoch in zip(rows, (1, 2, 10), strict=True):
        assert (row["N"], row["K"], row["d"]) == (45, 3, 6)
        assert_equal_metrics(as_floats(row["metrics"]), hooked_reference(models[epoch]))
    # the library, with OOD inputs and a factory given as a file path
    factory_file = Path(factories.__file__)
    rows = measure_checkpoints([tmp_path / "ckpts" / "epoch_10.pt"], f"{factory_file}:make_model",
                               factories.loader, "fc", ood_data=factories.ood_loader)
    ref, H, H_ood = hooked_reference(models[10], ood=True)
    assert_equal_metrics(rows[0].metrics, ref)
    np.savez(tmp_path / "hooked.npz", features=H.numpy(), labels=factories.inputs()[1].numpy(),
             W=models[10].fc.weight.detach().numpy(), b=models[10].fc.bias.detach().numpy(), ood=H_ood.numpy())
    [saved] = measure_files([tmp_path / "hooked.npz"])
    assert rows[0].N_ood == saved.N_ood == 20
    for key in ("nc5", "ood_auroc_nearest_mean", "ood_auroc_max_logit", "ood_distance_ratio"):
        assert abs(rows[0].metrics[key] - saved.metrics[key]) < 1e-10, key


# ------------------------------------------------------------------------------------------ bad input


def bad_files(tmp_path):
    H, y, W, b, _ = data()
    np.savez(tmp_path / "ok.npz", features=H, labels=y, W=W, b=b)
    np.savez(tmp_path / "short.npz", features=H, labels=y[:-1])
    np.savez(tmp_path / "float_labels.npz", features=H, labels=y.astype(float))
    np.savez(tmp_path / "no_features.npz", feats=H, labels=y)
    np.savez(tmp_path / "flat.npz", features=H[:, 0], labels=y)
    np.savez(tmp_path / "wrong_W.npz", features=H, labels=y, W=W[:, :3])
    np.savez(tmp_path / "few_W.npz", features=H, labels=y, W=W[:3])
    np.savez(tmp_path / "negative.npz", features=H, labels=y - 1)
    keep = y != 1
    np.savez(tmp_path / "gap.npz", features=H[keep], labels=y[keep])
    H_nan = H.copy()
    H_nan[3, 2] = np.nan
    np.savez(tmp_path / "nan.npz", features=H_nan, labels=y)
    np.savez(tmp_path / "objects.npz", features=np.array([{"a": 1}] * 3, dtype=object), labels=y[:3])
    torch.save({"features": H, "labels": y}, tmp_path / "numpy_inside.pt")  # numpy arrays: not weights-only
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1}, tmp_path / "checkpoint.pt")
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04 torn")
    (tmp_path / "notes.txt").write_text("hello")
    np.save(tmp_path / "labels.npy", y)
    (tmp_path / "ckpts").mkdir()
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "ckpts" / "epoch_1.pt")
    return tmp_path


SPEC = "tests.analysis.measure_factories"
BAD = {
    "missing file": (["nope.npz"], "no such file"),
    "labels length": (["short.npz"], "50 feature rows but 49 labels"),
    "float labels": (["float_labels.npz"], "must be integers"),
    "no features key": (["no_features.npz"], "has no features"),
    "1-D features": (["flat.npz"], "must be 2-D"),
    "W of other d": (["wrong_W.npz"], "W of"),
    "K beyond W": (["few_W.npz"], "W has 3 rows"),
    "K flag vs W": (["ok.npz", "--K", "5"], "K=5 but W has 4 rows"),
    "K flag vs labels": (["gap.npz", "--K", "2"], "beyond K=2"),
    "negative labels": (["negative.npz"], "0..K-1"),
    "missing class": (["gap.npz"], "--missing exclude"),
    "non-finite": (["nan.npz"], "non-finite"),
    "object arrays": (["objects.npz"], "Python objects"),
    "numpy in .pt": (["numpy_inside.pt"], "weights_only=True"),
    "a checkpoint as features": (["checkpoint.pt"], "--model"),
    "torn npz": (["torn.npz"], "cannot read"),
    "unknown suffix": (["notes.txt"], "not a file of features"),
    "lonely companion": (["labels.npy"], "has no features .npy"),
    "labels twice": (["ok.npz", "--labels", "labels.npy"], "second time"),
    "folder without model": (["ckpts"], "give --model"),
    "block rows 0": (["ok.npz", "--block-rows", "0"], "--block-rows"),
    "unknown column": (["ok.npz", "--columns", "nc1,nc9"], "nc9"),
    "json into missing folder": (["ok.npz", "--json", "no/such/dir/x.json"], "no such folder"),
    "model without data": (["ckpts", "--model", f"{SPEC}:make_model"], "--data"),
    "unimportable model": (["ckpts", "--model", "no_such_pkg.models:make", "--data", f"{SPEC}:loader", "--layer",
                            "fc"], "cannot import no_such_pkg.models"),
    "not a module": (["ckpts", "--model", f"{SPEC}:not_a_module", "--data", f"{SPEC}:loader", "--layer", "fc"],
                     "must return a torch.nn.Module"),
    "no such layer": (["ckpts", "--model", f"{SPEC}:make_model", "--data", f"{SPEC}:loader", "--layer", "head"],
                      "no submodule 'head'"),
    "checkpoint mismatch": (["ckpts", "--model", f"{SPEC}:make_model", "--data", f"{SPEC}:loader", "--layer",
                             "fc"], "does not match the model"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(bad_files(tmp_path))
    argv, words = BAD[case]
    rc, out, err = run(argv, capsys)
    assert rc == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m analysis.measure: error: "), err
    assert "Traceback" not in err
    assert words in lines[0], lines[0]
    assert "weights_only=False" not in lines[0]


def test_broken_data_factory_is_one_line(tmp_path, capsys):
    save_checkpoints(tmp_path / "ckpts")
    rc, out, err = run([tmp_path / "ckpts", "--model", f"{SPEC}:make_model", "--data", f"{SPEC}:broken_loader",
                        "--layer", "fc"], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert "data() failed (RuntimeError: the disk is gone)" in err


def test_help_explains_every_flag_with_an_example():
    text = build_parser().format_help()
    flags = [s for a in build_parser()._actions for s in a.option_strings]
    assert all(f in text for f in flags) and len(flags) >= 20
    assert all(a.help for a in build_parser()._actions)
    assert "python -m analysis.measure runs/ckpts/ --model mypkg.models:make_model" in text
    assert "features|H" in text and "labels|y" in text


def test_the_module_runs_as_a_program(tmp_path):
    H, y, W, b, _ = data()
    np.savez(tmp_path / "f.npz", features=H, labels=y, W=W, b=b)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([sys.executable, "-m", "analysis.measure", str(tmp_path / "f.npz"), "--columns", "nc1,nc4"],
                        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    header, line = ok.stdout.splitlines()
    assert header.split() == ["source", "N", "K", "d", "nc1", "nc4"]
    assert float(line.split()[4]) == pytest.approx(nc_metrics(H, y, W, b)["nc1"], rel=1e-5)
    bad = subprocess.run([sys.executable, "-m", "analysis.measure", "missing.npz"], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stdout == ""


def test_state_key_and_a_data_parallel_prefix(tmp_path, capsys):
    torch.manual_seed(7)
    model = factories.make_model()
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}  # saved from DDP: names start with module.
    (tmp_path / "ckpts").mkdir()
    torch.save({"run": {"weights": wrapped}, "epoch": 4}, tmp_path / "ckpts" / "last.ckpt")
    argv = [tmp_path / "ckpts", "--model", f"{SPEC}:make_model", "--data", f"{SPEC}:loader", "--layer", "fc",
            "--json", tmp_path / "nc.json"]
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "holds no state dict" in err and "--state-key" in err
    rc, _, err = run([*argv, "--state-key", "run.weights"], capsys)
    assert rc == 0, err
    [row] = rows_of(tmp_path / "nc.json")
    assert row["epoch"] == 4
    assert_equal_metrics(as_floats(row["metrics"]), hooked_reference(model))
