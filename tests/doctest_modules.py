"""The modules whose docstring examples the tests run: every module of a package, found by walking it (so a new
module's examples run without being listed anywhere), less the `__main__` modules (importing one starts a program).
A module without examples passes; the ufm and analysis test files also check that their examples are many, so a
discovery that found nothing cannot pass silently."""

import doctest
import importlib
import io
import pkgutil

OPTIONS = doctest.ELLIPSIS


def module_names(package: str) -> list[str]:
    """The package and every module and sub-package under it, by name, `__main__` modules left out."""
    def unimportable(name):
        raise ImportError(f"cannot import {name} while looking for docstring examples")

    root = importlib.import_module(package)
    found = [info.name for info in pkgutil.walk_packages(root.__path__, f"{package}.", onerror=unimportable)]
    return sorted(name for name in [package, *found] if name.rpartition(".")[2] != "__main__")


def docstrings(name: str) -> list[doctest.DocTest]:
    """The docstrings of the module `name` (and of what it defines) that hold examples."""
    return [test for test in doctest.DocTestFinder().find(importlib.import_module(name)) if test.examples]


def run_examples(name: str) -> tuple[int, int, str]:
    """Run the examples of module `name`: (failed, attempted, the report of each failure)."""
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in docstrings(name):
        runner.run(test, out=report.write)
    return runner.failures, runner.tries, report.getvalue()


def assert_examples_pass(name: str) -> None:
    """Run module `name`'s examples; fail with doctest's report of each failure."""
    failed, attempted, report = run_examples(name)
    assert failed == 0, f"{failed} of {attempted} examples failed in {name}:\n{report}"


def count_examples(package: str) -> int:
    """The number of examples in all the package's modules (none is run)."""
    return sum(len(test.examples) for name in module_names(package) for test in docstrings(name))
