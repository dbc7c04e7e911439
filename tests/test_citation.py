"""CITATION.cff: valid against the Citation File Format 1.2.0 schema (vendored: tests/cff-schema-1.2.0.json,
see DATA.md; cffconvert itself pins jsonschema < 4), and its version is ufm.__version__."""

import json
import sys
from pathlib import Path

import jsonschema
import yaml

import ufm

REPO = Path(__file__).resolve().parents[1]


def _cff():
    return yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))


def _validator():
    schema = json.loads((Path(__file__).parent / "cff-schema-1.2.0.json").read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


def test_citation_cff_validates_against_the_cff_1_2_0_schema():
    cff = _cff()
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in _validator().iter_errors(cff)]
    assert errors == []
    assert cff["cff-version"] == "1.2.0" and cff["authors"] == [{"name": "the ufm authors"}]
    assert cff["license"] == "MIT" and len(cff["references"]) == 5


def test_the_schema_check_refuses_a_broken_file():
    """The check has teeth: a missing title and a date that is not YYYY-MM-DD are each an error."""
    cff = _cff()
    del cff["title"]
    cff["date-released"] = "yesterday"
    messages = " | ".join(e.message for e in _validator().iter_errors(cff))
    assert "'title' is a required property" in messages
    assert "yesterday" in messages


def test_citation_version_is_ufm_version():
    assert str(_cff()["version"]) == ufm.__version__


def test_the_version_is_written_once():
    """pyproject reads ufm.__version__ (no version of its own); CITATION.cff repeats it, checked above."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ufm.__version__"}

