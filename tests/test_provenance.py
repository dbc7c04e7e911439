"""LICENSE, DATA.md and scripts/regenerate_trees.py: every bundled class tree is named in DATA.md, and the
script rebuilds each tree from a source file in its upstream format (written here from the bundled tree, as
there is no network: the real files are named in DATA.md)."""

import importlib.util
import json
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TREES = REPO / "analysis" / "hierarchies"


def _script():
    spec = importlib.util.spec_from_file_location("regenerate_trees", REPO / "scripts" / "regenerate_trees.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


regen = _script()


def _bundled(name):
    return json.loads((TREES / f"{name}.json").read_text(encoding="utf-8"))


def _edges(node, out=None):
    out = set() if out is None else out
    for c in node.get("children", ()):
        out.add((node["name"], c["name"]))
        _edges(c, out)
    return out


def _preorder_lines(node):
    for c in node.get("children", ()):
        yield f"{node['name']} {c['name']}"
        yield from _preorder_lines(c)


def test_license_is_mit_for_the_ufm_authors():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the ufm authors" in text


def test_data_md_names_every_bundled_tree_and_its_source():
    data = (REPO / "DATA.md").read_text()
    for path in sorted(TREES.glob("*.json")):
        assert f"analysis/hierarchies/{path.name}" in data
    for source in ("ltong1130ztr/HAFrame", "fiveai/making-better-mistakes", "cs.toronto.edu/~kriz/cifar.html",
                   "fgvc-aircraft", "inat_comp", "scripts/regenerate_trees.py"):
        assert source in data, source


@pytest.mark.parametrize("name", ["inaturalist19", "tiered_imagenet_h"])
def test_an_isa_edge_list_gives_back_the_bundled_file_byte_for_byte(tmp_path, name):
    bundled = _bundled(name)
    isa = tmp_path / f"{name}_isa.txt"
    isa.write_text("\n".join(_preorder_lines(bundled["tree"])) + "\n")
    out = tmp_path / f"{name}.json"
    assert regen.main(["isa", "--isa", str(isa), "--dataset", name, "--out", str(out)]) == 0
    assert out.read_bytes() == (TREES / f"{name}.json").read_bytes()


def _pretty_print(node, depth=0, lines=None):
    """HAFrame's cifar_100_tree_pretty_print.txt layout: '|' per open level, '-' before the node, L4-c / L5-f."""
    lines = [] if lines is None else lines
    name = (f"L5-{node['label']}" if "label" in node else f"L4-{node['coarse_label']}" if "coarse_label" in node
            else node["name"])
    lines.append("".join(f"{t:<13}" for t in ["|"] * (depth - 1) + ["-"] * (depth > 0) + [name]))
    for c in node.get("children", ()):
        _pretty_print(c, depth + 1, lines)
    return lines


def test_cifar100_from_hafframe_tree_and_the_dataset_meta_gives_back_the_bundled_file(tmp_path):
    bundled = _bundled("cifar100")
    fine, coarse = [""] * 100, [""] * 20

    def names(node):
        if "label" in node:
            fine[node["label"]] = node["name"]
        if "coarse_label" in node:
            coarse[node["coarse_label"]] = node["name"]
        for c in node.get("children", ()):
            names(c)

    names(bundled["tree"])
    assert fine[0] == "apple" and coarse[0] == "aquatic_mammals"  # the dataset's own alphabetical order
    tree = tmp_path / "cifar_100_tree_pretty_print.txt"
    tree.write_text("\n".join(_pretty_print(bundled["tree"])))
    meta = tmp_path / "meta"
    meta.write_bytes(pickle.dumps({"fine_label_names": fine, "coarse_label_names": coarse}, protocol=2))
    out = tmp_path / "cifar100.json"
    assert regen.main(["cifar100", "--tree", str(tree), "--meta", str(meta), "--out", str(out)]) == 0
    assert out.read_bytes() == (TREES / "cifar100.json").read_bytes()


def test_fgvc_from_the_dataset_annotations_gives_the_bundled_tree(tmp_path):
    bundled = _bundled("fgvc_aircraft")
    rows = [(m["name"][2:], f["name"][2:], v["name"][2:]) for m in bundled["tree"]["children"]
            for f in m["children"] for v in f["children"]]
    assert len(rows) == 100
    rng = random.Random(0)
    rng.shuffle(rows)  # the dataset's own order, not the bundled file's
    for level, i in (("manufacturers", 0), ("families", 1), ("variants", 2)):
        (tmp_path / f"{level}.txt").write_text("\n".join(dict.fromkeys(r[i] for r in rows)) + "\n")
    for split in ("trainval", "test"):
        for level, i in (("manufacturer", 0), ("family", 1), ("variant", 2)):
            lines = [f"{1000 * k + j:07d} {r[i]}" for k, r in enumerate(rows) for j in range(2)
                     if (j == 0) == (split == "trainval")]
            (tmp_path / f"images_{level}_{split}.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "fgvc_aircraft.json"
    assert regen.main(["fgvc", "--annotations", str(tmp_path), "--out", str(out)]) == 0
    made = json.loads(out.read_text())
    assert _edges(made["tree"]) == _edges(bundled["tree"])
    assert (made["height"], made["classes"], made["tree"]["name"]) == (3, 100, "unknown")


def test_bad_sources_are_one_line_and_exit_2(tmp_path):
    isa = tmp_path / "two_roots.txt"
    isa.write_text("a b\nc d\n")
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "regenerate_trees.py"), "isa", "--isa", str(isa),
                        "--dataset", "x", "--out", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "expected one root, found 2: a, c" in r.stderr
    meta = tmp_path / "meta"
    meta.write_bytes(pickle.dumps({"fine_label_names": [Path("x")]}))  # a global: refused, not loaded
    tree = tmp_path / "tree.txt"
    tree.write_text("root\n")
    assert regen.main(["cifar100", "--tree", str(tree), "--meta", str(meta), "--out", str(tmp_path / "c.json")]) == 2
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "x.json").exists()
