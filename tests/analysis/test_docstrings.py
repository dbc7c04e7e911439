"""The docstring examples of the certificate and the closed forms run, and print what they say."""

import doctest

import pytest

import analysis.certificate
import analysis.nuclear_program
import analysis.sphere
import analysis.theory


@pytest.mark.parametrize("module", [analysis.certificate, analysis.nuclear_program, analysis.sphere, analysis.theory],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
