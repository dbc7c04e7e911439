"""Run the example notebooks without Jupyter, and optionally store their outputs in them.

    python -m examples.execute [--small] [--write] [--threads N] [NOTEBOOK ...]   (from the repository root)
    python examples/execute.py ...                                    (the same, as a script)

Each notebook's code cells run in order in one namespace, in a fresh temporary working directory (nothing
is written into the checkout), with the repository root on sys.path and matplotlib on its non-interactive
Agg backend. What a cell prints (stdout, stderr), its final bare expression (as Jupyter shows it, not after
a trailing ';') and every figure it shows (`plt.show()`) or leaves open are captured, in that order: a figure
becomes a PNG image and is closed, as Jupyter's inline backend does. `--small` sets UFM_EXAMPLES_SMALL=1,
which every notebook reads to use tiny sizes (the test suite runs them that way); `--write` stores the
captured outputs and execution counts back into the .ipynb files (nbformat 4.5), so the committed notebooks
show their full-size plots (it refuses `--small`). A failing cell raises `NotebookError` naming the notebook
and the cell. No Jupyter packages are needed: the notebooks are plain JSON, read and written here.

The stored outputs are the truth the test suite holds the notebooks to: tests/examples reruns every notebook at
full size (one of them under Jupyter's own executor, nbclient, the reference this module imitates) and
`compare`s the fresh outputs with the stored ones, number by number within a stated tolerance. After changing
a notebook, or code whose numbers a notebook prints, regenerate the stored outputs with

    python -m examples.execute --write            (all notebooks; or name the ones to rewrite)

Every notebook seeds all it draws at random, so the rerun gives the same numbers on a CPU.

Only the standard library is imported at module level; matplotlib is imported when a notebook runs.
"""

from __future__ import annotations

import argparse
import ast
import base64
import builtins
import contextlib
import io
import json
import linecache
import math
import os
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent
SMALL_ENV = "UFM_EXAMPLES_SMALL"


def notebooks() -> list[Path]:
    """The example notebooks, in their order (by file name)."""
    return sorted(EXAMPLES.glob("*.ipynb"))


class NotebookError(RuntimeError):
    """A code cell of a notebook raised; the message names the notebook and the cell, the cause is chained."""


@dataclass
class Execution:
    """The result of running one notebook: its JSON with fresh outputs, the namespace its cells ran in, the
    number of figures captured and the wall-clock seconds."""

    path: Path
    notebook: dict
    namespace: dict[str, Any]
    figures: int = 0
    seconds: float = 0.0
    cell_seconds: list[float] = field(default_factory=list)


def load(path: Path | str) -> dict:
    """Read a notebook (nbformat 4 JSON)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    if nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        raise ValueError(f"{path}: not an nbformat-4 notebook")
    return nb


def save(nb: dict, path: Path | str) -> None:
    """Write a notebook the way Jupyter does (indent 1, UTF-8, trailing newline), atomically."""
    path = Path(path)
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def source_of(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


class _Capture:
    """The outputs of one cell, in the order they happen: text runs of stdout/stderr, then figures."""

    def __init__(self, plt: Any, ignore: set[int]) -> None:
        self.plt = plt
        self.ignore = ignore  # figures that were open before the notebook started are not its own
        self.outputs: list[dict] = []
        self.figures = 0
        self._stream: str | None = None
        self._text = io.StringIO()

    def write(self, name: str, text: str) -> None:
        if name != self._stream:
            self.flush()
            self._stream = name
        self._text.write(text)

    def flush(self) -> None:
        text = self._text.getvalue()
        if text:
            self.outputs.append({"output_type": "stream", "name": self._stream, "text": _lines(text)})
        self._text = io.StringIO()
        self._stream = None

    def show(self) -> None:
        """plt.show(): like Jupyter's inline backend, render every open figure here and close it."""
        self.flush()
        for num in self.plt.get_fignums():
            if num in self.ignore:
                continue
            fig = self.plt.figure(num)
            buffer = io.BytesIO()
            # no metadata: the same figure gives the same bytes, so rewriting a notebook does not churn it
            fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
            self.outputs.append({
                "output_type": "display_data",
                "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                         "text/plain": [repr(fig)]},
                "metadata": {},
            })
            self.plt.close(fig)
            self.figures += 1


class _Stream(io.TextIOBase):
    def __init__(self, capture: _Capture, name: str) -> None:
        self.capture, self.name = capture, name

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.capture.write(self.name, text)
        return len(text)


def _show_into(capture: _Capture) -> Any:
    def show(*args: Any, **kwargs: Any) -> None:
        capture.show()

    return show


