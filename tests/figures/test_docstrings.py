"""The docstring examples of every figures module run, and print what they say (none has any yet: this runs the
first one written)."""

import pytest

from tests.doctest_modules import module_names, run_examples


@pytest.mark.parametrize("name", module_names("figures"))
def test_docstring_examples(name):
    failed, attempted, report = run_examples(name)
    assert failed == 0, f"{failed} of {attempted} examples failed in {name}:\n{report}"
