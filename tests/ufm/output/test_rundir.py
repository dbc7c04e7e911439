import json
import math

from ufm.output.rundir import atomic_write_text, new_run_dir, write_csv, write_json


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_json_writes_nonfinite_as_null(tmp_path):
    write_json(tmp_path / "s.json", {"a": math.nan, "b": [math.inf, 1.0]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": None, "b": [None, 1.0]}


def test_csv_union_of_columns(tmp_path):
    write_csv(tmp_path / "h.csv", [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5, "extra": 2}])
    assert (tmp_path / "h.csv").read_text().splitlines() == ["step,loss,extra", "0,1.0,", "1,0.5,2"]


def test_new_run_dirs_are_distinct(tmp_path):
    a, b = new_run_dir(tmp_path, "x"), new_run_dir(tmp_path, "x")
    assert a != b and a.is_dir() and b.is_dir()


def test_atomic_writes_honour_the_umask_and_keep_an_existing_mode(tmp_path):
    """mkstemp creates 0600 files: a written file gets 0666 less the umask (colleagues can read shared runs), and
    a replaced file keeps its mode."""
    import os
    import stat

    from ufm.output.rundir import atomic_write_text

    old = os.umask(0o022)
    os.umask(old)
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "x")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~old
    kept = tmp_path / "kept.txt"
    kept.write_text("a")
    kept.chmod(0o640)
    atomic_write_text(kept, "b")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "b"


def test_a_file_system_that_refuses_chmod_still_gets_the_file_and_no_descriptor_leaks(tmp_path, monkeypatch):
    """Some mounts (SMB with noperm, some FUSE file systems) refuse chmod: the write keeps mkstemp's mode instead
    of failing, and leaves no open descriptor or temporary file behind."""
    import os

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    fds = (lambda: len(os.listdir("/proc/self/fd"))) if os.path.isdir("/proc/self/fd") else (lambda: 0)  # Linux
    before = fds()
    monkeypatch.setattr(os, "chmod", refuse)
    for i in range(3):
        atomic_write_text(tmp_path / "a.txt", f"v{i}")
    monkeypatch.undo()
    assert (tmp_path / "a.txt").read_text() == "v2" and [x.name for x in tmp_path.iterdir()] == ["a.txt"]
    assert fds() == before
