"""Regenerate a bundled class tree (analysis/hierarchies/NAME.json) from a local copy of its public source.

There is no network here: download the source first (DATA.md says from where), then point this at the copy.

  python scripts/regenerate_trees.py cifar100 --tree cifar_100_tree_pretty_print.txt \\
      --meta cifar-100-python/meta --out analysis/hierarchies/cifar100.json
  python scripts/regenerate_trees.py isa --isa inaturalist19_isa.txt --dataset inaturalist19 \\
      --out analysis/hierarchies/inaturalist19.json
  python scripts/regenerate_trees.py isa --isa tiered_imagenet_isa.txt --dataset tiered_imagenet_h \\
      --out analysis/hierarchies/tiered_imagenet_h.json
  python scripts/regenerate_trees.py fgvc --annotations fgvc-aircraft-2013b/data --out fgvc_aircraft.json

- cifar100: the levels above the 20 superclasses (L1-*, L2-*, L3-*) and which fine class sits under which
  superclass from HAFrame's data/cifar-l5/original/cifar_100_tree_pretty_print.txt (nodes L4-c = superclass c,
  L5-f = fine label f); the names from the CIFAR-100 python archive's `meta` file (fine_label_names,
  coarse_label_names). Byte-identical to the bundled file.
- isa: an "is-a" edge list, one "parent child" pair a line (making-better-mistakes' data/*_isa.txt); children
  keep the order of their first line. Byte-identical to the bundled inaturalist19 / tiered_imagenet_h files.
- fgvc: FGVC-Aircraft's own annotations (images_variant_*.txt, images_family_*.txt,
  images_manufacturer_*.txt joined by image id), children in the order of variants.txt, families.txt and
  manufacturers.txt. The same tree as the bundled file (every node under the same parent); the bundled file
  keeps the child order of HAFrame's pickle, so the leaf (class) order differs.

Exit 0 on success, 2 with one line on stderr on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
DEPTH_FIRST = ("depth-first order of the leaves as stored (the dataset's own label order is not part of this "
               "file)")
CIFAR_ORDER = ("leaf 'label' = CIFAR-100 fine label index; level-4 nodes are the 20 CIFAR-100 superclasses "
               "('coarse_label')")


class BadSource(ValueError):
    """A source file that is not what this script reads."""


class _NoGlobals(pickle.Unpickler):
    """CIFAR-100's `meta` holds only a dict of lists of strings: refuse every global, so a pickle that is
    something else cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise BadSource(f"the meta file refers to {module}.{name}: not CIFAR-100's meta (a dict of name lists)")


def _height(node: dict[str, Any]) -> int:
    return 0 if "children" not in node else 1 + max(_height(c) for c in node["children"])


def _leaves(node: dict[str, Any]) -> int:
    return 1 if "children" not in node else sum(_leaves(c) for c in node["children"])


