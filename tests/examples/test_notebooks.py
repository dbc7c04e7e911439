"""The example notebooks (examples/*.ipynb) run through examples/execute.py at small sizes and compute the
right numbers; the committed notebooks are valid nbformat 4 and carry their full-size plots; a fresh full-size
run reproduces the outputs stored in them, number by number (one notebook under Jupyter's own executor,
nbclient, the others in process); the executor captures what a cell prints and shows, and names the cell that
fails."""

import json
import math
import os
import re
import tempfile
from pathlib import Path

import pytest
import torch

import ufm
from examples.execute import NotebookError, compare, execute, load, main, notebooks, numbers

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
THEORY_GAP, OWN_LOSS, OWN_NETWORK = "01_ufm_theory_gap.ipynb", "02_your_own_loss.ipynb", "03_nc_of_your_network.ipynb"
EVERY_LAYER = "04_nc_at_every_layer.ipynb"
NAMES = [THEORY_GAP, OWN_LOSS, OWN_NETWORK, EVERY_LAYER]

_runs: dict = {}


def executed(name: str, small: bool = True):
    """Run a notebook once per test session, at small sizes (UFM_EXAMPLES_SMALL=1) unless `small` is False, and
    keep its Execution.

    One torch thread: at these sizes, intra-op threads on a busy 2-core machine only wait on each other
    (measured: up to 10× slower). The global torch RNG and the loss registry are restored afterwards, so the
    notebooks leave no trace in the other tests."""
    key = (name, small)
    if key not in _runs:
        losses = dict(ufm.LOSSES)
        try:
            with torch.random.fork_rng(devices=[]):
                _runs[key] = execute(EXAMPLES / name, small=small, threads=1)
        except Exception as exc:  # kept: the other tests of this notebook fail fast with it
            _runs[key] = exc
        finally:
            ufm.LOSSES.clear()
            ufm.LOSSES.update(losses)
    if isinstance(_runs[key], Exception):
        raise _runs[key]
    return _runs[key]


