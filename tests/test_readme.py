"""The README's code works as written (tests/test_docs.py applies the same rules to every page under docs/).

Rules (README.md's fenced code blocks, read at collection time):

- Every ```python block runs, in README order, in one namespace (as a reader pasting them into one session
  would: a later block may use what an earlier one defined, e.g. `ufm`, `small`), in a fresh temporary working
  directory (files the snippets write land there), with the torch RNG and the loss registry restored
  afterwards. A top-level expression whose line ends in a comment that starts with a number (`…  # 80.77: closed
  form`) must evaluate to that number, to the digits shown (one unit in the last place).
- Every command in a ```bash block or an unlabelled block that runs one of this project's tools
  (`python -m ufm.simulate|ufm.train|ufm.sweep|figures|figures.history|analysis.measure`, through any python,
  `.venv/bin/python` or `torchrun … -m`; each `&&` part of a line on its own; a trailing `# comment` dropped) is
  parsed by that tool's own argument parser, and for ufm.simulate and ufm.train also turned into its validated
  configuration (as the tool does before it starts), so an unknown, renamed or mistyped flag or value fails here.
  Nothing is run. A command naming a file of the reader's own (an argument ending in .json or .toml, e.g.
  `--hierarchy my_tree.json`) is parsed only. A command of a tool missing from PARSERS fails: add its parser.
- A block right after a line `<!-- no-test -->` (for a block that needs a GPU, a download or minutes of
  compute) is skipped, and must be listed in NO_TEST (its first line), so that every skip is visible here.

- A python block right after a line `<!-- parse-only -->` (one that would take long) is parsed, and its imports
  run, so that a renamed module or name fails here; the rest of it does not run.
- ```text blocks are output, not code.

The python blocks state small sizes themselves (`ufm.SimConfig(K=10, n=20, d=32, …)`): the README's take about a
second on this project's 2-core machine.
"""

from __future__ import annotations

import ast
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
NO_TEST_MARKER = "<!-- no-test -->"
PARSE_ONLY_MARKER = "<!-- parse-only -->"
NO_TEST: set[str] = set()  # first lines of the blocks marked <!-- no-test --> (none today)


@dataclass
class Block:
    lang: str  # "python", "bash", "" (unlabelled), …
    line: int  # README line of the block's first code line (1-based)
    code: str
    skip: bool  # marked <!-- no-test -->
    parse_only: bool = False  # marked <!-- parse-only -->


