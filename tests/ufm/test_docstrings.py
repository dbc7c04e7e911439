"""The docstring examples of the run's theory blocks run, and print what they say."""

import doctest

import pytest

import ufm.checks.minority
import ufm.checks.theory


@pytest.mark.parametrize("module", [ufm.checks.minority, ufm.checks.theory], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
