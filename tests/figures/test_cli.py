"""`python -m figures` refuses bad input in one line (exit 2) before drawing anything, reports a failed write in
one line naming the file (exit 1), and prints only paths that exist when it returns: smoke pictures drawn
without --out are said to be discarded, not listed."""

import errno
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import figures.__main__ as cli
from figures import runs
from figures.style import plt

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_figures(monkeypatch):
    """Every figure's build() returns an empty figure at once (the drawing itself is tested in test_figures)."""
    import importlib

    built = []
    for name in cli.FIGURES:
        module = importlib.import_module(f"figures.{name}")
        monkeypatch.setattr(module, "build", lambda out, smoke, name=name: built.append(name) or plt.figure())
    return built


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def refused(argv, capsys, *needles):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    return one_line_error(capsys, *needles)


def test_out_that_is_a_file_is_refused(tmp_path, capsys, tiny_figures):
    (tmp_path / "notes.txt").write_text("mine")
    refused(["nc_curves", "--out", str(tmp_path / "notes.txt")], capsys, "--out", "notes.txt", "not a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine" and tiny_figures == []


def test_runs_that_is_a_file_is_refused(tmp_path, capsys, tiny_figures):
    (tmp_path / "f").write_text("")
    refused(["nc_curves", "--runs", str(tmp_path / "f")], capsys, "--runs", "not a folder")
    assert tiny_figures == []


@pytest.mark.parametrize("flag", ["--out", "--runs"])
def test_a_file_name_is_refused_not_made_a_folder(tmp_path, capsys, flag, tiny_figures):
    refused(["nc_curves", flag, str(tmp_path / "missing" / "x.png")], capsys, flag, "looks like a file name")
    assert not (tmp_path / "missing").exists() and tiny_figures == []


def test_empty_out_is_refused(capsys, tiny_figures):
    refused(["nc_curves", "--out", ""], capsys, "--out", "empty")


def test_read_only_out_is_refused(read_only_dir, capsys, tiny_figures):
    refused(["nc_curves", "--out", str(read_only_dir)], capsys, "--out", "cannot write there", "ermission denied")
    assert list(read_only_dir.iterdir()) == [] and tiny_figures == []


def test_missing_out_folders_are_created(tmp_path, capsys, tiny_figures):
    out = tmp_path / "a" / "b"
    assert cli.main(["nc_curves", "--smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("nc_curves.png", "nc_curves.pdf"):
        assert (out / name).is_file() and str(out / name) in printed
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_smoke_without_out_prints_no_path_it_deletes(capsys, tiny_figures):
    assert cli.main(["nc_curves", "sqi", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert tiny_figures == ["nc_curves", "sqi"]
    assert ".png" not in out and ".pdf" not in out and tempfile.gettempdir() not in out
    assert out.count("drawn (not kept)") == 2 and "discarded" in out and "--out DIR keeps them" in out


def test_a_failed_write_is_one_line_naming_the_file_exit_1(tmp_path, capsys, monkeypatch, tiny_figures):
    def full(path, write, binary=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(runs, "atomic_write", full)
    assert cli.main(["nc_curves", "--out", str(tmp_path)]) == 1
    one_line_error(capsys, "nc_curves", str(tmp_path / "nc_curves.png"), "no space left on device")
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic_and_keeps_the_old_picture_on_failure(tmp_path, monkeypatch):
    fig = plt.figure()
    path = runs.save(fig, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    old = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError) as e:
        runs.save(fig, path)
    plt.close(fig)
    assert e.value.filename == str(path) and path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


def test_bad_out_from_the_command_line_has_no_traceback(tmp_path):
    (tmp_path / "file").write_text("")
    p = subprocess.run([sys.executable, "-m", "figures", "--smoke", "--out", str(tmp_path / "file")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "not a folder" in p.stderr, p.stderr
