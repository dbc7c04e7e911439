"""The docstring examples of every analysis module run, and print what they say."""

import pytest

from tests.doctest_modules import assert_examples_pass, count_examples, module_names


@pytest.mark.parametrize("name", module_names("analysis"))
def test_docstring_examples(name):
    assert_examples_pass(name)


def test_the_examples_are_found():
    assert count_examples("analysis") > 50
