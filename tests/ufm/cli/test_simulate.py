"""`python -m ufm.simulate`: bad input is one line on stderr with exit status 2 (DESIGN §4)."""

import json
import subprocess
import sys

import pytest
import torch

from ufm.cli.simulate import main

BAD = {
    "K < 2": ["--K", "1"],
    "n < 1": ["--n", "0"],
    "d < 1": ["--d", "0"],
    "negative wd": ["--wd", "-1e-4"],
    "negative wd-W": ["--wd-W", "-1"],
    "negative wd-b": ["--wd-b", "-0.5"],
    "nan wd": ["--wd", "nan"],
    "unknown loss": ["--loss", "hinge"],
    "non-numeric K": ["--K", "ten"],
    "non-numeric lr": ["--lr", "fast"],
    "zero lr": ["--lr", "0"],
    "float K": ["--K", "2.5"],
    "malformed counts": ["--counts", "50,x,10"],
    "empty count": ["--counts", "50,,10"],
    "one-class counts": ["--counts", "50"],
    "zero count": ["--counts", "50,0,10"],
    "K disagrees with counts": ["--K", "4", "--counts", "5,5,5"],
    "unknown optimizer": ["--optimizer", "newton"],
    "unknown dtype": ["--dtype", "float16"],
    "smoothing out of range": ["--loss", "ls", "--smoothing", "1.0"],
    "batch size with gd": ["--batch-size", "10"],
    "unknown flag": ["--frobnicate"],
    "negative seed": ["--seed", "-1"],
    "seed beyond 64 bits": ["--seed", "99999999999999999999999"],
    "unwritable out": ["--out", "/proc/ufm-run"],
    "empty out": ["--out", ""],
    "hxe without a tree": ["--loss", "hxe"],
    "unknown tree": ["--hierarchy", "nosuchtree"],
    "tree disagrees with K": ["--K", "10", "--hierarchy", "cifar100"],
    "malformed balanced tree": ["--hierarchy", "balanced:2,,3"],
    "non-PSD HAFrame": ["--loss", "haframe", "--hierarchy", "balanced:2,5", "--s-min", "-0.9"],
    "HAFrame with a bias": ["--loss", "haframe", "--hierarchy", "balanced:2,5", "--bias"],
    "HAFrame alpha above 1": ["--loss", "haframe", "--hierarchy", "balanced:2,5", "--alpha", "1.5"],
    "negative alpha": ["--loss", "hxe", "--hierarchy", "balanced:2,5", "--alpha", "-1"],
    "zero beta": ["--loss", "soft", "--hierarchy", "balanced:2,5", "--beta", "0"],
    "HAFrame alpha 1 (no minimizer)": ["--loss", "haframe", "--hierarchy", "balanced:2,5", "--alpha", "1"],
    "alpha with CE": ["--loss", "ce", "--hierarchy", "balanced:2,5", "--alpha", "0.3"],
    "non-PSD reference frame under CE": ["--loss", "ce", "--hierarchy", "balanced:2,3", "--s-min", "-5"],
    "gamma too small": ["--loss", "ce", "--hierarchy", "balanced:2,3", "--gamma", "1e-300"],
    "huge balanced tree": ["--hierarchy", "balanced:99999999"],
    "HUG with weight decay": ["--loss", "hug", "--wd", "1e-3"],
    "HUG with a bias": ["--loss", "hug", "--bias"],
    "unknown HUG measure": ["--loss", "hug", "--hug-measure", "volume"],
    "zero HUG sharpness": ["--loss", "hug", "--hug-sharpness", "0"],
    "imbalance without minority": ["--imbalance", "10"],
    "minority without imbalance": ["--minority", "3"],
    "imbalance with counts": ["--imbalance", "10", "--minority", "1", "--counts", "5,5,5"],
    "imbalance below 1": ["--imbalance", "0.5", "--minority", "3"],
    "minority = K": ["--K", "4", "--imbalance", "5", "--minority", "4"],
    "depth 0": ["--depth", "0"],
    "unknown activation": ["--depth", "2", "--act", "tanh"],
    "deep HAFrame": ["--depth", "2", "--loss", "haframe", "--hierarchy", "balanced:2,5"],
    "negative wd-M": ["--depth", "2", "--wd-M", "-1"],
}


