"""NC of saved features: `python -m analysis.measure FILE…`, and the library functions behind it.

The metrics are `analysis.metrics.nc_metrics`'s (NC1–NC4 and companions, Papyan, Han & Donoho 2020), computed by
`analysis.metrics.nc_metrics_streaming` one block of rows at a time; nothing is re-derived here.

- `measure_files(paths)` / `measure_saved(open_features(paths))`: one row per file of features (.npz, .pt, .npy;
  `concat=True` / `--concat`: all of them as one data set). The keys, the .npy companions and the memory-mapped
  blocks of rows: `analysis.saved_features` (the reading itself: `analysis.array_files`).
- `measure_checkpoints(paths, model, data, layer)`: one row per checkpoint of a network, its penultimate features
  hooked (`analysis.checkpoints`: the folder, the factories, the state dicts).
- With OOD features (`ood`): `nc5` (`analysis.ood.nc5`; Ammar et al. 2024, NECO) and the separation of ID and OOD
  features (`analysis.ood`'s OOD_KEYS: ood_auroc_nearest_mean, ood_auroc_max_logit, ood_distance_ratio); the ID
  scores are taken during the second pass over the ID data, so those are read twice in all.
- The rows (`Measurement`) as a table (`format_table`) and as JSON (`write_json`): `analysis.measurements`.

>>> import os, tempfile
>>> import numpy as np
>>> from analysis.metrics import nc_metrics
>>> rng = np.random.default_rng(0)
>>> y = np.arange(30) % 3
>>> H = 4 * np.eye(3, 5)[y] + rng.normal(size=(30, 5))
>>> path = os.path.join(tempfile.mkdtemp(), "feats.npz")
>>> np.savez(path, features=H, labels=y)
>>> [row] = measure_files([path], block_rows=7)
>>> row.N, row.K, row.d
(30, 3, 5)
>>> abs(row.metrics["nc1"] - nc_metrics(H, y)["nc1"]) < 1e-12
True
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from analysis.array_files import MeasureError
from analysis.checkpoints import CHECKPOINT_SUFFIXES as CHECKPOINT_SUFFIXES
from analysis.checkpoints import STATE_KEYS as STATE_KEYS
from analysis.checkpoints import HookedModel, checkpoint_files
from analysis.measurements import DEFAULT_COLUMNS as DEFAULT_COLUMNS
from analysis.measurements import Measurement, format_table, table_columns, write_json
from analysis.metrics import GLOBAL_MEANS, MISSING, SIDES, class_sums, nc_metrics_streaming
from analysis.metrics import METRIC_KEYS as METRIC_KEYS
from analysis.ood import OOD_KEYS, OODScores, nc5, ood_metrics
from analysis.ood import auroc as _auroc  # noqa: F401  (importable from here, as before analysis.ood held it)
from analysis.saved_features import (
    ALIASES,
    SavedFeatures,
    checked,
    class_counts,
    default_rows,
    label_range,
    open_features,
    row_ranges,
    tensor_block,
)
from analysis.saved_features import COMPANIONS as COMPANIONS
from analysis.saved_features import DEFAULT_BLOCK_BYTES as DEFAULT_BLOCK_BYTES

__all__ = [
    "ALIASES", "MeasureError", "Measurement", "SavedFeatures", "OOD_KEYS", "open_features", "measure_saved",
    "measure_files", "checkpoint_files", "measure_checkpoints", "format_table", "write_json", "main",
]

EXIT_BAD_INPUT = 2

Blocks = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def _small(a: Any) -> torch.Tensor | None:
    """W or b whole, as a tensor (float64 for integers)."""
    return None if a is None else tensor_block(a)


def _classes_K(name: str, lo: int, hi: int, K: int | None, W: Any) -> int:
    """K from the labels' range and W, checked against the K given."""
    if lo < 0:
        raise MeasureError(f"{name}: labels must be class indices 0..K-1, got {lo}")
    rows_W = None if W is None else int(W.shape[0])
    if K is None:
        if rows_W is not None and hi >= rows_W:
            raise MeasureError(f"{name}: the labels reach {hi} but W has {rows_W} rows (classes 0..{rows_W - 1})")
        K = max(hi + 1, rows_W or 0)
    else:
        if rows_W is not None and rows_W != K:
            raise MeasureError(f"{name}: K={K} but W has {rows_W} rows")
        if hi >= K:
            raise MeasureError(f"{name}: the labels reach {hi}, beyond K={K} (classes 0..{K - 1})")
    if K < 2:
        raise MeasureError(f"{name}: K must be at least 2 (the labels give K = {K})")
    return K


