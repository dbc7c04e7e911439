"""The libraries `ufm` and `analysis` report through logging (the "ufm" loggers) and warnings.warn (UFMWarning),
never by printing (issue 27): only the command lines print, and the progress bars (tqdm) draw on stderr.

An AST scan of every module finds print(...), sys.stdout / sys.stderr, tqdm.write and traceback.print_* outside a
short allow-list; a behavioural check runs library calls under capfd and finds nothing written, while the records
that used to be printed reach the "ufm" logger; a command line still shows them as its own lines."""

import ast
import logging
import warnings
from pathlib import Path

import pytest

import ufm
from ufm.cli.common import report_to_stderr
from ufm.errors import UFMWarning

REPO = Path(__file__).resolve().parents[1]
STREAMS = {"stdout", "stderr", "__stdout__", "__stderr__"}
TRACEBACK_PRINTS = {"print_exc", "print_exception", "print_stack", "print_tb", "print_last"}

# where printing belongs: the command-line modules, and the command-line part of the two modules that hold both a
# library and a command line ("*": the whole module)
ALLOWED = {
    "ufm/cli/*": {"*"},
    "ufm/atlas.py": {"main"},
    "analysis/measure.py": {"main", "_fail", "_Version"},  # _Version: --version
}


def _allowed(path: str, qualname: str) -> bool:
    for pattern, names in ALLOWED.items():
        if Path(path).match(pattern) or path == pattern:
            if "*" in names or qualname.split(".")[0] in names:
                return True
    return False