def bad_input_error(argv, capsys, tmp_path) -> str:
    """Run the CLI on bad input: it must exit with status 2 and one line on stderr (returned)."""
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "never"), "--steps", "1", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("tree, message", [
    ('{"parents": [1, 2, 0]}', "cycle"),
    ('{"edges": [["r", "a"], ["r", "b"], ["a", "c"], ["b", "c"]]}', "two parents"),
    ('{"name": "r", "children": [{"name": "a"}, {"name": "a"}]}', "duplicate leaf"),
    ('{"name": "r", "children": [{"name": "a"}, {"name": "b"}], "leaf_order": ["a"]}', "missing"),
    ("{oops", "not valid JSON"),
    ('{"parents": ["x", 0, 0]}', "must be integers"),
    ('{"parents": 5}', "must be a list"),
    ('{"parents": {"a": "r", "c": ["x"]}}', "must be a string"),
    ('{"edges": [["r", ["x"]], ["r", "b"]]}', "must be a string"),
    ('{"edges": [["r", "a", "b"]]}', "pair"),
    ("[1, 2]", "expected a JSON object"),
    ('{"name": "r", "children": [{"name": "a", "label": 0}, {"name": "b"}]}', "label all or none"),
    ('{"name": "r", "children": [{"name": "a", "label": "0"}, {"name": "b", "label": 1}]}', "integers"),
    ('{"name": "r", "children": [{"name": "a"}, {"name": "b"}], "leaf_order": 3}', "leaf_order"),
    ("[" * 3000 + "]" * 3000, "nested too deeply"),
    ('{"name": ' + "[" * 3000 + "]" * 3000 + "}", "nested too deeply"),
])
def test_malformed_tree_files_one_line_exit_2(tree, message, capsys, tmp_path):
    """Every malformed tree file is one line and exit status 2, never a traceback."""
    path = tmp_path / "tree.json"
    path.write_text(tree)
    assert message in bad_input_error(["--hierarchy", str(path)], capsys, tmp_path)


@pytest.mark.parametrize("argv", BAD.values(), ids=BAD.keys())
def test_bad_input_one_line_exit_2(argv, capsys, tmp_path):
    err = bad_input_error(argv, capsys, tmp_path)
    assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "never" / "summary.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_device_is_bad_input(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--device", "cuda", "--steps", "1", "--out", str(tmp_path / "r")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "CUDA is not available" in err


def test_real_process_bad_input_has_no_traceback():
    r = subprocess.run([sys.executable, "-m", "ufm.simulate", "--K", "1"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "python -m ufm.simulate: error: argument --K: must be >= 2, got 1 (see --help)"]


def test_end_to_end_run_prints_table_and_writes_summary(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "ufm.simulate", "--K", "4", "--n", "5", "--d", "6", "--wd", "5e-3",
                        "--optimizer", "lbfgs", "--dtype", "float64", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "quantity" in r.stdout and "measured" in r.stdout and "predicted" in r.stdout
    assert "theory: mse_bias_free" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rel_gap"]["loss"] < 1e-8


def test_diverging_run_exits_nonzero_and_says_where(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ufm.simulate", "--K", "4", "--n", "5", "--d", "6", "--lr", "500",
                        "--steps", "2000", "--quiet", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True)
    assert r.returncode == 3
    assert "diverged at step" in r.stderr and "last finite loss" in r.stderr
    assert (tmp_path / "run" / "history.csv").exists() and (tmp_path / "run" / "summary.json").exists()


def test_help_lists_every_flag():
    r = subprocess.run([sys.executable, "-m", "ufm.simulate", "--help"], capture_output=True, text=True)
    for flag in ("--K", "--n", "--counts", "--d", "--loss", "--wd", "--wd-W", "--wd-H", "--wd-b", "--bias",
                 "--no-bias", "--steps", "--lr", "--optimizer", "--device", "--dtype", "--seed", "--out",
                 "--quiet", "--init-scale", "--smoothing", "--target-scale", "--tol", "--batch-size",
                 "--hierarchy", "--alpha", "--beta", "--gamma", "--s-min", "--hxe-weighting", "--hug-measure",
                 "--hug-s", "--hug-sigma", "--hug-sharpness", "--hug-inter", "--hug-intra", "--hug-proxies",
                 "--depth", "--act", "--width", "--wd-M", "--imbalance", "--minority"):
        assert flag in r.stdout, flag


def test_non_utf8_tree_file_one_line_exit_2(capsys, tmp_path):
    path = tmp_path / "tree.json"
    path.write_bytes(b"\xff\xfe{")
    assert "not UTF-8" in bad_input_error(["--hierarchy", str(path)], capsys, tmp_path)


def test_hug_run_prints_the_gnc_comparison(tmp_path, capsys):
    argv = ["--K", "6", "--d", "3", "--n", "3", "--loss", "hug", "--steps", "200", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "theory: spherical_code" in out and "GNC against the energy code" in out and "NC2 and NC3 are not" in out
