"""The dependency direction figures → ufm → analysis (DEVELOPERS.md): analysis imports no training code."""

import subprocess
import sys


def imported_after(module):
    code = f"import sys, {module}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_analysis_imports_no_training_or_figures():
    mods = imported_after("analysis.metrics, analysis.theory")
    assert "ufm" not in mods and "figures" not in mods


def test_ufm_does_not_import_figures():
    mods = imported_after("ufm.fit.loop, ufm.simulate")
    assert "figures" not in mods and "matplotlib" not in mods