class _Outputs(ast.NodeVisitor):
    """Every place a module writes to the terminal itself, as (line, enclosing qualname, what). A progress bar,
    tqdm(..., file=sys.stderr), is not one: its stream is the keyword file= of a tqdm(...) call."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str, str]] = []
        self.scope: list[str] = []
        self.bar_streams: set[int] = set()  # id() of the sys.stderr nodes handed to tqdm(file=...)

    def _scoped(self, node: ast.AST) -> None:
        self.scope.append(node.name)  # type: ignore[attr-defined]
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def _add(self, node: ast.AST, what: str) -> None:
        self.found.append((node.lineno, ".".join(self.scope) or "<module>", what))  # type: ignore[attr-defined]

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        if name == "print" and isinstance(f, ast.Name):
            self._add(node, "print(...)")
        elif name == "write" and owner == "tqdm":
            self._add(node, "tqdm.write(...)")
        elif name in TRACEBACK_PRINTS and owner == "traceback":
            self._add(node, f"traceback.{name}(...)")
        elif name == "tqdm":
            self.bar_streams |= {id(k.value) for k in node.keywords if k.arg == "file"}
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if (isinstance(node.value, ast.Name) and node.value.id == "sys" and node.attr in STREAMS
                and id(node) not in self.bar_streams):
            self._add(node, f"sys.{node.attr}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "sys" and any(a.name in STREAMS for a in node.names):
            self._add(node, "from sys import a stream")


def terminal_output(path: Path) -> list[tuple[int, str, str]]:
    visitor = _Outputs()
    visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return visitor.found


def library_modules() -> list[Path]:
    return sorted(p for package in ("ufm", "analysis") for p in (REPO / package).rglob("*.py"))


def test_the_scan_sees_every_kind_of_terminal_output(tmp_path):
    source = ("import sys, traceback\nfrom tqdm import tqdm\n"
              "def f():\n    print('x')\n    sys.stderr.write('y')\n"
              "class C:\n    def g(self):\n        tqdm.write('z', file=sys.stdout)\n        traceback.print_exc()\n"
              "def bar():\n    return tqdm(total=3, file=sys.stderr)\n")
    (tmp_path / "m.py").write_text(source)
    assert terminal_output(tmp_path / "m.py") == [
        (4, "f", "print(...)"), (5, "f", "sys.stderr"), (8, "C.g", "tqdm.write(...)"), (8, "C.g", "sys.stdout"),
        (9, "C.g", "traceback.print_exc(...)")]  # the progress bar in bar() is not output


def test_no_library_module_prints():
    """A print in library code fails here: report through logging.getLogger(__name__) (a "ufm" logger) or
    warnings.warn(..., UFMWarning) instead; the command lines show both as their own lines."""
    modules = library_modules()
    assert len(modules) > 100  # the scan reads the packages, not an empty folder
    printing = [f"{p.relative_to(REPO)}:{line} {where}: {what}" for p in modules
                for line, where, what in terminal_output(p) if not _allowed(str(p.relative_to(REPO)), where)]
    assert printing == []


def test_the_allow_list_is_needed():
    """Every entry of ALLOWED still covers some output (a stale entry would hide a future print)."""
    used = {pattern for p in library_modules() for _, where, _ in terminal_output(p)
            for pattern, names in ALLOWED.items()
            if Path(p.relative_to(REPO)).match(pattern) and ("*" in names or where.split(".")[0] in names)}
    assert used == set(ALLOWED)


def test_library_loggers_are_under_ufm():
    """One logger tree: ufm modules log to getLogger(__name__), analysis modules to "ufm.analysis"."""
    names = []
    for p in library_modules():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger":
                arg = node.args[0] if node.args else None
                names.append((p.relative_to(REPO).parts[0], ast.unparse(arg) if arg is not None else "<root>"))
    assert names and all((package == "ufm" and name == "__name__") or name.strip("'\"").split(".")[0] == "ufm"
                         for package, name in names), names


# ---- behaviour: library calls write nothing; what they used to print is logged -------------------------------

TINY = {"K": 3, "n": 4, "d": 5, "steps": 20, "certificate": False}


def test_a_run_and_a_sweep_write_nothing_but_log_what_they_used_to_print(tmp_path, capfd, caplog):
    result = ufm.run(ufm.SimConfig(K=3, n=4, d=5, steps=20, certificate=False), tmp_path / "run", progress=False)
    assert result.summary["status"] == "ok"
    grid = {"wd": [1e-3, 2e-3]}
    rows = ufm.sweep(grid, tmp_path / "sweep", fixed=TINY, workers=1, progress=False)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    broken = tmp_path / "sweep" / "runs" / rows[0]["id"] / "summary.json"
    broken.write_text("[1, 2]")  # a run whose summary is unusable: it used to print "python -m ufm.sweep: warning"
    with caplog.at_level(logging.WARNING, logger="ufm"):
        rows = ufm.sweep(grid, tmp_path / "sweep", fixed=TINY, workers=1, progress=False)
        rows = ufm.sweep({"wd": [3e-3]}, tmp_path / "sweep", fixed=TINY, workers=1, progress=False)  # merged
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert capfd.readouterr() == ("", "")
    assert [(r.name, r.levelno) for r in caplog.records] == [("ufm.sweeps.runner", logging.WARNING)] * 2
    assert caplog.records[0].getMessage() == f"{broken}: not a JSON object; the run is treated as unfinished and " \
                                             "run again"
    assert caplog.records[1].getMessage().endswith("merging this grid (1 configurations) with 2 of earlier grids; "
                                                   "results.csv lists all of them")


def test_an_accumulator_and_a_spherical_code_write_nothing(capfd, caplog, recwarn):
    import torch

    from analysis.spherical_codes import spherical_code
    from analysis.tracking import NCAccumulator

    acc = NCAccumulator(K=3)
    H, y = torch.randn(30, 4, dtype=torch.float64), torch.arange(30) % 3
    acc.update(H, y)
    assert 0 < acc.compute()["nc1"] < float("inf")
    code = spherical_code(5, 3, "energy", restarts=1, progress=False)  # searched (K > d + 1), the disk cache off
    assert code.points.shape == (5, 3) and not code.exact and not code.cached
    assert capfd.readouterr() == ("", "") and not caplog.records and not recwarn.list


# ---- the command lines show the records as their own lines -------------------------------------------------------

def test_a_command_line_shows_records_and_project_warnings_as_its_own_lines(capsys):
    log = logging.getLogger("ufm.sweeps.runner")
    with report_to_stderr("python -m ufm.sweep"):
        log.warning("%s: not a JSON object", "a/summary.json")
        logging.getLogger("ufm.backbone.compare").info("UFM twin: K=4")
        logging.getLogger("ufm").debug("not shown")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("comparison.png not drawn: no display", UFMWarning, stacklevel=1)
    assert capsys.readouterr() == ("", "python -m ufm.sweep: warning: a/summary.json: not a JSON object\n"
                                       "UFM twin: K=4\n"
                                       "python -m ufm.sweep: warning: comparison.png not drawn: no display\n")
    assert logging.getLogger("ufm").level == logging.NOTSET and not logging.getLogger("ufm").handlers


def test_other_warnings_keep_their_own_form_in_a_command_line(capsys):
    with report_to_stderr("python -m ufm.sweep"), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.warn("a torch deprecation", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["a torch deprecation"] and capsys.readouterr().err == ""


@pytest.mark.parametrize("module", ["ufm.cli.simulate", "ufm.cli.sweep", "ufm.cli.train", "ufm.atlas"])
def test_every_command_line_installs_the_reporting(module):
    """Each main runs the library under report_to_stderr (analysis.measure does not: nothing in analysis logs, and
    analysis does not import ufm)."""
    import importlib

    assert "report_to_stderr(PROG)" in Path(importlib.import_module(module).__file__).read_text(encoding="utf-8")


def test_the_sweep_command_line_still_prints_its_warning_lines(tmp_path, capsys):
    """What run_sweep printed itself before issue 27, python -m ufm.sweep prints unchanged from the log records."""
    from ufm.cli.sweep import main

    argv = ["--grid", "wd=1e-3,2e-3", "--set", "K=3", "--set", "n=4", "--set", "d=5", "--set", "steps=20",
            "--set", "certificate=false", "--workers", "1", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    broken = next((tmp_path / "runs").iterdir()) / "summary.json"
    broken.write_bytes(b"\x00\xff binary")
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"python -m ufm.sweep: warning: {broken}: unreadable (") and \
        err[0].endswith("); the run is treated as unfinished and run again")
    assert len(err) == 2 and err[1].startswith("2 configurations: 2 ok (1 run now, 1 finished before)")
