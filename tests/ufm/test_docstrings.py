"""The docstring examples of the run's theory blocks run, and print what they say."""

import doctest

import pytest

import ufm.minority
import ufm.targets


@pytest.mark.parametrize("module", [ufm.minority, ufm.targets], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
