#!/usr/bin/env bash
# CI: build the wheel, install it into a fresh virtual environment (torch first, so pip keeps that build), and
# run the main job from outside the checkout: the installed package must carry everything it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ufm-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$PY" -m pip wheel . --no-deps -q -w "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/ufm-*.whl)
# the wheel's files: the two libraries, their data and markers, the licences; no figures/benchmarks/tests
"$PY" - "$WHEEL" <<'PYEOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = {"ufm/__init__.py", "ufm/py.typed", "analysis/py.typed", "ufm/cli/simulate.py",
        "analysis/hierarchies/cifar100.json", "analysis/hierarchies/fgvc_aircraft.json",
        "analysis/hierarchies/inaturalist19.json", "analysis/hierarchies/tiered_imagenet_h.json"}
missing = sorted(need - names)
licences = {n.rsplit("/", 1)[-1] for n in names if ".dist-info/licenses/" in n}
stray = sorted(n for n in names if n.split("/")[0] in ("figures", "benchmarks", "tests", "examples", "scripts"))
if missing or stray or licences != {"LICENSE", "DATA.md"}:
    sys.exit(f"wheel check: missing {missing}, stray {stray}, licences {sorted(licences)}")
print(f"wheel check: {len(names)} files, {sys.argv[1].rsplit('/', 1)[-1]}")
PYEOF

"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q torch==2.13.0
"$WORK/venv/bin/pip" install -q "$WHEEL"
cd "$WORK"  # outside the checkout: only the installed package can be imported
VERSION=$("$WORK/venv/bin/python" -c "import ufm, analysis; print(ufm.__version__)")
test "$("$WORK/venv/bin/ufm-simulate" --version)" = "$VERSION"
"$WORK/venv/bin/python" -c "import ufm, sys; assert not ufm.__file__.startswith(sys.argv[1]), ufm.__file__" "$REPO"
"$WORK/venv/bin/ufm-simulate" --K 4 --n 5 --d 6 --steps 50 --quiet --out RUN
test -s RUN/summary.json
"$WORK/venv/bin/python" -c "from analysis.hierarchy import load; assert load('cifar100').K == 100"
echo "wheel check: ufm $VERSION installed from the wheel ran the main job in $WORK"