def blocks(text: str) -> list[Block]:
    """The fenced blocks of `text` (``` fences at the start of a line)."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, j = i + 1, i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        found.append(Block(m.group(1).lower(), start + 1, "\n".join(lines[start:j]) + "\n", before == NO_TEST_MARKER,
                           before == PARSE_ONLY_MARKER))
        i = j + 1
    return found


def _simulate(args) -> None:
    from ufm.cli.simulate import config_from_args

    config_from_args(args)


def _train(args) -> None:
    from ufm.cli.train import config_from_args

    config_from_args(args)


def _parser(module: str, function: str = "build_parser"):
    def build():
        import importlib

        return getattr(importlib.import_module(module), function)()
    return build


def _atlas_parser():
    """The parser that `python -m ufm.atlas` builds inside its main (caught as it starts parsing)."""
    import ufm.atlas
    from ufm.cli.common import OneLineParser

    class Caught(Exception):
        pass

    caught = []

    def catch(self, *args, **kwargs):
        caught.append(self)
        raise Caught

    original = OneLineParser.parse_args
    OneLineParser.parse_args = catch
    try:
        ufm.atlas.main([])
    except Caught:
        pass
    finally:
        OneLineParser.parse_args = original
    return caught[0]


# tool → (its parser, the check of the parsed arguments that the tool makes before it starts, or None)
PARSERS = {
    "ufm.simulate": (_parser("ufm.cli.simulate"), _simulate),
    "ufm.train": (_parser("ufm.cli.train"), _train),
    "ufm.sweep": (_parser("ufm.cli.sweep"), None),
    "ufm.atlas": (_atlas_parser, None),
    "figures": (_parser("figures.__main__"), None),
    "figures.history": (_parser("figures.history"), None),
    "analysis.measure": (_parser("analysis.measure"), None),
}


@dataclass
class Command:
    line: int
    text: str
    tool: str
    args: list[str]


def commands(all_blocks: list[Block]) -> list[Command]:
    """The commands of this project's tools in the bash and unlabelled blocks (see the module's docstring)."""
    found = []
    for block in all_blocks:
        if block.lang not in ("bash", "sh", "shell", "") or block.skip:
            continue
        for offset, line in enumerate(block.code.splitlines()):
            for part in line.split("&&"):
                try:
                    tokens = shlex.split(part, comments=True)
                except ValueError:  # not shell (an output table)
                    continue
                if len(tokens) < 3 or "-m" not in tokens:
                    continue
                program, m = Path(tokens[0]).name, tokens.index("-m")
                if not (program.startswith("python") or program == "torchrun") or m + 1 >= len(tokens):
                    continue
                tool = tokens[m + 1]
                if tool.split(".")[0] in ("ufm", "figures") or tool == "analysis.measure":
                    args = tokens[m + 2:]
                    if program == "torchrun" and args[:1] == ["--"]:
                        args = args[1:]  # torchrun ends its own flags at "--" and passes the rest without it
                    found.append(Command(block.line + offset, part.strip(), tool, args))
    return found


BLOCKS = blocks(README.read_text(encoding="utf-8"))
COMMANDS = commands(BLOCKS)


def check_command(tool: str, args: list[str]) -> str | None:
    """Why the tool refuses these arguments before running (None: it accepts them)."""
    if tool not in PARSERS:
        return f"no parser known for python -m {tool}: add it to PARSERS in tests/test_readme.py"
    build, validate = PARSERS[tool]
    parser = build()
    message: list[str] = []
    parser.exit = lambda status=0, msg=None: (message.append(msg or ""), (_ for _ in ()).throw(SystemExit(status)))
    try:
        parsed = parser.parse_args(args)
    except SystemExit:
        return message[0].strip() if message else "the parser exited"
    if validate is not None and not any(a.endswith((".json", ".toml")) for a in args):
        from ufm.errors import ConfigError

        try:
            validate(parsed)
        except ConfigError as e:
            return str(e)
    return None


@pytest.mark.parametrize("command", COMMANDS, ids=[f"line{c.line}-{c.tool}" for c in COMMANDS])
def test_readme_command_is_accepted_by_its_tool(command):
    why = check_command(command.tool, command.args)
    assert why is None, f"README.md line {command.line}: {command.text!r}: {why}"


def test_the_command_check_has_teeth():
    assert check_command("ufm.simulate", ["--K", "10", "--loss", "mse"]) is None
    assert "--no-such-flag" in check_command("ufm.simulate", ["--K", "10", "--no-such-flag"])
    assert "--loss" in check_command("ufm.simulate", ["--loss", "no_such_loss"])
    assert check_command("ufm.train", ["--dataset", "digits", "--epochs", "-3"]) is not None
    assert "PARSERS" in check_command("ufm.no_such_tool", [])
    assert _stated_number("theory.x()   # 80.77: closed form") == (80.77, 10.0 ** -2)
    assert _stated_number("f()  # 1e-3") == (1e-3, 1e-3) and _stated_number("f()  # sympy: 3") is None
    assert _stated_number("f()  # {'parallel': ~213}") is None
    found = commands(blocks("```bash\npython3 -m venv .venv && .venv/bin/python -m ufm.simulate --K 3  # hi\n"
                            "torchrun --standalone -m ufm.train --epochs 2\n```\n"
                            "<!-- no-test -->\n\n```bash\npython -m ufm.sweep --bogus\n```\n"))
    assert [(c.line, c.tool, c.args) for c in found] == [(2, "ufm.simulate", ["--K", "3"]),
                                                         (3, "ufm.train", ["--epochs", "2"])]


INSTALL_AND_RUN = ("python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e . && "
                   ".venv/bin/python -m ufm.simulate --K 10 --loss mse --wd 5e-4")
INSTALL_AND_TEST = ("python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && "
                    ".venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -n 2")


def test_the_readme_is_short_and_shows_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    bash = [b.code.strip() for b in BLOCKS if b.lang == "bash"]
    assert INSTALL_AND_RUN in bash and INSTALL_AND_TEST in bash  # .ci/run runs the second
    assert {c.tool for c in COMMANDS} >= {"ufm.simulate"} and sum(b.lang == "python" for b in BLOCKS) >= 1


def test_the_readmes_links_into_the_site_exist():
    root = README.parent
    links = re.findall(r"\]\(((?:docs|figures|examples)/[^)#]*)", README.read_text(encoding="utf-8"))
    assert len(links) >= 10 and [link for link in links if not (root / link).exists()] == []


def test_skipped_blocks_are_listed():
    skipped = {b.code.splitlines()[0] for b in BLOCKS if b.skip}
    assert skipped == NO_TEST, "a block marked <!-- no-test --> must be listed in NO_TEST (and only those)"


def _stated_number(source_line: str) -> tuple[float, float] | None:
    """(value, one unit in its last place) of a trailing comment that starts with a number, e.g. `# 80.77: …`."""
    m = re.search(r"#\s*([-+]?\d+(?:\.(\d+))?(?:[eE]([-+]?\d+))?)(?![\w.])", source_line)
    if not m or not source_line[m.start():].lstrip("# ").startswith(m.group(1)):
        return None
    decimals, exponent = len(m.group(2) or ""), int(m.group(3) or 0)
    return float(m.group(1)), 10.0 ** (exponent - decimals)


def run_block(block: Block, namespace: dict, name: str = "README.md") -> int:
    """Execute one python block statement by statement, checking the numbers its comments state; return how
    many it checked. A parse-only block runs its imports alone."""
    lines, checked = block.code.splitlines(), 0
    tree = ast.parse(block.code, filename=f"{name}:{block.line}")
    for node in tree.body:
        where = f"{name} line {block.line + node.lineno - 1}"
        if block.parse_only and not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        stated = _stated_number(lines[node.end_lineno - 1]) if isinstance(node, ast.Expr) else None
        try:
            if stated is None:
                exec(compile(ast.Module([node], []), where, "exec"), namespace)
                continue
            value = eval(compile(ast.Expression(node.value), where, "eval"), namespace)
        except Exception as e:  # the README line is the news
            pytest.fail(f"{where}: {ast.get_source_segment(block.code, node)!r} raised {type(e).__name__}: {e}")
        number, unit = stated
        assert math.isclose(float(value), number, abs_tol=unit * (1 + 1e-9)), \
            f"{where}: the comment says {number}, the code gives {value}"
        checked += 1
    return checked


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    ran = checked = 0
    with torch.random.fork_rng(devices=[]):
        for block in BLOCKS:
            if block.lang == "python" and not block.skip:
                checked += run_block(block, namespace)
                ran += 1
    assert ran >= 1 and checked >= 2  # the closed form's F* and the run's final objective, 0.944308 both
    # the example reaches its target, as the README says
    r = namespace["r"]
    assert r.status == "ok" and r.summary["theory"]["name"] == "ce_etf" and r.summary["converged"]
    assert r.summary["rel_gap"]["loss"] <= 1e-3 and r.summary["certificate"]["certified"]
    assert r.table().splitlines()[-1].startswith("verdict: the run reached the predicted optimum ce_etf")