def _check_missing(name: str, counts: torch.Tensor, missing: str) -> None:
    empty = (counts == 0).nonzero().flatten()
    if len(empty) and missing == "error":
        shown = empty[:10].tolist()
        more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
        raise MeasureError(f"{name}: classes without samples: {shown}{more} of K={len(counts)} (pass "
                           "missing=\"exclude\" to measure the classes present)")


def _check_finite(name: str, t: torch.Tensor, what: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise MeasureError(f"{name}: {what} hold {bad} non-finite value(s) (NaN or inf): the NC metrics of such "
                           "numbers mean nothing")



# ---------------------------------------------------------------------------------------------------- measuring


def _measure_blocks(name: str, blocks: Blocks, K: int, W: Any, b: Any, ood_blocks: Callable[[], Iterable[Any]] | None,
                    options: dict[str, Any]) -> dict[str, float]:
    """nc_metrics_streaming over `blocks`; with OOD blocks, the ID scores are taken during its second pass (the class
    means come from the class sums of its first, observed on the way), so the ID data are read twice in all."""
    W_t, b_t = _small(W), _small(b)
    for what, t in (("W", W_t), ("b", b_t)):
        if t is not None:
            _check_finite(name, t, what)
    state: dict[str, Any] = {"pass": 0, "sums": None, "scores": None}

    def means() -> torch.Tensor:
        sums = state["sums"]
        present = sums.counts > 0
        return sums.sums[present] / sums.counts[present, None].double()

    def observed() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        state["pass"] += 1
        first, second = state["pass"] == 1, state["pass"] == 2 and state["sums"] is not None
        if second:
            state["scores"] = OODScores(means(), W_t, b_t)
        for H, y in blocks():
            if state["pass"] == 1:
                _check_finite(name, H, "the features")
            if ood_blocks is not None and first:
                s = class_sums(H, y, K)
                state["sums"] = s if state["sums"] is None else state["sums"] + s
            elif ood_blocks is not None and second:
                state["scores"].add(H)
            yield H, y

    metrics = nc_metrics_streaming(observed, K, W_t, b_t, **options)
    if ood_blocks is not None:
        inside = state["scores"]
        N = int(state["sums"].counts.sum())
        if inside is None or inside.count() != N:  # the metrics did not make the two passes expected: one more
            inside = OODScores(means(), W_t, b_t)
            for H, _ in blocks():
                inside.add(H)
        outside = OODScores(inside.means, W_t, b_t)
        total, count = torch.zeros((), dtype=torch.float64), 0
        for H in ood_blocks():
            _check_finite(name, H, "the OOD features")
            outside.add(H)
            total = total + H.double().sum(0)
            count += int(H.shape[0])
        metrics["nc5"] = nc5(inside.means, (total / count)[None, :])  # the OOD mean: one row, its own mean
        metrics.update(ood_metrics(inside, outside))
    return metrics


def _check_options(K: int | None, block_rows: int | None, global_mean: str, missing: str, side: str,
                   pairwise: bool) -> None:
    if K is not None and (isinstance(K, bool) or not isinstance(K, numbers.Integral)):
        raise TypeError(f"K must be an int or None, got {K!r}")
    if K is not None and K < 2:
        raise MeasureError(f"K must be at least 2, got {K}")
    if block_rows is not None and (isinstance(block_rows, bool) or not isinstance(block_rows, numbers.Integral)):
        raise TypeError(f"block_rows must be an int or None, got {block_rows!r}")
    if block_rows is not None and block_rows < 1:
        raise MeasureError(f"block_rows must be at least 1, got {block_rows}")
    for name, value, allowed in (("global_mean", global_mean, GLOBAL_MEANS), ("missing", missing, MISSING),
                                 ("side", side, SIDES)):
        if value not in allowed:
            raise MeasureError(f"{name} must be one of {allowed}, got {value!r}")
    if not isinstance(pairwise, bool):
        raise TypeError(f"pairwise must be True or False, got {pairwise!r}")


def measure_saved(sources: Sequence[SavedFeatures], *, K: int | None = None, concat: bool = False,
                  block_rows: int | None = None, global_mean: str = "samples", missing: str = "error",
                  side: str = "auto", pairwise: bool = True) -> list[Measurement]:
    """The NC metrics of each source (`open_features`), one Measurement each, or of all of them as one data set
    (`concat=True`: same d, and the same W and b where several give them). Streams `block_rows` rows at a time
    (default: 16 MiB of features, at least K rows). K: default max label + 1, or W's rows; `global_mean`,
    `missing`, `side`, `pairwise`: as in `analysis.metrics.nc_metrics`.

    >>> import numpy as np
    >>> y = np.arange(12) % 3
    >>> src = SavedFeatures("mine", np.eye(3, 4)[y] + 0.01 * np.arange(12)[:, None], y)
    >>> [row] = measure_saved([src], block_rows=5)     # three blocks of rows
    >>> row.source, row.N, row.K, row.d, row.metrics["ncc_accuracy"]
    ('mine', 12, 3, 4, 1.0)
    """
    _check_options(K, block_rows, global_mean, missing, side, pairwise)
    K = None if K is None else int(K)
    block_rows = None if block_rows is None else int(block_rows)
    if not isinstance(concat, bool):
        raise TypeError(f"concat must be True or False, got {concat!r}")
    sources = [s if isinstance(s, SavedFeatures) else _bad_source(s) for s in sources]
    if not sources:
        raise MeasureError("no sources of features given")
    sources = [checked(s) for s in sources]
    options = dict(global_mean=global_mean, missing=missing, side=side, pairwise=pairwise)
    groups = [sources] if concat else [[s] for s in sources]
    return [_measure_group(group, K, block_rows, options) for group in groups]


def _bad_source(s: Any) -> SavedFeatures:
    raise TypeError(f"sources must be SavedFeatures (from open_features), got {type(s).__name__}")


def _same(name: str, group: Sequence[SavedFeatures], key: str) -> Any:
    given = [(s.source, getattr(s, key)) for s in group if getattr(s, key) is not None]
    if not given:
        return None
    first = _small(given[0][1])
    for source, value in given[1:]:
        t = _small(value)
        if t.shape != first.shape or not torch.equal(t.to(first.dtype), first):
            raise MeasureError(f"{name}: {key} of {source} differs from that of {given[0][0]}; the sources of one "
                               f"data set (concat=True) share one classifier")
    return given[0][1]


def _measure_group(group: Sequence[SavedFeatures], K: int | None, rows: int | None,
                   options: dict[str, Any]) -> Measurement:
    name = " + ".join(s.source for s in group)
    dims = {s.d for s in group}
    if len(dims) > 1:
        raise MeasureError(f"{name}: the features have different dimensions {sorted(dims)}")
    W, b = _same(name, group, "W"), _same(name, group, "b")
    if b is not None and W is None:
        raise MeasureError(f"{name}: a bias b without a classifier W")
    lo, hi = label_range(group, rows)
    K = _classes_K(name, lo, hi, K, W)
    _check_missing(name, class_counts(group, K, rows), options["missing"])
    # at least K rows: every block's class sums are a K×d matrix, which a block of fewer rows would not amortize
    step = rows or max(K, min(default_rows(s) for s in group))

    def blocks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for s in group:
            for i, j in row_ranges(s.features, step):
                yield tensor_block(s.features[i:j]), tensor_block(s.labels[i:j], labels=True)

    with_ood = [s for s in group if s.ood is not None]

    def ood_blocks() -> Iterator[torch.Tensor]:
        for s in with_ood:
            for i, j in row_ranges(s.ood, step):
                yield tensor_block(s.ood[i:j])

    metrics = _measure_blocks(name, blocks, K, W, b, ood_blocks if with_ood else None, options)
    return Measurement(name, sum(s.N for s in group), K, group[0].d, metrics,
                       N_ood=sum(int(s.ood.shape[0]) for s in with_ood))


def measure_files(paths: Sequence[str | os.PathLike], *, labels: Any = None, W: Any = None, b: Any = None,
                  ood: Any = None, **options: Any) -> list[Measurement]:
    """`open_features(paths, labels=, W=, b=, ood=)` then `measure_saved(…, **options)`: the rows of
    `python -m analysis.measure FILE…` (module docstring for an example)."""
    return measure_saved(open_features(paths, labels=labels, W=W, b=b, ood=ood), **options)



# ---------------------------------------------------------------------------------------------------- checkpoints


def measure_checkpoints(paths: Sequence[str | os.PathLike], model: Any, data: Any, layer: str, *,
                        K: int | None = None, ood_data: Any = None, state_key: str | None = None,
                        device: str | torch.device = "cpu", global_mean: str = "samples", missing: str = "error",
                        side: str = "auto", pairwise: bool = True) -> list[Measurement]:
    """One Measurement per checkpoint (`checkpoint_files(paths)`: folders sorted naturally): `model()` builds the
    network (a callable or "module:name"), each checkpoint's state dict is loaded into it, `data()` yields (x, y)
    batches (a DataLoader), and the input of `layer` (a dotted submodule name: the classifier) is hooked with
    `analysis.tracking.FeatureHook`; W and b come from the layer when it is an nn.Linear. `ood_data()` yields batches
    x (or (x, y), y ignored) of OOD inputs. K: default the Linear's out_features, else max label + 1.

    >>> import os, tempfile
    >>> import torch
    >>> from torch import nn
    >>> from analysis.metrics import nc_metrics
    >>> make = lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    >>> folder = tempfile.mkdtemp()
    >>> for epoch in (1, 2):
    ...     torch.save({"epoch": epoch, "model": make().state_dict()}, os.path.join(folder, f"ep{epoch}.pt"))
    >>> x, y = torch.randn(20, 3, dtype=torch.float64), torch.arange(20) % 2
    >>> rows = measure_checkpoints([folder], make, lambda: [(x[:12], y[:12]), (x[12:], y[12:])], "2")
    >>> [r.epoch for r in rows], rows[0].K, rows[0].d
    ([1, 2], 2, 4)
    """
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("paths must be a list of paths, got a single path: wrap it in a list")
    _check_options(K, None, global_mean, missing, side, pairwise)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a dotted submodule name such as 'fc', got {type(layer).__name__}")
    files = checkpoint_files(paths)
    hooked = HookedModel(model, data, layer, ood_data=ood_data, device=device)
    options = dict(global_mean=global_mean, missing=missing, side=side, pairwise=pairwise)
    rows = []
    for path in files:
        ckpt = hooked.features(path, state_key)
        feats, labels, ood, W, b = ckpt.features, ckpt.labels, ckpt.ood, ckpt.W, ckpt.b
        name = str(path)
        y_all = torch.cat(labels)
        if y_all.numel() == 0:
            raise MeasureError(f"{name}: data() yielded no samples")
        k = _classes_K(name, int(y_all.min()), int(y_all.max()), K, W)
        _check_missing(name, torch.bincount(y_all.cpu(), minlength=k), missing)
        metrics = _measure_blocks(name, lambda: zip(feats, labels, strict=True), k, W, b,
                                  (lambda: iter(ood)) if ood is not None else None, options)
        rows.append(Measurement(name, int(y_all.numel()), k, int(feats[0].shape[1]), metrics,
                                N_ood=sum(int(t.shape[0]) for t in ood) if ood else 0, epoch=ckpt.epoch))
    return rows



# ---------------------------------------------------------------------------------------------------- command line

DESCRIPTION = """\
NC metrics (analysis.metrics.nc_metrics: nc1–nc4 and companions) of saved features, or of a network's
penultimate features at each of its checkpoints. One row per file (or per checkpoint); the table goes to
stdout, --json PATH writes every key.

Files: .npz (np.savez) or .pt (torch.save of a dict of tensors, read with weights_only=True) holding
  features|H (N, d), labels|y (N,) integers 0..K-1, and optionally W (K, d), b (K,), ood|ood_features (M, d);
  .npy: one array per file; labels.npy, y.npy, W.npy, b.npy, ood.npy beside a features .npy (given together)
  belong to it, or --labels/--W/--b/--ood FILE give one to every file. .npy and np.savez members are
  memory-mapped and read --block-rows rows at a time (np.savez_compressed members are read whole).
Checkpoints: FILE is a checkpoint or a folder of them (.pt/.pth/.ckpt, sorted naturally) and --model,
  --data and --layer say how to run them.
OOD features add nc5 (NECO's orthogonality deviation), ood_auroc_nearest_mean, ood_auroc_max_logit (needs W)
and ood_distance_ratio.

examples:
  python -m analysis.measure feats.npz --json nc.json
  python -m analysis.measure run/features.npy run/labels.npy run/W.npy --block-rows 100000
  python -m analysis.measure ep10.npy ep20.npy ep30.npy --labels labels.npy --columns nc1,nc2,cdnv
  python -m analysis.measure runs/ckpts/ --model mypkg.models:make_model --data mypkg.data:loader --layer fc
"""


class _Parser(argparse.ArgumentParser):
    """A usage error is one line on stderr, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


class _Version(argparse.Action):
    """`--version`: ufm.__version__ (the one place the version is written), read only when asked: analysis does
    not import ufm (DEVELOPERS.md's layout)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from ufm import __version__

        print(__version__)  # on stdout, as argparse's own "version" action
        parser.exit(0)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _classes(text: str) -> int:
    value = _positive(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m analysis.measure`."""
    p = _Parser(prog="python -m analysis.measure", description=DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="files of features (.npz, .pt, .npy), or with --model checkpoints and folders of them")
    g = p.add_argument_group("files of features")
    g.add_argument("--labels", metavar="FILE",
                   help="labels (N,) for every file that lacks them (a .npy, or an .npz/.pt with that key)")
    g.add_argument("--W", metavar="FILE", help="classifier (K, d) for every file that lacks one (as --labels)")
    g.add_argument("--b", metavar="FILE", help="bias (K,) for every file that lacks one (as --labels)")
    g.add_argument("--ood", metavar="FILE", help="OOD features (M, d) for every file that lacks them (as --labels)")
    g.add_argument("--concat", action="store_true",
                   help="measure all FILEs as one data set (one row; same d and W) instead of one row each")
    g.add_argument("--block-rows", type=_positive, metavar="N",
                   help="rows read and measured at a time (memory ~ N·d numbers); default: 16 MiB of features, at "
                        "least K rows")
    c = p.add_argument_group("checkpoints")
    c.add_argument("--model", metavar="MODULE:NAME",
                   help="factory of the network, called without arguments (e.g. mypkg.models:make_model or "
                        "path/to/file.py:make_model); each checkpoint's state dict is loaded into it")
    c.add_argument("--data", metavar="MODULE:NAME",
                   help="factory of the data, called without arguments, returning (x, y) batches (a DataLoader)")
    c.add_argument("--layer", metavar="NAME",
                   help="the classifier layer (a dotted submodule name, e.g. fc); its input is the features, its "
                        "weight and bias W and b when it is an nn.Linear")
    c.add_argument("--ood-data", metavar="MODULE:NAME", help="factory of OOD batches x (or (x, y), y ignored)")
    c.add_argument("--state-key", metavar="KEY",
                   help="where the state dict sits in a checkpoint (dotted); default: the checkpoint itself if it "
                        "is one, else the first of model, state_dict, model_state_dict, net")
    c.add_argument("--device", default="cpu", help="where the network runs: cpu, cuda, cuda:1, mps (default: cpu)")
    m = p.add_argument_group("metrics")
    m.add_argument("--K", type=_classes, help="number of classes (default: W's rows, else max label + 1)")
    m.add_argument("--global-mean", choices=GLOBAL_MEANS, default="samples",
                   help="μ_G: the mean of all samples (Papyan et al.) or the unweighted mean of the class means "
                        "(default: samples)")
    m.add_argument("--missing", choices=MISSING, default="error",
                   help="classes without samples: an error, or measure the classes present (excluded_classes "
                        "counts the others) (default: error)")
    m.add_argument("--side", choices=SIDES, default="auto",
                   help="compute the geometry on the K×K or d×d side (default: auto, the smaller)")
    m.add_argument("--pairwise", action=argparse.BooleanOptionalAction, default=True,
                   help="the statistics over pairs of classes (equiangularity, max-angle, CDNV, distance "
                        "variances); --no-pairwise skips their O(K²·d) cost at large K (default: on)")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", help="write every row and key to PATH (atomically; NaN as null)")
    o.add_argument("--columns", metavar="KEYS",
                   help="the table's columns: comma-separated keys of nc_metrics, or 'all' (default: nc1, nc2, "
                        "nc3, nc4, accuracy, ncc_accuracy, plus excluded_classes and the OOD keys when present)")
    p.add_argument("--version", action=_Version, help="print the version of ufm and exit")
    return p


_FLAGS = (('missing="exclude"', "--missing exclude"), ("block_rows", "--block-rows"), ("state_key", "--state-key"),
          ("concat=True", "--concat"), ("measure_checkpoints", "--model"))


def _as_flags(message: str) -> str:
    """A library message (Python names) in the command line's words (flags)."""
    for python, flag in _FLAGS:
        message = message.replace(python, flag)
    return re.sub(r"\b(labels|W|b|ood)=(?=\W|$)", r"--\1", message)


def _fail(message: str) -> int:
    print(f"python -m analysis.measure: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m analysis.measure`: parse the flags, measure, print the table, write --json; 2 on bad input.

    >>> main(["no_such_file.npz"])
    2
    """
    args = build_parser().parse_args(argv)
    checkpoints = any(v is not None for v in (args.model, args.data, args.layer, args.ood_data, args.state_key))
    try:
        if checkpoints:
            missing = [f for f, v in (("--model", args.model), ("--data", args.data), ("--layer", args.layer))
                       if v is None]
            if missing:
                return _fail(f"checkpoints need --model, --data and --layer: {', '.join(missing)} missing")
            if any(v is not None for v in (args.labels, args.W, args.b, args.ood)) or args.concat or args.block_rows:
                return _fail("--labels, --W, --b, --ood, --concat and --block-rows are for files of features, not "
                             "checkpoints (--data gives the labels, --layer W and b, --ood-data the OOD inputs)")
        else:
            folders = [f for f in args.files if Path(f).is_dir()]
            if folders:
                return _fail(f"{folders[0]} is a folder: to measure the checkpoints in it give --model, --data and "
                             "--layer")
        columns: Any = None
        if args.columns is not None:
            columns = "all" if args.columns.strip() == "all" else [c.strip() for c in args.columns.split(",")
                                                                   if c.strip()]
            table_columns([], columns)  # unknown keys are refused before any work
        if args.json is not None:
            target = Path(args.json)
            if target.is_dir() or not target.parent.is_dir():
                return _fail(f"--json {args.json}: {'is a folder' if target.is_dir() else 'no such folder'}"
                             f"{'' if target.is_dir() else ': ' + str(target.parent)}")
        options = dict(K=args.K, global_mean=args.global_mean, missing=args.missing, side=args.side,
                       pairwise=args.pairwise)
        if checkpoints:
            rows = measure_checkpoints(args.files, args.model, args.data, args.layer, ood_data=args.ood_data,
                                       state_key=args.state_key, device=args.device, **options)
        else:
            rows = measure_files(args.files, labels=args.labels, W=args.W, b=args.b, ood=args.ood,
                                 concat=args.concat, block_rows=args.block_rows, **options)
        print(format_table(rows, columns))
        if any(math.isnan(r.metrics.get("nc3", math.nan)) and math.isnan(r.metrics.get("accuracy", math.nan))
               for r in rows):
            print("note: nc3, nc4, accuracy and the *_W keys need a classifier W (a key W, --W, or a Linear "
                  "--layer): NaN without it", file=sys.stderr)
        if args.json is not None:
            write_json(args.json, rows, {**options, "files": list(args.files), "block_rows": args.block_rows,
                                         "concat": args.concat})
    except (MeasureError, ValueError, TypeError) as e:
        return _fail(_as_flags(str(e)))
    except OSError as e:
        return _fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
    except KeyboardInterrupt:
        print("python -m analysis.measure: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
