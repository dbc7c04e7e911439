"""One version, ufm.__version__: `--version` on every command line prints exactly it, and the console scripts
(ufm-simulate, ufm-sweep, ufm-train, ufm-atlas) point at the same mains as python -m."""

import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import ufm

REPO = Path(__file__).resolve().parents[1]
MAINS = ["ufm.cli.simulate", "ufm.cli.train", "ufm.cli.sweep", "ufm.atlas", "analysis.measure", "figures.__main__",
         "figures.history", "figures.layers"]
SCRIPTS = {"ufm-simulate": "ufm.cli.simulate:main", "ufm-sweep": "ufm.cli.sweep:main",
           "ufm-train": "ufm.cli.train:main", "ufm-atlas": "ufm.atlas:main"}


def test_python_m_ufm_simulate_version_is_ufm_version():
    r = subprocess.run([sys.executable, "-m", "ufm.simulate", "--version"], capture_output=True, text=True,
                       cwd=REPO)
    assert (r.returncode, r.stdout, r.stderr) == (0, ufm.__version__ + "\n", "")


@pytest.mark.parametrize("module", MAINS)
def test_every_command_line_prints_the_version(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    out, err = capsys.readouterr()
    assert (exit_.value.code, out, err) == (0, ufm.__version__ + "\n", "")


def test_figures_layers_subcommand_prints_the_version(capsys):
    from figures.__main__ import main

    with pytest.raises(SystemExit):
        main(["layers", "--version"])
    assert capsys.readouterr().out == ufm.__version__ + "\n"


def test_console_scripts_point_at_the_python_m_mains():
    """pyproject's [project.scripts] and the installed metadata (pip install -e . or the wheel) agree, and each
    names a callable that exists: python -m ufm.simulate and ufm-simulate run the same main."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert declared == SCRIPTS
    # every installed copy's metadata (a stale ufm.egg-info left in the checkout by a build shadows the
    # installed one in metadata.entry_points(), which keeps the first distribution of a name)
    installed = {ep.name: ep for dist in metadata.distributions() if dist.metadata["Name"] == "ufm"
                 for ep in dist.entry_points if ep.group == "console_scripts" and ep.name in SCRIPTS}
    assert {name: ep.value for name, ep in installed.items()} == SCRIPTS
    for name, ep in installed.items():
        assert callable(ep.load()), name
    assert installed["ufm-simulate"].load() is importlib.import_module("ufm.simulate").main
