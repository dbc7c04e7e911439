"""`python -m figures.history`: draws a run's curves; a missing run directory, a garbled history.csv or
summary.json, or an --out it cannot write is one line on stderr naming the file and exit status 2 (nothing
drawn, nothing written); a failed write is one line naming the file, exit 1."""

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import figures.history as history
from figures import runs
from figures.history import main
from ufm import run
from ufm.config import SimConfig

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("made") / "run"
    run(SimConfig(K=3, n=4, d=4, steps=20), out, progress=False)
    return out


@pytest.fixture
def run_dir(made_run, tmp_path):
    """A fresh copy of a real run directory (config.json, history.csv, summary.json, params.pt)."""
    return Path(shutil.copytree(made_run, tmp_path / "run"))


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_history_plot_is_written(run_dir, capsys):
    assert main([str(run_dir)]) == 0
    png = run_dir / "history.png"
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    assert capsys.readouterr().out.strip() == str(png)
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def test_missing_history_is_exit_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    one_line_error(capsys, "history.csv not found")


def test_missing_run_directory_is_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    one_line_error(capsys, "run directory", "nope", "not found")


GARBLED = {  # file → (its content, a word of the message)
    "history.csv": [("step,loss\n0,1.0\n5,abc\n", "abc"),
                    ("step,loss\n0,1.0,7\n", "more cells than the header"),
                    ("a,b\n0,1\n", "no 'step' column"),
                    ("", "no rows"),
                    ("step,loss\n", "no rows"),
                    (b"\xff\xfe\x00garbage\x80", "decode")],
    "summary.json": [('{"status": "ok", "config": {"K": 3', "summary.json"),
                     (b"\x89PNG\x00\xff", "decode"),
                     ("[1, 2]", "expected a JSON object, got list"),
                     ("", "Expecting value")],
}
CASES = [(name, content, word) for name, cases in GARBLED.items() for content, word in cases]


@pytest.mark.parametrize(("name", "content", "word"), CASES,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(CASES)])
def test_garbled_run_file_is_one_line_exit_2(run_dir, capsys, name, content, word):
    path = run_dir / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main([str(run_dir)]) == 2
    one_line_error(capsys, str(path), word)
    assert not (run_dir / "history.png").exists()


def test_a_bad_run_among_good_ones_draws_nothing(run_dir, made_run, tmp_path, capsys):
    (run_dir / "summary.json").write_text("{")
    out = tmp_path / "both.png"
    assert main([str(made_run), str(run_dir), "--out", str(out)]) == 2
    one_line_error(capsys, str(run_dir / "summary.json"))
    assert not out.exists()


def test_summary_with_nulls_and_a_partial_config_is_drawn(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"] = {"loss": "ce"}  # no K, no wd_W: the label falls back to the directory's name
    summary["theory"] = {"applies": True, "predicted": {"loss": None, "nc1": "n/a", "W_norm_sq": 3.0}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert main([str(run_dir)]) == 0 and (run_dir / "history.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(("out", "word"), [
    ("/nonexistent/dir/x.png", "folder /nonexistent/dir does not exist"),
    ("{tmp}", "is a folder"),
    ("{tmp}/x.txt", "'.txt'"),
    ("{tmp}/noext", "no suffix"),
    ("{tmp}/file/x.png", "is not a directory"),
])
def test_bad_out_is_one_line_exit_2(run_dir, tmp_path, capsys, out, word):
    (tmp_path / "file").write_text("")
    out = out.format(tmp=tmp_path)
    assert main([str(run_dir), "--out", out]) == 2
    one_line_error(capsys, "--out", word)
    assert not Path("/nonexistent").exists()


def test_read_only_out_folder_is_exit_2(run_dir, read_only_dir, capsys):
    assert main([str(run_dir), "--out", str(read_only_dir / "h.png")]) == 2
    one_line_error(capsys, "--out", "cannot write", "ermission denied")
    assert list(read_only_dir.iterdir()) == []


def test_out_in_another_format(run_dir, tmp_path):
    assert main([str(run_dir), "--out", str(tmp_path / "h.pdf")]) == 0
    assert (tmp_path / "h.pdf").read_bytes()[:5] == b"%PDF-"


def test_a_failed_write_is_one_line_exit_1_and_keeps_the_old_picture(run_dir, capsys, monkeypatch):
    png = run_dir / "history.png"
    png.write_bytes(b"old")

    def full(path, write, binary=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(runs, "atomic_write", full)
    assert main([str(run_dir)]) == 1
    one_line_error(capsys, str(png), "no space left on device")  # os_error_line's wording
    assert png.read_bytes() == b"old"


def test_garbled_summary_from_the_command_line_has_no_traceback(run_dir):
    (run_dir / "summary.json").write_bytes(b"\x00\x01{")
    p = subprocess.run([sys.executable, "-m", "figures.history", str(run_dir)], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "summary.json" in p.stderr, p.stderr


def test_read_run_is_the_library_entry(run_dir):
    rows, summary = history.read_run(run_dir)
    assert rows[0]["step"] == 0 and summary["config"]["K"] == 3
    (run_dir / "summary.json").unlink()
    assert history.read_run(run_dir)[1] == {}
