"""mkdocs hooks: the pages generated at build time from the code itself.

- `<!-- cli:TOOL -->` (cli.md) becomes TOOL's `--help`, from its own argument parser;
- `<!-- atlas:family NAME -->` (the pages of the losses and targets) becomes a table of the theory atlas's rows of
  that family (ufm.atlas.ROWS: the paper, the target, the run that tests it as a command line, the tolerance), with
  the predicted and measured values of the atlas table committed in atlas.md (`python -m ufm.atlas --readme
  docs/atlas.md` refreshes it);
- the example notebooks (examples/*.ipynb) and the figures (figures/*.png) join the site's files, so that they are
  rendered (mkdocs-jupyter, from their stored outputs) and shown from where they live in the repository.

tests/test_docs.py imports this file to check every generated command line against the real parsers.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import sys
from pathlib import Path
from typing import Any

try:
    from mkdocs.plugins import event_priority
except ImportError:  # the tests import this file without mkdocs (the `test` extra): the decorator does nothing then
    def event_priority(priority: float):  # type: ignore[no-redef]
        return lambda f: f

ROOT = Path(__file__).resolve().parents[1]

# tool → (module, function that builds its parser, or None: the module's main(["--help"]) prints it)
TOOLS = {
    "ufm.simulate": ("ufm.cli.simulate", "build_parser"),
    "ufm.train": ("ufm.cli.train", "build_parser"),
    "ufm.sweep": ("ufm.cli.sweep", "build_parser"),
    "ufm.atlas": ("ufm.atlas", None),
    "analysis.measure": ("analysis.measure", "build_parser"),
    "figures": ("figures.__main__", "build_parser"),
    "figures.history": ("figures.history", "build_parser"),
}


def tool_help(tool: str) -> str:
    """The `--help` text of `python -m TOOL`, as a terminal 100 columns wide shows it."""
    module, function = TOOLS[tool]
    if str(ROOT) not in sys.path:  # figures runs from the checkout (it is not installed)
        sys.path.insert(0, str(ROOT))
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        mod = importlib.import_module(module)
        if function is not None:
            return getattr(mod, function)().format_help()
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            mod.main(["--help"])
        return out.getvalue()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def family(row: Any) -> str:
    """The family of an atlas row, read off its run's settings."""
    s = row.settings
    if s.get("loss") == "hug":
        return "hug"
    if s.get("hierarchy"):
        return "hierarchies"
    if s.get("normalize") or s.get("loss") == "supcon":
        return "sphere"
    if s.get("depth", 1) > 1:
        return "deep"
    return "square" if s.get("loss") == "mse" else "cross-entropy"


def row_command(row: Any) -> str:
    """The command line that makes the atlas row's run (float64 L-BFGS, as the atlas runs it)."""
    settings = {"optimizer": "lbfgs", "dtype": "float64", "steps": 1500, "certificate": False, **row.settings}
    args = ["python", "-m", "ufm.simulate"]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (tuple, list)):
            args += [flag, ",".join(str(v) for v in value)]
        else:
            args += [flag, str(value)]
    return " ".join(args)


def committed_atlas() -> dict[str, list[str]]:
    """name → the cells of its row in atlas.md's generated table."""
    from ufm.atlas import README_END, README_START

    text = (ROOT / "docs" / "atlas.md").read_text(encoding="utf-8")
    lines = text.split(README_START, 1)[1].split(README_END, 1)[0].strip().splitlines()[2:]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    return {c[0]: c for c in cells}


def family_table(name: str) -> str:
    from ufm.atlas import ROWS

    measured = committed_atlas()
    lines = ["| row | paper | target | quantity | predicted | measured | gap |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    runs = ["", "The runs (float64 L-BFGS, as the atlas makes them):", ""]
    for row in ROWS:
        if family(row) != name:
            continue
        cells = measured.get(row.name, [row.name, row.paper, row.key, "—", "—", "—", "—"])
        target = f"`{row.target}`" if row.target else "a check block"
        lines.append(f"| `{row.name}` | {row.paper} | {target} | {row.key} | {cells[3]} | {cells[4]} | {cells[5]} |")
        runs.append(f"- `{row.name}`: `{row_command(row)}`")
    if len(lines) == 2:
        raise ValueError(f"no atlas row of the family {name!r}")
    return "\n".join(lines + runs)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = re.sub(r"<!-- cli:([\w.]+) -->",
                      lambda m: f"```text\n{tool_help(m.group(1)).rstrip()}\n```", markdown)
    return re.sub(r"<!-- atlas:family ([\w-]+) -->", lambda m: family_table(m.group(1)), markdown)


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns the notebooks into pages
def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for notebook in sorted((ROOT / "examples").glob("*.ipynb")):
        files.append(File.generated(config, f"notebooks/{notebook.name}", abs_src_path=str(notebook)))
    for figure in sorted((ROOT / "figures").glob("*.png")):
        files.append(File.generated(config, f"figures/{figure.name}", abs_src_path=str(figure)))
    return files


try:  # the API reference: doctest examples (`>>>` lines and their output) shown as code, not as Markdown
    from griffe import Extension
except ImportError:  # pragma: no cover - griffe comes with mkdocstrings[python]
    Extension = object


def fence_doctests(text: str) -> str:
    """`text` with every doctest example (a `>>>` line up to the next blank line) in a ```pycon fence."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if not inside and line.lstrip().startswith(">>>"):
            if out and out[-1].strip():
                out.append("")
            out.append("```pycon")
            inside = True
        elif inside and not line.strip():
            out.append("```")
            inside = False
        out.append(line)
    if inside:
        out.append("```")
    return "\n".join(out)


class DoctestBlocks(Extension):  # type: ignore[misc, valid-type]
    """A griffe extension (mkdocs.yml: mkdocstrings' `extensions`) applying `fence_doctests` to every docstring."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
