"""The docstring examples of the public API and of the run's theory blocks run, and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["ufm", "ufm.api", "ufm.config", "ufm.problem", "ufm.losses.config", "ufm.losses.registry", "ufm.checks",
           "ufm.checks.milestones", "ufm.checks.minority", "ufm.checks.theory", "ufm.output.format", "ufm.sweeps.grid",
           "ufm.atlas", "ufm.losses.contrastive", "ufm.model", "ufm.fit.measure"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
