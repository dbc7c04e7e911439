"""The documentation site's code works as written: tests/test_readme.py's rules, applied to every page under docs/.

- Every command of this project's tools in a bash or unlabelled block is parsed by the tool's own parser (and for
  ufm.simulate and ufm.train turned into its validated configuration); so is every command line that the site
  generates from the theory atlas (docs/hooks.py).
- Every page's python blocks run in order, in one namespace per page, in a fresh working directory, checking the
  numbers their comments state; a block after `<!-- parse-only -->` is parsed and runs its imports alone, a block
  after `<!-- no-test -->` is skipped and listed in NO_TEST.
- Every page is in mkdocs.yml's nav, and every block is python, bash or text (output).

`mkdocs build --strict` itself runs in CI (.ci/run), not here: it needs the `docs` extra.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_readme import blocks, check_command, commands, run_block

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md"))
BLOCKS = {p.relative_to(DOCS).as_posix(): blocks(p.read_text(encoding="utf-8")) for p in PAGES}
COMMANDS = [(name, c) for name, page in BLOCKS.items() for c in commands(page)]
NO_TEST: set[str] = set()  # first lines of the blocks marked <!-- no-test --> (none today)
PYTHON_PAGES = [name for name, page in BLOCKS.items() if any(b.lang == "python" for b in page)]


def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{n}:{c.line}-{c.tool}" for n, c in COMMANDS])
def test_docs_command_is_accepted_by_its_tool(page, command):
    why = check_command(command.tool, command.args)
    assert why is None, f"docs/{page} line {command.line}: {command.text!r}: {why}"


def test_the_site_shows_every_tool():
    assert {c.tool for _, c in COMMANDS} >= {"ufm.simulate", "ufm.train", "ufm.sweep", "ufm.atlas", "analysis.measure",
                                             "figures"}


def test_the_atlas_command_lines_are_accepted():
    from ufm.atlas import ROWS

    h = hooks()
    families = {h.family(row) for row in ROWS}
    assert families == {"square", "cross-entropy", "sphere", "deep", "hug", "hierarchies"}
    for row in ROWS:
        args = h.row_command(row).split()[3:]
        assert check_command("ufm.simulate", args) is None, (row.name, args)
    # every family has a page that shows its rows
    shown = {m for page in PAGES for m in re.findall(r"<!-- atlas:family ([\w-]+) -->", page.read_text())}
    assert shown == families


def test_the_cli_reference_covers_every_tool():
    h = hooks()
    text = (DOCS / "cli.md").read_text()
    assert set(re.findall(r"<!-- cli:([\w.]+) -->", text)) == set(h.TOOLS)
    assert "--loss" in h.tool_help("ufm.simulate") and "--smoke" in h.tool_help("ufm.atlas")


def test_every_page_is_in_the_nav_and_every_block_is_known():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [name for name in BLOCKS if f": {name}\n" not in nav]
    assert missing == []
    odd = [(name, b.line, b.lang) for name, page in BLOCKS.items() for b in page
           if b.lang not in ("python", "bash", "text")]
    assert odd == []


def test_skipped_blocks_are_listed():
    skipped = {b.code.splitlines()[0] for page in BLOCKS.values() for b in page if b.skip}
    assert skipped == NO_TEST, "a block marked <!-- no-test --> must be listed in NO_TEST (and only those)"


@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_docs_python_blocks_run(page, tmp_path, monkeypatch):
    import ufm

    monkeypatch.chdir(tmp_path)
    losses = dict(ufm.LOSSES)
    namespace: dict = {"__name__": "docs"}
    ran = 0
    try:
        with torch.random.fork_rng(devices=[]):
            for block in BLOCKS[page]:
                if block.lang == "python" and not block.skip:
                    run_block(block, namespace, f"docs/{page}")
                    ran += 1
    finally:
        ufm.LOSSES.clear()
        ufm.LOSSES.update(losses)
    assert ran >= 1
    if page == "library.md":  # what the snippets say they produce
        assert namespace["r"].summary["config"]["loss"] == "sq_hinge" and namespace["r"].status == "ok"
        assert (tmp_path / "runs" / "mine" / "summary.json").is_file()
        assert (tmp_path / "sweeps" / "wd" / "results.csv").is_file()
        assert len(namespace["results"]) == 3
    if page == "getting-started.md":
        assert namespace["r"].table().splitlines()[-1].startswith("verdict: the run reached the predicted optimum")


def test_the_library_blocks_run_as_a_plain_script(tmp_path):
    """The library page's blocks, through the one that registers a loss (and sweeps it), pasted into a script
    without an `if __name__ == "__main__":` guard, run as they are: each sweep runs in the script's process and
    says so in one line, and every row is ok, the registered loss's too."""
    python = [b for b in BLOCKS["library.md"] if b.lang == "python" and not b.skip and not b.parse_only]
    last = next(i for i, b in enumerate(python) if "ufm.register_loss(" in b.code)
    assert "ufm.sweep(" in python[last].code, "the library page's register_loss block should sweep the loss"
    script = tmp_path / "library.py"
    script.write_text("".join(b.code for b in python[:last + 1]), encoding="utf-8")
    done = subprocess.run([sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = re.split(r"[\r\n]+", done.stderr)
    notices = [line for line in lines if "calls ufm.sweep outside an `if __name__" in line]  # a logged warning
    sweeps = sum(b.code.count("ufm.sweep(") for b in python[:last + 1])
    assert len(notices) == sweeps >= 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    tables = sorted(tmp_path.glob("sweeps/*/results.csv"))
    assert len(tables) == sweeps
    rows = [row for table in tables for row in csv.DictReader(table.open())]
    assert {row["status"] for row in rows} == {"ok"} and "sq_hinge" in {row["loss"] for row in rows}