def cifar100(tree_txt: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The CIFAR-100 tree from HAFrame's pretty print (the structure) and the dataset's meta (the names)."""
    fine = meta.get("fine_label_names", meta.get(b"fine_label_names"))
    coarse = meta.get("coarse_label_names", meta.get(b"coarse_label_names"))
    if not isinstance(fine, list) or not isinstance(coarse, list) or len(fine) != 100 or len(coarse) != 20:
        raise BadSource("the meta file has no fine_label_names (100) and coarse_label_names (20)")
    fine = [n.decode() if isinstance(n, bytes) else str(n) for n in fine]
    coarse = [n.decode() if isinstance(n, bytes) else str(n) for n in coarse]
    stack: list[dict[str, Any]] = []
    root: dict[str, Any] | None = None
    for number, line in enumerate(tree_txt.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        depth, name = len(tokens) - 1, tokens[-1]
        if depth > len(stack) or (depth == 0) != (root is None):
            raise BadSource(f"line {number}: {line.strip()!r} is not a node of an indented tree")
        if name.startswith("L5-"):
            node: dict[str, Any] = {"name": fine[int(name[3:])], "label": int(name[3:])}
        elif name.startswith("L4-"):
            node = {"name": coarse[int(name[3:])], "children": [], "coarse_label": int(name[3:])}
        else:
            node = {"name": name, "children": []}
        del stack[depth:]
        if depth == 0:
            root = node
        else:
            stack[-1].setdefault("children", []).append(node)
        stack.append(node)
    if root is None:
        raise BadSource("the tree file is empty")
    labels = sorted(_labels(root))
    if labels != list(range(100)):
        raise BadSource(f"the tree has {len(labels)} fine labels, not each of 0..99 once")
    return {"dataset": "CIFAR-100", "height": _height(root), "classes": 100, "leaf_order": CIFAR_ORDER,
            "tree": _key_order(root)}


def _labels(node: dict[str, Any]) -> list[int]:
    if "children" not in node:
        return [node["label"]]
    return [x for c in node["children"] for x in _labels(c)]


def _key_order(node: dict[str, Any]) -> dict[str, Any]:
    """name, children, then the rest (the bundled files' key order)."""
    out: dict[str, Any] = {"name": node["name"]}
    if "children" in node:
        out["children"] = [_key_order(c) for c in node["children"]]
    out.update({k: v for k, v in node.items() if k not in ("name", "children")})
    return out


def from_isa(text: str, dataset: str) -> dict[str, Any]:
    """A tree from "parent child" lines, children in the order of their first line."""
    children: dict[str, list[str]] = {}
    parent: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise BadSource(f"line {number}: expected 'parent child', got {line.strip()!r}")
        p, c = parts
        if c in parent and parent[c] != p:
            raise BadSource(f"line {number}: {c} has two parents, {parent[c]} and {p}")
        if c not in parent:
            parent[c] = p
            children.setdefault(p, []).append(c)
    roots = [p for p in children if p not in parent]
    if len(roots) != 1:
        raise BadSource(f"expected one root, found {len(roots)}: {', '.join(roots[:5])}")

    def build(name: str, seen: frozenset[str]) -> dict[str, Any]:
        if name in seen:
            raise BadSource(f"a cycle through {name}")
        if name not in children:
            return {"name": name}
        return {"name": name, "children": [build(c, seen | {name}) for c in children[name]]}

    tree = build(roots[0], frozenset())
    return {"dataset": dataset, "height": _height(tree), "classes": _leaves(tree), "leaf_order": DEPTH_FIRST,
            "tree": tree}


def fgvc(folder: Path) -> dict[str, Any]:
    """FGVC-Aircraft's manufacturer → family → variant tree from its annotation files."""
    def names(level: str) -> list[str]:
        path = folder / f"{level}.txt"
        if not path.is_file():
            raise BadSource(f"{path}: no such file (the data/ folder of fgvc-aircraft-2013b)")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def labels(level: str) -> dict[str, str]:
        out: dict[str, str] = {}
        files = sorted(folder.glob(f"images_{level}_*.txt"))
        if not files:
            raise BadSource(f"{folder}: no images_{level}_*.txt")
        for path in files:
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    image, _, label = line.strip().partition(" ")
                    out[image] = label
        return out

    order = {level: names(level) for level in ("manufacturers", "families", "variants")}
    by_image = {level: labels(level) for level in ("manufacturer", "family", "variant")}
    up: dict[str, dict[str, str]] = {"variant": {}, "family": {}}
    for image, variant in by_image["variant"].items():
        family, maker = by_image["family"].get(image), by_image["manufacturer"].get(image)
        if family is None or maker is None:
            raise BadSource(f"image {image} has a variant but no family or manufacturer")
        for child, par, level in ((variant, family, "variant"), (family, maker, "family")):
            if up[level].setdefault(child, par) != par:
                raise BadSource(f"{level} {child} is under both {up[level][child]} and {par}")
    tree: dict[str, Any] = {"name": "unknown", "children": []}
    for maker in order["manufacturers"]:
        m = {"name": f"m-{maker}", "children": []}
        for family in (f for f in order["families"] if up["family"].get(f) == maker):
            f = {"name": f"f-{family}", "children": [{"name": f"v-{v}"} for v in order["variants"]
                                                        if up["variant"].get(v) == family]}
            m["children"].append(f)
        tree["children"].append(m)
    return {"dataset": "fgvc_aircraft", "height": _height(tree), "classes": _leaves(tree),
            "leaf_order": DEPTH_FIRST, "tree": tree}


def dumps(obj: dict[str, Any]) -> str:
    """The bundled files' formatting: cifar100.json indented by one space, the others on one line."""
    return json.dumps(obj, indent=1 if obj["dataset"] == "CIFAR-100" else None)


def write(path: Path, text: str) -> None:
    """Atomically: a temporary file in the same folder, then renamed over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/regenerate_trees.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="source", required=True)
    c = sub.add_parser("cifar100", help="CIFAR-100 (HAFrame's five-level tree, the dataset's names)")
    c.add_argument("--tree", type=Path, required=True, help="HAFrame's cifar_100_tree_pretty_print.txt")
    c.add_argument("--meta", type=Path, required=True, help="the `meta` file of cifar-100-python.tar.gz")
    i = sub.add_parser("isa", help="an is-a edge list (making-better-mistakes' data/*_isa.txt)")
    i.add_argument("--isa", type=Path, required=True, help="the edge list, one 'parent child' a line")
    i.add_argument("--dataset", required=True, help="the name stored in the file (inaturalist19, ...)")
    f = sub.add_parser("fgvc", help="FGVC-Aircraft from its own annotation files")
    f.add_argument("--annotations", type=Path, required=True, help="the data/ folder of fgvc-aircraft-2013b")
    for q in (c, i, f):
        q.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = p.parse_args(argv)
    try:
        if not args.out.parent.is_dir():
            raise BadSource(f"--out {args.out}: no such folder {args.out.parent}")
        if args.source == "cifar100":
            with open(args.meta, "rb") as fh:
                meta = _NoGlobals(fh, encoding="latin1").load()
            if not isinstance(meta, dict):
                raise BadSource(f"--meta {args.meta}: not a dict of name lists")
            obj = cifar100(args.tree.read_text(encoding="utf-8"), meta)
        elif args.source == "isa":
            obj = from_isa(args.isa.read_text(encoding="utf-8"), args.dataset)
        else:
            obj = fgvc(args.annotations)
        write(args.out, dumps(obj))
    except (ValueError, IndexError, OSError, pickle.UnpicklingError, EOFError) as e:  # BadSource is a ValueError
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.out}: {obj['classes']} classes, height {obj['height']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
