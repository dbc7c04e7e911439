"""The layout (DEVELOPERS.md): the dependency direction figures → ufm → analysis, no import cycle inside ufm,
and only the two libraries installed as top-level packages."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imported_after(module):
    code = f"import sys, {module}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_analysis_imports_no_training_or_figures():
    mods = imported_after("analysis, analysis.metrics, analysis.theory, analysis.tracking")
    assert "ufm" not in mods and "figures" not in mods


def test_ufm_does_not_import_figures():
    mods = imported_after("ufm, ufm.fit.loop, ufm.simulate")
    assert "figures" not in mods and "matplotlib" not in mods


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """The ufm modules `path` imports when it is imported (module level; late imports inside functions are
    not import-time edges). `from pkg import name` counts as pkg.name when that is a module, else pkg."""
    modules = {module_name(p) for p in (REPO / "ufm").rglob("*.py")}
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "ufm"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ufm":
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            out |= subs or {node.module}
    return out


def test_no_import_cycle_inside_ufm():
    """Depth-first search over the module-level imports of every ufm module (a package's own __init__ importing
    its submodules and the submodules reading it is Python's normal layout, not an edge here)."""
    graph = {module_name(p): top_level_imports(p) for p in (REPO / "ufm").rglob("*.py")}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph.get(m, ()):
            if n == m or m.startswith(n + ".") and n != "ufm":
                continue  # a submodule reading its own package
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n in graph and state.get(n) is None:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if state.get(m) is None:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles}"
    assert len(graph) > 40  # the walk saw the package


def test_only_ufm_and_analysis_are_installed_as_packages():
    """setuptools' package discovery with the pyproject's patterns finds the two libraries and their
    sub-packages, and nothing under a generic top-level name (figures, benchmarks, examples, tests)."""
    from setuptools import find_packages

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = find_packages(where=str(REPO), include=spec["include"])
    assert {p.split(".")[0] for p in found} == {"analysis", "ufm"}
    assert {"ufm.checks", "ufm.fit", "ufm.losses", "ufm.output", "ufm.cli", "ufm.backbone", "ufm.sweeps"} <= set(found)
