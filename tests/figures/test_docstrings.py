"""The docstring examples of every figures module run, and print what they say (none has any yet: this runs the
first one written)."""

import pytest

from tests.doctest_modules import assert_examples_pass, module_names


@pytest.mark.parametrize("name", module_names("figures"))
def test_docstring_examples(name):
    assert_examples_pass(name)