def _run_cell(source: str, filename: str, namespace: dict, capture: _Capture, count: int) -> None:
    """Execute a cell; a final bare expression is shown as Jupyter shows it (unless the cell ends with ';')."""
    linecache.cache[filename] = (len(source), None, _lines(source), filename)  # tracebacks show the source
    tree = ast.parse(source, filename=filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not source.rstrip().endswith(";"):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        value = eval(compile(last, filename, "eval"), namespace)
        if value is not None:
            capture.flush()
            capture.outputs.append({"output_type": "execute_result", "execution_count": count,
                                    "data": {"text/plain": _lines(repr(value))}, "metadata": {}})


def execute(path: Path | str, *, small: bool = False, write: bool = False, threads: int | None = None) -> Execution:
    """Run the notebook at `path` and return its `Execution`; with `write`, store the outputs in the file.

    `small` sets UFM_EXAMPLES_SMALL=1 for the run (restored afterwards). The working directory is a fresh
    temporary directory, removed afterwards. `threads` sets torch's intra-op threads for the run (restored
    afterwards; None leaves torch's default): the examples are small problems, and on a machine whose cores
    are busy with other jobs, threads that wait on each other make them up to 10× slower (measured on 2
    shared cores: notebook 3 in 92 s with 2 threads, 9 s with 1). Raises `NotebookError` when a cell raises.
    """
    if small and write:
        raise ValueError("the committed notebooks show full-size outputs: do not write a --small run into them")
    path = Path(path).resolve()
    nb = load(path)
    import matplotlib.pyplot as plt

    plt.switch_backend("Agg")  # resolved now, before plt.show is swapped for the capture's

    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    result = Execution(path, nb, namespace)
    saved_env = os.environ.get(SMALL_ENV)
    saved_cwd = os.getcwd()
    saved_show = plt.show
    added_path = str(REPO) not in sys.path
    preexisting = set(plt.get_fignums())
    saved_threads = None
    start = time.perf_counter()
    try:
        if threads is not None:
            import torch

            saved_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        if small:
            os.environ[SMALL_ENV] = "1"
        else:
            os.environ.pop(SMALL_ENV, None)
        if added_path:
            sys.path.insert(0, str(REPO))
        with tempfile.TemporaryDirectory(prefix="ufm-example-") as workdir:
            os.chdir(workdir)
            count = 0
            for index, cell in enumerate(nb["cells"], start=1):
                if cell.get("cell_type") != "code":
                    continue
                count += 1
                capture = _Capture(plt, preexisting)
                plt.show = _show_into(capture)
                cell_start = time.perf_counter()
                try:
                    with contextlib.redirect_stdout(_Stream(capture, "stdout")), \
                            contextlib.redirect_stderr(_Stream(capture, "stderr")):
                        _run_cell(source_of(cell), f"<{path.name} cell {index}>", namespace, capture, count)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # SystemExit too: a notebook has no business exiting
                    capture.flush()
                    printed = "".join("".join(o["text"]) for o in capture.outputs if o["output_type"] == "stream")
                    tail = f"\n--- the cell printed ---\n{printed[-2000:]}" if printed else ""
                    raise NotebookError(f"{path.name}: cell {index} (code cell {count}) raised "
                                        f"{type(exc).__name__}: {exc}{tail}") from exc
                finally:
                    plt.show = saved_show
                capture.show()  # figures the cell left open
                capture.flush()
                result.cell_seconds.append(time.perf_counter() - cell_start)
                result.figures += capture.figures
                cell["outputs"] = capture.outputs
                cell["execution_count"] = count
    finally:
        os.chdir(saved_cwd)
        plt.show = saved_show
        for num in set(plt.get_fignums()) - preexisting:  # what a failing cell left open
            plt.close(num)
        if saved_env is None:
            os.environ.pop(SMALL_ENV, None)
        else:
            os.environ[SMALL_ENV] = saved_env
        if added_path and str(REPO) in sys.path:
            sys.path.remove(str(REPO))
        if saved_threads is not None:
            import torch

            torch.set_num_threads(saved_threads)
    result.seconds = time.perf_counter() - start
    if write:
        save(nb, path)
    return result


# a number in a text output: not part of a word (the 1 of nc1, the 400 of 1100x400); a sentence's full stop
# after it is harmless (float("316.") == 316.0)
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?!\w)")
_SECONDS = re.compile(r" ?s\b")  # "5.1 s", "0.11 s)": a wall-clock time, different in every run


def numbers(text: str) -> tuple[str, list[float]]:
    """Split a text output into its template and its numbers: each number becomes `#` in the template (a
    duration in seconds, `<time>`, and is left out of the numbers).

    >>> numbers("nc1  2.5e-09 at step 316, 5000 steps in 5.1 s")
    ('nc1  # at step #, # steps in <time> s', [2.5e-09, 316.0, 5000.0])
    """
    values: list[float] = []

    def replace(match: re.Match) -> str:
        if _SECONDS.match(text, match.end()):
            return "<time>"
        values.append(float(match.group()))
        return "#"

    return _NUMBER.sub(replace, text), values


