"""The docstring examples of every analysis module run, and print what they say."""

import pytest

from tests.doctest_modules import count_examples, module_names, run_examples


@pytest.mark.parametrize("name", module_names("analysis"))
def test_docstring_examples(name):
    failed, attempted, report = run_examples(name)
    assert failed == 0, f"{failed} of {attempted} examples failed in {name}:\n{report}"


def test_the_examples_are_found():
    assert count_examples("analysis") > 50