def test_the_notebooks_are_there():
    assert [p.name for p in notebooks()] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_at_small_size(name):
    r = executed(name)
    assert r.namespace["SMALL"] is True
    assert r.figures >= 1
    code = [c for c in r.notebook["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))


def test_theory_gap_numbers():
    ns = executed(THEORY_GAP).namespace
    assert ns["r"].summary["theory"]["name"] == "ce_etf"
    assert ns["gap"] < 1e-3  # the run's final objective against the closed form
    predicted = ns["predicted"]
    assert math.isclose(ns["F_by_hand"], predicted["loss"], rel_tol=1e-12)
    assert math.isclose(ns["W_norm_sq_by_hand"], predicted["W_norm_sq"], rel_tol=1e-12)
    assert len(ns["sweep"]) == len(ns["lams"]) >= 3
    assert max(abs(m / p - 1) for m, p in zip(ns["measured"], ns["predicted_W"], strict=True)) < 1e-2


def test_own_loss_numbers():
    ns = executed(OWN_LOSS).namespace
    hinge = ns["hinge"]
    assert hinge.status == "ok" and hinge.summary["config"]["loss"] == "sq_hinge"
    assert hinge.final["accuracy"] == 1.0 and hinge.final["nc1"] < 1e-3
    K, c = ns["K"], ns["c"]
    assert math.isclose(ns["closed_form"], K * c - (K * c) ** 2 / 2, rel_tol=1e-12)
    # the same loss by hand and built in: the same gradient descent, to rounding
    assert math.isclose(ns["mine"].final["loss"], ns["builtin"].final["loss"], rel_tol=1e-9)
    if ns["certified_value"] is None:
        pytest.skip(f"registered losses are not certified here: {ns['cert']}")
    assert abs(ns["certified_value"] - ns["closed_form"]) < 1e-8


def test_own_network_numbers():
    ns = executed(OWN_NETWORK).namespace
    assert len(ns["history"]) == ns["epochs"]
    assert {"nc1", "nc2", "nc3", "nc4", "accuracy"} <= set(ns["history"][-1])
    assert ns["max_diff"] < 1e-10  # NCAccumulator over the batches = nc_metrics on the stacked features
    assert sorted(ns["streamed"]) == sorted(ns["stacked"])
    assert not ns["model"].fc._forward_hooks  # the tracker removed its hook


# --- the committed notebooks -------------------------------------------------------------------------------

CELL_KEYS = {"markdown": {"id", "cell_type", "metadata", "source", "attachments"},
             "raw": {"id", "cell_type", "metadata", "source", "attachments"},
             "code": {"id", "cell_type", "metadata", "source", "outputs", "execution_count"}}
OUTPUT_KEYS = {"stream": {"output_type", "name", "text"},
               "display_data": {"output_type", "data", "metadata"},
               "execute_result": {"output_type", "data", "metadata", "execution_count"}}


def is_text(value) -> bool:
    return isinstance(value, str) or isinstance(value, list) and all(isinstance(s, str) for s in value)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_valid_and_shows_its_plots(name):
    """The parts of the nbformat 4.5 schema a notebook here uses, checked by hand (no nbformat dependency),
    and the outputs of a full run: every code cell executed in order, at least one PNG, no error, no
    output that changes from run to run (an object's memory address)."""
    nb = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    assert set(nb) == {"cells", "metadata", "nbformat", "nbformat_minor"}
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5
    assert nb["metadata"]["kernelspec"]["name"] == "python3" and nb["metadata"]["language_info"]["name"] == "python"
    ids = [cell["id"] for cell in nb["cells"]]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", i) for i in ids)
    images, count = 0, 0
    for cell in nb["cells"]:
        kind = cell["cell_type"]
        assert kind in CELL_KEYS and set(cell) <= CELL_KEYS[kind] and {"id", "metadata", "source"} <= set(cell)
        assert is_text(cell["source"]) and isinstance(cell["metadata"], dict)
        if kind != "code":
            continue
        count += 1
        assert cell["execution_count"] == count, f"code cell {count} was not executed in order"
        for out in cell["outputs"]:
            kind = out["output_type"]
            assert kind in OUTPUT_KEYS and set(out) == OUTPUT_KEYS[kind], f"unexpected output {out!r:.200}"
            if kind == "stream":
                assert out["name"] == "stdout" and is_text(out["text"]), "a cell wrote to stderr (a warning?)"
                text = "".join(out["text"])
            else:
                assert isinstance(out["data"], dict) and all(is_text(v) for v in out["data"].values())
                text = "".join(out["data"].get("text/plain", ""))
                images += "image/png" in out["data"]
            assert " at 0x" not in text, f"an output that changes with every run: {text!r:.200}"
    assert count >= 3 and images >= 1, "run `python -m examples.execute --write` to store the plots"


# --- the stored outputs are what a fresh run prints ---------------------------------------------------------

# The tolerance of the comparison: each number a fresh full-size run prints is within
# math.isclose(stored, fresh, rel_tol, abs_tol) of the one stored in the notebook (durations in seconds and the
# pixels of plots are not compared; the text around the numbers must be equal). Float64 parts: rel 1e-6 (the
# digits printed, against rounding that differs with the CPU's vector width), abs 1e-12 (numbers that are
# rounding noise themselves, "largest difference 5.6e-17"). The cells that run the UFM in float32 (the
# default dtype), named below by their code-cell number: rel 1e-4, abs 1e-6. Measured on the machine the
# outputs were stored on, rerun with torch's AVX2 and scalar kernels and MKL's AVX2 and SSE4.2 paths in place
# of AVX-512: the float64 cells agree to 3e-12 (AVX2), the float32 ones to rel 1e-6 above 1e-6 (near-zero
# values such as nc1 = 5.8e-15 against 4.9e-15, relative gaps 1.2e-06 against 1.3e-06, differ by less than
# 1e-7); 1 and 2 threads give the same digits.
FLOAT64 = (1e-6, 1e-12)
FLOAT32 = (1e-4, 1e-6)
FLOAT32_CELLS = {THEORY_GAP: (2, 5), OWN_LOSS: (2,), OWN_NETWORK: (), EVERY_LAYER: ()}  # 3 and 4 train in float64
IN_JUPYTER = OWN_NETWORK  # the one notebook run under nbclient: Jupyter's executor is the reference


def executed_in_jupyter(path: Path) -> dict:
    """Run a notebook at full size under nbclient (a real ipykernel) in a fresh temporary directory; the kernel
    inherits this process's environment (one thread, UFM_EXAMPLES_SMALL unset) and the notebook is seeded."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    env = os.environ.pop("UFM_EXAMPLES_SMALL", None)
    try:
        with tempfile.TemporaryDirectory(prefix="ufm-example-") as workdir:
            client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600, record_timing=False,
                                             resources={"metadata": {"path": workdir}})
            client.execute()
    finally:
        if env is not None:
            os.environ["UFM_EXAMPLES_SMALL"] = env
    return nb


@pytest.mark.parametrize("name", NAMES)
def test_a_fresh_run_reproduces_the_stored_outputs(name):
    """The committed outputs tell the truth: a full-size rerun prints the same numbers (to the tolerance above).
    After a change that moves them: `python -m examples.execute --write`."""
    stored = load(EXAMPLES / name)
    fresh = executed_in_jupyter(EXAMPLES / name) if name == IN_JUPYTER else executed(name, small=False).notebook
    problems = compare(stored, fresh, rel_tol=FLOAT64[0], abs_tol=FLOAT64[1],
                       cells={count: FLOAT32 for count in FLOAT32_CELLS[name]})
    assert not problems, "\n".join([f"{name}: a fresh run differs from the stored outputs "
                                    "(regenerate them with `python -m examples.execute --write`):", *problems])


def test_the_stored_run_table_ends_with_its_verdict():
    """The table a run prints ends with the verdict line; the stored outputs are of the current code."""
    for name in (THEORY_GAP, OWN_LOSS):
        code = [c for c in load(EXAMPLES / name)["cells"] if c["cell_type"] == "code"]
        printed = "".join("".join(o["text"]) for o in code[1]["outputs"] if o["output_type"] == "stream")
        assert "\nverdict: " in printed, name


def cell(*texts: str) -> dict:
    return {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": t} for t in texts]}


def test_compare_checks_every_number_to_its_tolerance_and_the_text_exactly():
    assert numbers("nc1 2.523e-09 at step 316. 5000 steps in 5.1 s (fista, 0.24 s); K=10, 1100x400") == (
        "nc1 # at step # # steps in <time> s (fista, <time> s); K=#, 1100x400", [2.523e-09, 316.0, 5000.0, 10.0])
    stored = {"cells": [cell("F = 0.282398, ‖W‖² 472.704\n", "gap 2.9e-15\n"), cell("3 steps in 5.6 s\n")]}
    same = {"cells": [cell("F = 0.2823980001, ‖W‖² 472.704\ngap 3.1e-15\n"), cell("3 steps in 49.2 s\n")]}
    assert compare(stored, same) == []  # streams joined; 3.5e-10 relative; 2e-16 absolute; a time
    off = {"cells": [cell("F = 0.9950, ‖W‖² 472.704\ngap 2.9e-15\n"), cell("3 steps in 5.6 s\n")]}
    assert compare(stored, off) == ["code cell 1: 0.282398 stored, 0.995 now (relative difference 7.2e-01 > 1e-06) "
                                    "in: F = 0.9950, ‖W‖² 472.704"]
    assert compare(stored, off, cells={1: (1.0, 0.0)}) == []
    worded = {"cells": [cell("F = 0.282398, ‖W‖² 472.704\ngap 2.9e-15\nverdict: ok\n"), cell("3 steps in 1 s\n")]}
    assert compare(stored, worded) == ["code cell 1: 2 lines of output stored, 3 now"]
    figure = {"cells": [stored["cells"][0], {"cell_type": "code", "outputs": [
        {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}, "metadata": {}}]}]}
    assert compare(stored, figure) == ["code cell 2: outputs ['stream stdout'] stored, ['display_data'] now"]
    assert compare(stored, {"cells": stored["cells"][:1]}) == ["2 code cells stored, 1 now"]


# --- the executor --------------------------------------------------------------------------------------------

def write_notebook(path: Path, *sources: str) -> Path:
    cells = [{"cell_type": "markdown", "id": "intro", "metadata": {}, "source": ["# A test\n"]}]
    cells += [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": s.splitlines(keepends=True),
               "execution_count": None, "outputs": []} for i, s in enumerate(sources)]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                      "language": "python"}, "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_executor_captures_and_writes_outputs(tmp_path, capsys):
    path = write_notebook(
        tmp_path / "demo.ipynb",
        "import os\nimport matplotlib.pyplot as plt\nprint('small', os.environ.get('UFM_EXAMPLES_SMALL'))\n"
        "open('scratch.txt', 'w').write('x')\nprint(os.getcwd())",
        "plt.plot([1, 2])\nplt.show()\nprint('after the first figure')\nplt.figure()\nplt.plot([2, 1]);",
        "1 + 2",
        "1 + 2;",
    )
    assert main([str(path), "--write"]) == 0
    assert "demo.ipynb: 4 code cells, 2 figures" in capsys.readouterr().out
    cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in cells] == [1, 2, 3, 4]
    first = "".join(cells[0]["outputs"][0]["text"])
    assert first.startswith("small None\n")
    workdir = Path(first.splitlines()[1])
    assert workdir != REPO and not workdir.exists() and not (REPO / "scratch.txt").exists()
    kinds = [(o["output_type"], o.get("name")) for o in cells[1]["outputs"]]
    assert kinds == [("display_data", None), ("stream", "stdout"), ("display_data", None)]  # in the order shown
    assert all(o["data"]["image/png"] for o in cells[1]["outputs"] if o["output_type"] == "display_data")
    assert cells[2]["outputs"] == [{"output_type": "execute_result", "execution_count": 3,
                                    "data": {"text/plain": ["3"]}, "metadata": {}}]
    assert cells[3]["outputs"] == []
    with pytest.raises(SystemExit):  # small outputs are never written into a notebook
        main([str(path), "--small", "--write"])


def test_executor_names_the_failing_cell(tmp_path):
    path = write_notebook(tmp_path / "broken.ipynb", "x = 1", "print('before')\ny = x / 0")
    threads, cwd, env = torch.get_num_threads(), os.getcwd(), os.environ.get("UFM_EXAMPLES_SMALL")
    with pytest.raises(NotebookError, match=r"broken\.ipynb: cell 3 \(code cell 2\) raised ZeroDivisionError"
                                            r"(.|\n)*before") as info:
        execute(path, small=True, threads=threads + 1)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert (torch.get_num_threads(), os.getcwd(), os.environ.get("UFM_EXAMPLES_SMALL")) == (threads, cwd, env)