def _outputs(cell: dict) -> list[tuple[str, str]]:
    """A code cell's outputs as (kind, text) pairs; consecutive stream outputs of one stream are joined (Jupyter
    may deliver one print in several messages), a figure is its kinds of data (its pixels are not compared)."""
    out: list[tuple[str, str]] = []
    for o in cell.get("outputs", []):
        kind = o.get("output_type")
        if kind == "stream":
            text = o.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            if out and out[-1][0] == f"stream {o.get('name')}":
                out[-1] = (out[-1][0], out[-1][1] + text)
            else:
                out.append((f"stream {o.get('name')}", text))
        elif kind in ("execute_result", "display_data"):
            data = o.get("data", {})
            if "image/png" in data:
                out.append((kind, "image: " + ", ".join(sorted(data))))
            else:
                text = data.get("text/plain", "")
                out.append((kind, "".join(text) if isinstance(text, list) else text))
        else:  # an error
            out.append((str(kind), f"{o.get('ename')}: {o.get('evalue')}"))
    return out


def compare(stored: dict, fresh: dict, *, rel_tol: float = 1e-6, abs_tol: float = 1e-12,
            cells: dict[int, tuple[float, float]] | None = None) -> list[str]:
    """The differences between two runs of a notebook (JSON as `load` returns, or nbformat's NotebookNode): for
    each code cell, the same outputs in the same order with the same text around the numbers, and each number
    within `math.isclose(stored, fresh, rel_tol=rel_tol, abs_tol=abs_tol)` of the stored one; `cells` maps a
    code cell's number (1, 2, … as Jupyter counts them) to its own `(rel_tol, abs_tol)`. Durations in seconds
    and the pixels of figures are not compared. An empty list: the fresh run reproduces the stored one.

    >>> cell = {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": "F = 1.5"}]}
    >>> other = {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": "F = 1.6"}]}
    >>> compare({"cells": [cell]}, {"cells": [other]}, rel_tol=0.1)
    []
    >>> compare({"cells": [cell]}, {"cells": [other]})
    ['code cell 1: 1.5 stored, 1.6 now (relative difference 6.3e-02 > 1e-06) in: F = 1.6']
    """
    cells = cells or {}
    code = [[c for c in nb["cells"] if c.get("cell_type") == "code"] for nb in (stored, fresh)]
    if len(code[0]) != len(code[1]):
        return [f"{len(code[0])} code cells stored, {len(code[1])} now"]
    problems: list[str] = []
    for count, (old, new) in enumerate(zip(*code, strict=True), start=1):
        rel, absolute = cells.get(count, (rel_tol, abs_tol))
        old_out, new_out = _outputs(old), _outputs(new)
        old_kinds, new_kinds = [k for k, _ in old_out], [k for k, _ in new_out]
        if old_kinds != new_kinds:
            problems.append(f"code cell {count}: outputs {old_kinds} stored, {new_kinds} now")
            continue
        for (_, old_text), (_, new_text) in zip(old_out, new_out, strict=True):
            for old_line, new_line in zip(_lines(old_text), _lines(new_text), strict=False):
                (old_template, old_values), (new_template, new_values) = numbers(old_line), numbers(new_line)
                if old_template != new_template:
                    problems.append(f"code cell {count}: {old_line.rstrip()!r} stored, {new_line.rstrip()!r} now")
                    continue
                for a, b in zip(old_values, new_values, strict=True):
                    if not (math.isclose(a, b, rel_tol=rel, abs_tol=absolute) or math.isnan(a) and math.isnan(b)):
                        scale = max(abs(a), abs(b))
                        problems.append(f"code cell {count}: {a:.10g} stored, {b:.10g} now (relative difference "
                                        f"{abs(a - b) / scale:.1e} > {rel:g}) in: {new_line.strip()}")
            if len(_lines(old_text)) != len(_lines(new_text)):
                problems.append(f"code cell {count}: {len(_lines(old_text))} lines of output stored, "
                                f"{len(_lines(new_text))} now")
    return problems


def resolve(name: str) -> Path:
    """A notebook given as a path, a file name in examples/, or a file name without .ipynb."""
    for candidate in (Path(name), EXAMPLES / name, EXAMPLES / f"{name}.ipynb"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no notebook {name!r} (looked in {EXAMPLES})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.execute", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="paths or names in examples/ (default: all of them)")
    parser.add_argument("--small", action="store_true", help=f"tiny sizes ({SMALL_ENV}=1), as the tests run them")
    parser.add_argument("--write", action="store_true", help="store the outputs and plots in the notebooks")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch intra-op threads (default: torch's; 1 is fastest on a busy machine)")
    args = parser.parse_args(argv)
    if args.small and args.write:
        parser.error("--write stores full-size outputs in the notebooks; --small is for quick checks")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    try:
        paths = [resolve(n) for n in args.notebooks] or notebooks()
    except FileNotFoundError as exc:
        parser.error(str(exc))
    for path in paths:
        try:
            r = execute(path, small=args.small, write=args.write, threads=args.threads)
        except NotebookError as exc:
            traceback.print_exception(exc.__cause__, file=sys.stderr)
            print(f"error: {exc}", file=sys.stderr)
            return 1
        written = ", written" if args.write else ""
        print(f"{path.name}: {len(r.cell_seconds)} code cells, {r.figures} figures, {r.seconds:.1f} s{written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
