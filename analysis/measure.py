"""NC of saved features: `python -m analysis.measure FILE…`, and the library functions behind it.

The metrics are `analysis.metrics.nc_metrics`'s (NC1–NC4 and companions, Papyan, Han & Donoho 2020), computed by
`analysis.metrics.nc_metrics_streaming` one block of rows at a time; nothing is re-derived here.

**Files of features** (one row of the table per file; `concat=True` / `--concat`: all of them as one data set):

- `.npz` (np.savez) or `.pt` (torch.save of a dict of tensors; read with torch.load(weights_only=True), never
  unpickling arbitrary objects) holding the keys
  `features` or `H` (N, d) — required; `labels` or `y` (N,) integers in 0..K−1 — required;
  `W` (K, d) the classifier and `b` (K,) its bias — optional (nc3, nc4, accuracy and the *_W keys need W);
  `ood` or `ood_features` (M, d) — optional out-of-distribution features. Other keys are ignored.
- `.npy`: one array per file. A file named by a key other than the features' (`labels.npy`, `y.npy`, `W.npy`,
  `b.npy`, `ood.npy`, `ood_features.npy`) is a companion: it belongs to every features file given in the same
  folder (`python -m analysis.measure run/features.npy run/labels.npy run/W.npy`); any other .npy is a features
  file. `labels=`, `W=`, `b=`, `ood=` (`--labels FILE` …) give a key to every source that lacks it (shared
  labels for features saved at several epochs: `python -m analysis.measure ep*.npy --labels labels.npy`).

**Memory.** A `.npy` is memory-mapped (np.load(mmap_mode="r")), and so are the members of an `.npz` written with
np.savez (stored uncompressed: each member is opened in place, its .npy header read with np.lib.format, then
np.memmap at its offset); a `.pt` is opened with torch.load(mmap=True). The rows are read `block_rows` at a time
(default: 16 MiB of features per block, at least K rows), twice (class sums, then deviations from the means),
after two passes over the labels alone (K, then the class counts): memory O(block·d + K·d + min(K, d)²) whatever N.
An np.savez_compressed member cannot be mapped and is read whole. With OOD features, their scores and those of the
in-distribution samples are kept (N + M numbers).

**OOD** (when `ood` is given): `nc5`, the orthogonality deviation of the OOD mean from the ID class means
(`analysis.ood.nc5`; Ammar et al. 2024, NECO), and the separation of in-distribution (ID) and OOD features, as AUROC
(the probability that an ID sample scores above an OOD one, ties counted half; 1 = fully separated, 0.5 = chance):
`ood_auroc_nearest_mean` for the score −min_k ‖h − μ_k‖ (distance to the nearest ID class mean: neural collapse
brings ID features onto their means), `ood_auroc_max_logit` for max_k (Wh + b)_k (NaN without W), and
`ood_distance_ratio` = mean nearest-mean distance of the OOD features / that of the ID features.

**Checkpoints** (`measure_checkpoints`; `python -m analysis.measure runs/ckpts/ --model mypkg.models:make_model
--data mypkg.data:loader --layer fc`): the model factory builds the nn.Module once; every checkpoint (a .pt, .pth or
.ckpt file, or a folder of them, sorted naturally: epoch_2 before epoch_10) is read with torch.load(weights_only=True)
— a state dict, or a dict holding one under "model" (ufm.train's checkpoint.pt), "state_dict", "model_state_dict"
or "net", or under `state_key` — and loaded into it; the data factory's (x, y) batches run through it in eval mode
without gradients, and `analysis.tracking.FeatureHook` records the input of `layer` (the penultimate features). W
and b come from the layer when it is an nn.Linear. One row per checkpoint. The features of one checkpoint are kept
(N·d numbers, on `device`) for the two passes, as `NCTracker` does.

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
import importlib
import importlib.util
import json
import math
import numbers
import os
import re
import struct
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.blocked import block_rows as _budget_rows
from analysis.metrics import GLOBAL_MEANS, METRIC_KEYS, MISSING, SIDES, class_sums, nc_metrics_streaming

__all__ = [
    "ALIASES", "MeasureError", "Measurement", "SavedFeatures", "OOD_KEYS", "open_features", "measure_saved",
    "measure_files", "checkpoint_files", "measure_checkpoints", "format_table", "write_json", "main",
]

# the keys of a file of features, and the names each may go by (the first is the canonical one)
ALIASES: dict[str, tuple[str, ...]] = {
    "features": ("features", "H"),
    "labels": ("labels", "y"),
    "W": ("W",),
    "b": ("b",),
    "ood": ("ood", "ood_features"),
}
COMPANIONS = {name: key for key, names in ALIASES.items() if key != "features" for name in names}
OOD_KEYS = ("nc5", "ood_auroc_nearest_mean", "ood_auroc_max_logit", "ood_distance_ratio")
DEFAULT_BLOCK_BYTES = 16 * 2**20  # features per block when block_rows is not given
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
STATE_KEYS = ("model", "state_dict", "model_state_dict", "net")
DEFAULT_COLUMNS = ("nc1", "nc2", "nc3", "nc4", "accuracy", "ncc_accuracy")
EXIT_BAD_INPUT = 2

Blocks = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


class MeasureError(ValueError):
    """Bad input to the measurement (a missing or unreadable file, wrong shapes, labels that are not integers,
    an inconsistent K, no features): one line naming the file."""


@dataclass(frozen=True)
class SavedFeatures:
    """One source of saved features: `features` (N, d) and `labels` (N,) as numpy arrays (memory-mapped where
    possible) or torch tensors, optional `W` (K, d), `b` (K,) and `ood` (M, d); `source` names it in the table."""

    source: str
    features: Any
    labels: Any
    W: Any = None
    b: Any = None
    ood: Any = None

    @property
    def N(self) -> int:
        return int(self.features.shape[0])

    @property
    def d(self) -> int:
        return int(self.features.shape[1])


@dataclass(frozen=True)
class Measurement:
    """One row: the metrics of `nc_metrics` (METRIC_KEYS, `excluded_classes` when classes were left out, the
    OOD_KEYS when OOD features were given) of N samples of dimension d in K classes, from `source` (a file, several
    joined by " + ", or a checkpoint); `epoch` where a checkpoint records one; `N_ood` the OOD samples."""

    source: str
    N: int
    K: int
    d: int
    metrics: dict[str, float] = field(default_factory=dict)
    N_ood: int = 0
    epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (the JSON row; NaN stays NaN here, `write_json` writes it as null).

        >>> Measurement("a.npz", 10, 2, 3, {"nc1": 0.5}).to_dict()["metrics"]
        {'nc1': 0.5}
        """
        return {"source": self.source, "epoch": self.epoch, "N": self.N, "K": self.K, "d": self.d,
                "N_ood": self.N_ood, "metrics": dict(self.metrics)}


# ---------------------------------------------------------------------------------------------------- reading


def _quiet_torch_reason(e: BaseException) -> str:
    """Torch's message, on one line and shortened, unless it advises loading with weights_only=False (running
    arbitrary code from a file of unknown origin): then nothing."""
    text = " ".join(str(e).split())
    if not text or "weights_only" in text.lower() or "weights only" in text.lower():
        return ""
    return f" ({text[:200]})"


def _torch_load(path: Path, what: str) -> Any:
    """torch.load(weights_only=True) on the CPU, memory-mapped where the file's format allows it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e).lower():
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except OSError as e:
        raise MeasureError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # UnpicklingError (a global not allowed), EOFError, a torn or foreign file, …
        raise MeasureError(f"cannot read {path} with torch.load(weights_only=True): {what} (tensors, numbers, "
                           f"strings and plain containers only; numpy arrays belong in .npy/.npz files)"
                           f"{_quiet_torch_reason(e)}") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as e:
        raise MeasureError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, EOFError) as e:
        raise MeasureError(f"cannot read {path} as a .npy array ({' '.join(str(e).split())[:200]})") from None


def _npz_members(path: Path) -> dict[str, Callable[[], Any]]:
    """The members of an .npz, each a function returning its array: a memory map for a member stored
    uncompressed (np.savez), the whole array for a compressed one (np.savez_compressed)."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = [i for i in z.infolist() if i.filename.endswith(".npy")]
    except OSError as e:
        raise MeasureError(f"cannot read {path}: {e.strerror or e}") from None
    except zipfile.BadZipFile as e:
        raise MeasureError(f"cannot read {path} as an .npz file ({e})") from None

    def bad(e: BaseException) -> MeasureError:
        return MeasureError(f"cannot read {path} as an .npz file ({' '.join(str(e).split())[:200]})")

    def whole(name: str) -> Callable[[], Any]:
        def read() -> Any:
            try:
                with np.load(path, allow_pickle=False) as z:
                    return z[name]
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
                raise bad(e) from None
        return read

    def mapped(info: zipfile.ZipInfo) -> Callable[[], Any]:
        def read() -> Any:
            try:
                with open(path, "rb") as f:
                    f.seek(info.header_offset)
                    local = f.read(30)  # the local file header: its name and extra field lengths end it
                    if len(local) < 30 or local[:4] != b"PK\x03\x04":
                        raise ValueError(f"no local header for member {info.filename}")
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    f.seek(info.header_offset + 30 + name_len + extra_len)
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                    offset = f.tell()
                if dtype.hasobject:
                    raise ValueError(f"member {info.filename} holds Python objects, which are not loaded")
                if math.prod(shape) == 0:
                    return np.empty(shape, dtype=dtype)
                return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                                 order="F" if fortran else "C")
            except (OSError, ValueError, EOFError, struct.error) as e:
                raise bad(e) from None
        return read

    out = {}
    for info in infos:
        stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1  # neither packed nor encrypted
        out[info.filename[:-4]] = mapped(info) if stored else whole(info.filename[:-4])
    return out


def _members(path: Path) -> dict[str, Callable[[], Any]]:
    """The named arrays of an .npz or .pt file, read on demand."""
    if path.suffix == ".npz":
        return _npz_members(path)
    obj = _torch_load(path, "a .pt of features must be a dict of tensors")
    if not isinstance(obj, dict):
        raise MeasureError(f"{path} holds a {type(obj).__name__}, not a dict of tensors with the keys "
                           f"{_key_names()}")
    return {str(k): (lambda v=v: v) for k, v in obj.items()}


def _key_names() -> str:
    return ", ".join("/".join(names) for names in ALIASES.values())


def _pick(members: dict[str, Callable[[], Any]], key: str, source: str) -> Any:
    found = [n for n in ALIASES[key] if n in members]
    if len(found) > 1:
        raise MeasureError(f"{source} holds both {found[0]!r} and {found[1]!r}: give the {key} once")
    return members[found[0]]() if found else None


def _kind(a: Any) -> str:
    """numpy's dtype kind of an array or tensor: 'f' float, 'i'/'u' integer, 'b' bool, 'c' complex, …"""
    if isinstance(a, torch.Tensor):
        if a.is_complex():
            return "c"
        if a.is_floating_point():
            return "f"
        return "b" if a.dtype == torch.bool else "i"
    return np.asarray(a).dtype.kind if not isinstance(a, np.ndarray) else a.dtype.kind


def _as_array(a: Any, name: str, source: str) -> Any:
    """An array or tensor as given (memory maps stay mapped), or a numpy array of a nested list."""
    if isinstance(a, (np.ndarray, torch.Tensor)):
        return a.detach() if isinstance(a, torch.Tensor) else a
    try:
        out = np.asarray(a)
    except ValueError as e:
        raise MeasureError(f"{name} of {source} is not a rectangular array ({e})") from None
    if out.dtype.kind not in "biufc":
        raise MeasureError(f"{name} of {source} must be an array of numbers, got {type(a).__name__}")
    return out


def _checked(sf: SavedFeatures) -> SavedFeatures:
    """The shapes and dtypes of one source, checked (one line naming the source and the key)."""
    src = sf.source
    H = _as_array(sf.features, "the features", src)
    y = _as_array(sf.labels, "the labels", src)
    if H.ndim != 2:
        raise MeasureError(f"the features of {src} must be 2-D (N, d), got shape {tuple(H.shape)}")
    if _kind(H) not in "fiu":
        raise MeasureError(f"the features of {src} must be real numbers, got dtype {H.dtype}")
    if H.shape[0] == 0 or H.shape[1] == 0:
        raise MeasureError(f"the features of {src} are empty (shape {tuple(H.shape)})")
    if y.ndim != 1:
        raise MeasureError(f"the labels of {src} must be 1-D (N,), got shape {tuple(y.shape)}")
    if _kind(y) not in "iu":
        raise MeasureError(f"the labels of {src} must be integers (class indices 0..K-1), got dtype {y.dtype}")
    if y.shape[0] != H.shape[0]:
        raise MeasureError(f"{src}: {H.shape[0]} feature rows but {y.shape[0]} labels")
    W, b, ood = sf.W, sf.b, sf.ood
    if W is not None:
        W = _as_array(W, "W", src)
        if W.ndim != 2 or W.shape[1] != H.shape[1] or _kind(W) not in "fiu":
            raise MeasureError(f"W of {src} must be a real (K, d) matrix with d = {H.shape[1]} (the features' "
                               f"dimension), got shape {tuple(W.shape)}")
    if b is not None:
        b = _as_array(b, "b", src)
        if W is None:
            raise MeasureError(f"{src} has a bias b but no classifier W")
        if b.ndim != 1 or b.shape[0] != W.shape[0] or _kind(b) not in "fiu":
            raise MeasureError(f"b of {src} must be a real vector of W's {W.shape[0]} rows, got shape "
                               f"{tuple(b.shape)}")
    if ood is not None:
        ood = _as_array(ood, "the OOD features", src)
        if ood.ndim != 2 or ood.shape[1] != H.shape[1] or _kind(ood) not in "fiu" or ood.shape[0] == 0:
            raise MeasureError(f"the OOD features of {src} must be a non-empty real (M, d) matrix with d = "
                               f"{H.shape[1]}, got shape {tuple(ood.shape)}")
    return SavedFeatures(src, H, y, W, b, ood)


def _from_members(members: dict[str, Callable[[], Any]], source: str) -> dict[str, Any]:
    found = {key: _pick(members, key, source) for key in ALIASES}
    if found["features"] is None:
        hint = (" (a checkpoint? measure it with --model, --data and --layer)" if
                any(k in members for k in STATE_KEYS) else "")
        raise MeasureError(f"{source} has no features: expected a key 'features' or 'H' among its keys "
                           f"{sorted(members)[:20]}{hint}")
    return found


def _extra(value: Any, key: str) -> Any:
    """A key given for every source (labels=, W=, b=, ood=): a path of a .npy (or .npz/.pt holding that key), or an
    array."""
    if value is None or not isinstance(value, (str, os.PathLike)):
        return value
    path = Path(value)
    if not path.is_file():
        raise MeasureError(f"{key}: no such file: {path}")
    if path.suffix == ".npy":
        return _read_npy(path)
    if path.suffix in (".npz", ".pt"):
        members = _members(path)
        picked = _pick(members, key, str(path))
        if picked is None and len(members) == 1:
            picked = next(iter(members.values()))()
        if picked is None:
            raise MeasureError(f"{key}: {path} has no key {'/'.join(ALIASES[key])}")
        return picked
    raise MeasureError(f"{key}: {path} is not a .npy, .npz or .pt file")


def open_features(paths: Sequence[str | os.PathLike], *, labels: Any = None, W: Any = None, b: Any = None,
                  ood: Any = None) -> list[SavedFeatures]:
    """The sources of features in `paths` (.npz, .pt, .npy; module docstring for the keys and the .npy companions),
    opened (memory-mapped where the format allows) and checked; nothing is read beyond the headers. `labels`, `W`,
    `b`, `ood`: an array or the path of a .npy, given to every source that lacks that key (one that has it already
    is an error: it would be ambiguous).

    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> np.save(os.path.join(folder, "features.npy"), np.zeros((4, 2)))
    >>> np.save(os.path.join(folder, "labels.npy"), np.array([0, 1, 0, 1]))
    >>> [src] = open_features([os.path.join(folder, "features.npy"), os.path.join(folder, "labels.npy")])
    >>> src.N, src.d, type(src.features).__name__
    (4, 2, 'memmap')
    """
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("paths must be a list of paths, got a single path: wrap it in a list")
    given = {"labels": labels, "W": W, "b": b, "ood": ood}
    if not paths:
        raise MeasureError("no files of features given")
    sources: list[tuple[str, dict[str, Any]]] = []
    npy_features: list[tuple[Path, dict[str, Any]]] = []
    companions: list[tuple[Path, str]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            raise MeasureError(f"{path} is a folder, not a file of features (a folder of checkpoints is measured "
                               "with measure_checkpoints)")
        if not path.is_file():
            raise MeasureError(f"no such file: {path}")
        if path.suffix == ".npy":
            if path.stem in COMPANIONS:
                companions.append((path, COMPANIONS[path.stem]))
            else:
                entry: dict[str, Any] = {"features": _read_npy(path)}
                npy_features.append((path, entry))
                sources.append((str(path), entry))
        elif path.suffix in (".npz", ".pt"):
            sources.append((str(path), _from_members(_members(path), str(path))))
        else:
            raise MeasureError(f"{path}: not a file of features (.npz, .pt or .npy)")
    for path, key in companions:
        owners = [entry for fpath, entry in npy_features if fpath.parent.resolve() == path.parent.resolve()]
        if not owners:
            raise MeasureError(f"{path} ({key}) has no features .npy in its folder among the files given")
        for entry in owners:
            if entry.get(key) is not None:
                raise MeasureError(f"{path}: the {key} of the features in {path.parent} are given twice")
            entry[key] = _read_npy(path)
    given = {k: _extra(v, k) for k, v in given.items()}
    out = []
    for name, entry in sources:
        for key, value in given.items():
            if value is None:
                continue
            if entry.get(key) is not None:
                raise MeasureError(f"{name} has its own {key}; {key}= gives it a second time")
            entry[key] = value
        if entry.get("labels") is None:
            raise MeasureError(f"{name} has no labels: expected a key 'labels' or 'y' (a .npy of features: a "
                               "labels.npy in its folder, or labels=)")
        out.append(_checked(SavedFeatures(name, entry["features"], entry["labels"], entry.get("W"), entry.get("b"),
                                          entry.get("ood"))))
    return out


# ---------------------------------------------------------------------------------------------------- blocks


def _tensor_block(a: Any, labels: bool = False) -> torch.Tensor:
    """Rows of an array or tensor as a tensor of native byte order (a copy of mapped rows: the map stays clean)."""
    if isinstance(a, torch.Tensor):
        return a.long() if labels else a
    arr = np.array(a)  # a plain ndarray copy, also of a memmap's rows
    if labels:
        return torch.from_numpy(arr.astype(np.int64, copy=False))
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    return torch.from_numpy(arr)


def _rows(a: Any, rows: int) -> Iterator[tuple[int, int]]:
    for start in range(0, int(a.shape[0]), rows):
        yield start, min(int(a.shape[0]), start + rows)


def _small(a: Any) -> torch.Tensor | None:
    """W or b whole, as a tensor (float64 for integers)."""
    return None if a is None else _tensor_block(a)


def _default_rows(src: SavedFeatures) -> int:
    itemsize = src.features.element_size() if isinstance(src.features, torch.Tensor) else src.features.dtype.itemsize
    return max(1, DEFAULT_BLOCK_BYTES // (src.d * max(itemsize, 1)))


def _label_pass(sources: Sequence[SavedFeatures], rows: int | None) -> tuple[int, int]:
    """(min, max) of the labels of the sources, one block at a time."""
    lo, hi = None, None
    for src in sources:
        step = rows or max(1, DEFAULT_BLOCK_BYTES // 8)
        for i, j in _rows(src.labels, step):
            y = _tensor_block(src.labels[i:j], labels=True)
            lo = int(y.min()) if lo is None else min(lo, int(y.min()))
            hi = int(y.max()) if hi is None else max(hi, int(y.max()))
    assert lo is not None and hi is not None
    return lo, hi


def _counts(sources: Sequence[SavedFeatures], K: int, rows: int | None) -> torch.Tensor:
    counts = torch.zeros(K, dtype=torch.int64)
    for src in sources:
        for i, j in _rows(src.labels, rows or max(1, DEFAULT_BLOCK_BYTES // 8)):
            counts += torch.bincount(_tensor_block(src.labels[i:j], labels=True), minlength=K)
    return counts


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


# ---------------------------------------------------------------------------------------------------- OOD


def _auroc(inside: torch.Tensor, outside: torch.Tensor) -> float:
    """P(score of an ID sample > score of an OOD one) + ½ P(equal): the Mann–Whitney U over n·m, from midranks."""
    s = torch.cat([inside, outside]).double().cpu().numpy()
    n, m = len(inside), len(outside)
    order = np.argsort(s, kind="stable")
    _, inverse, counts = np.unique(s[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid = (ends - counts + 1 + ends) / 2.0  # the mean 1-based rank of each group of ties
    ranks = np.empty(len(s))
    ranks[order] = mid[inverse]
    return float((ranks[:n].sum() - n * (n + 1) / 2.0) / (n * m))


class _Scores:
    """Nearest-mean distances and max logits of blocks of features, a budget's rows at a time (no N×K matrix)."""

    def __init__(self, means: torch.Tensor, W: torch.Tensor | None, b: torch.Tensor | None) -> None:
        self.means = means.double()
        self.mean_sq = self.means.square().sum(1)
        self.W = None if W is None else W.double()
        self.b = None if b is None else b.double()
        self.distance: list[torch.Tensor] = []
        self.max_logit: list[torch.Tensor] = []

    def add(self, H: torch.Tensor) -> None:
        K = max(self.means.shape[0], 0 if self.W is None else self.W.shape[0])
        rows = _budget_rows(K, itemsize=8, copies=3)
        for i in range(0, H.shape[0], rows):
            h = H[i:i + rows].double()
            sq = (h.square().sum(1, keepdim=True) - 2 * h @ self.means.T + self.mean_sq).clamp_min(0)
            self.distance.append(sq.amin(1).sqrt())
            if self.W is not None:
                z = h @ self.W.T
                self.max_logit.append((z if self.b is None else z + self.b).amax(1))

    def count(self) -> int:
        return sum(len(t) for t in self.distance)


def _ood_metrics(inside: _Scores, outside: _Scores) -> dict[str, float]:
    d_in, d_out = torch.cat(inside.distance), torch.cat(outside.distance)
    out = {"ood_auroc_nearest_mean": _auroc(-d_in, -d_out), "ood_auroc_max_logit": math.nan,
           "ood_distance_ratio": math.nan}
    if inside.W is not None:
        out["ood_auroc_max_logit"] = _auroc(torch.cat(inside.max_logit), torch.cat(outside.max_logit))
    mean_in = float(d_in.mean())
    if mean_in > 0:
        out["ood_distance_ratio"] = float(d_out.mean()) / mean_in
    return out


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
            state["scores"] = _Scores(means(), W_t, b_t)
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
            inside = _Scores(means(), W_t, b_t)
            for H, _ in blocks():
                inside.add(H)
        from analysis.ood import nc5

        outside = _Scores(inside.means, W_t, b_t)
        total, count = torch.zeros((), dtype=torch.float64), 0
        for H in ood_blocks():
            _check_finite(name, H, "the OOD features")
            outside.add(H)
            total = total + H.double().sum(0)
            count += int(H.shape[0])
        metrics["nc5"] = nc5(inside.means, (total / count)[None, :])  # the OOD mean: one row, its own mean
        metrics.update(_ood_metrics(inside, outside))
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
    sources = [_checked(s) for s in sources]
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
    lo, hi = _label_pass(group, rows)
    K = _classes_K(name, lo, hi, K, W)
    _check_missing(name, _counts(group, K, rows), options["missing"])
    # at least K rows: every block's class sums are a K×d matrix, which a block of fewer rows would not amortize
    step = rows or max(K, min(_default_rows(s) for s in group))

    def blocks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for s in group:
            for i, j in _rows(s.features, step):
                yield _tensor_block(s.features[i:j]), _tensor_block(s.labels[i:j], labels=True)

    with_ood = [s for s in group if s.ood is not None]

    def ood_blocks() -> Iterator[torch.Tensor]:
        for s in with_ood:
            for i, j in _rows(s.ood, step):
                yield _tensor_block(s.ood[i:j])

    metrics = _measure_blocks(name, blocks, K, W, b, ood_blocks if with_ood else None, options)
    return Measurement(name, sum(s.N for s in group), K, group[0].d, metrics,
                       N_ood=sum(int(s.ood.shape[0]) for s in with_ood))


def measure_files(paths: Sequence[str | os.PathLike], *, labels: Any = None, W: Any = None, b: Any = None,
                  ood: Any = None, **options: Any) -> list[Measurement]:
    """`open_features(paths, labels=, W=, b=, ood=)` then `measure_saved(…, **options)`: the rows of
    `python -m analysis.measure FILE…` (module docstring for an example)."""
    return measure_saved(open_features(paths, labels=labels, W=W, b=b, ood=ood), **options)


# ---------------------------------------------------------------------------------------------------- checkpoints


def _natural(path: Path) -> list[Any]:
    """A sort key reading the digits of a name as numbers: epoch_2 before epoch_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def checkpoint_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The checkpoints named by `paths`: a file as given, a folder's .pt/.pth/.ckpt files sorted naturally.

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for name in ("epoch_10.pt", "epoch_2.pt", "notes.txt"):
    ...     open(os.path.join(folder, name), "w").close()
    >>> [p.name for p in checkpoint_files([folder])]
    ['epoch_2.pt', 'epoch_10.pt']
    """
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("paths must be a list of paths, got a single path: wrap it in a list")
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted((f for f in path.iterdir() if f.is_file() and f.suffix in CHECKPOINT_SUFFIXES),
                           key=_natural)
            if not found:
                raise MeasureError(f"{path} holds no checkpoints ({', '.join(CHECKPOINT_SUFFIXES)} files)")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise MeasureError(f"no such file or folder: {path}")
    if not out:
        raise MeasureError("no checkpoints given")
    return out


def _factory(spec: Any, what: str) -> Callable[[], Any]:
    """A callable, or "package.module:name" / "path/to/file.py:name" imported."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise MeasureError(f"{what} must be a callable or 'module:name' (e.g. mypkg.models:make_model), got {spec!r}")
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise MeasureError(f"{what} {spec!r}: no such file: {file}")
            module_spec = importlib.util.spec_from_file_location(file.stem, file)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except MeasureError:
        raise
    except Exception as e:
        raise MeasureError(f"{what} {spec!r}: cannot import {module_name} ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MeasureError(f"{what} {spec!r}: {module_name} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise MeasureError(f"{what} {spec!r}: {attr} is not callable")
    return obj


def _user(what: str, call: Callable[[], Any]) -> Any:
    """Run the user's code (a factory, the model's forward): its failure is one line saying where."""
    try:
        return call()
    except MeasureError:
        raise
    except Exception as e:
        raise MeasureError(f"{what} failed ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None


def _state_dict(path: Path, state_key: str | None) -> tuple[dict[str, torch.Tensor], int | None]:
    obj = _torch_load(path, "not a checkpoint of tensors")

    def is_state(x: Any) -> bool:
        return isinstance(x, dict) and bool(x) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in x.items())

    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    if state_key is not None:
        state = obj
        for part in state_key.split("."):
            if not isinstance(state, dict) or part not in state:
                keys = sorted(map(str, obj)) if isinstance(obj, dict) else []
                raise MeasureError(f"the checkpoint {path} has no {state_key!r} (its keys: {keys[:20]})")
            state = state[part]
        if not is_state(state):
            raise MeasureError(f"the checkpoint {path}: {state_key!r} is not a state dict (names to tensors)")
        return state, epoch
    if is_state(obj):
        return obj, epoch
    if isinstance(obj, dict):
        for key in STATE_KEYS:
            if is_state(obj.get(key)):
                return obj[key], epoch
    keys = sorted(map(str, obj))[:20] if isinstance(obj, dict) else type(obj).__name__
    raise MeasureError(f"the checkpoint {path} holds no state dict (a dict of tensors, or one under "
                       f"{'/'.join(STATE_KEYS)}; its keys: {keys}); name its key with state_key")


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    if all(k.startswith("module.") for k in state) and not all(k.startswith("module.") for k in own):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from a DDP/DataParallel wrapper
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise MeasureError(f"the checkpoint {path} does not match the model ({' '.join(str(e).split())[:300]})"
                           ) from None


def _batch(batch: Any, where: str, ood: bool = False) -> tuple[Any, Any]:
    if isinstance(batch, torch.Tensor) and ood:
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) >= (1 if ood else 2):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    raise MeasureError(f"{where} must yield (x, y) batches{' (or x alone)' if ood else ''}, got "
                       f"{type(batch).__name__}")


def _hooked(model: torch.nn.Module, hook: Any, data: Callable[[], Any], device: torch.device, where: str,
            ood: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run the data factory's batches through the model; the hooked features (and labels) of every batch."""
    feats, labels = [], []
    batches = _user(f"{where}()", data)
    try:
        iterator = iter(batches)
    except TypeError:
        raise MeasureError(f"{where}() must return an iterable of batches, got {type(batches).__name__}") from None
    while True:
        batch = _user(f"iterating {where}()", lambda: next(iterator, StopIteration))
        if batch is StopIteration:
            break
        x, y = _batch(batch, where, ood)
        if isinstance(x, torch.Tensor):
            x = x.to(device)
        hook.features = None
        _user(f"the model's forward pass on a batch of {where}", lambda x=x: model(x))
        if hook.features is None:
            raise MeasureError(f"the layer did not run during the model's forward pass on a batch of {where}")
        H = hook.features
        if H.dim() != 2:
            raise MeasureError(f"the layer's input has shape {tuple(H.shape)} on a batch of {where}, not (n, d): hook "
                               "the layer whose input is the penultimate features, one row per sample")
        feats.append(H)
        if not ood:
            try:
                y_t = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
            except (TypeError, ValueError):
                raise MeasureError(f"the labels of a batch of {where} are not an array") from None
            if y_t.is_floating_point() or y_t.is_complex() or y_t.dtype == torch.bool or y_t.dim() != 1:
                raise MeasureError(f"the labels of {where}'s batches must be 1-D integers, got {y_t.dtype} of "
                                   f"shape {tuple(y_t.shape)}")
            if y_t.shape[0] != H.shape[0]:
                raise MeasureError(f"a batch of {where}: {H.shape[0]} features but {y_t.shape[0]} labels")
            labels.append(y_t.long().to(H.device))
    if not feats:
        raise MeasureError(f"{where}() yielded no batches")
    return feats, labels


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
    from analysis.tracking import FeatureHook

    files = checkpoint_files(paths)
    make_model = _factory(model, "model")
    make_data = _factory(data, "data")
    make_ood = None if ood_data is None else _factory(ood_data, "ood_data")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise MeasureError(f"device={device!r} is not a device (e.g. 'cpu', 'cuda')") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MeasureError(f"device={device!r}, but CUDA is not available on this machine")
    net = _user("model()", make_model)
    if not isinstance(net, torch.nn.Module):
        raise MeasureError(f"model() must return a torch.nn.Module, got {type(net).__name__}")
    net = net.to(dev)
    try:
        module = net.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in net.named_modules() if n]
        raise MeasureError(f"the model has no submodule {layer!r}; its submodules are {names[:30]}") from None
    options = dict(global_mean=global_mean, missing=missing, side=side, pairwise=pairwise)
    rows = []
    for path in files:
        state, epoch = _state_dict(path, state_key)
        _load_state(net, state, path)
        net.eval()
        with FeatureHook(net, module) as hook, torch.no_grad():
            feats, labels = _hooked(net, hook, make_data, dev, "data")
            ood = _hooked(net, hook, make_ood, dev, "ood_data", ood=True)[0] if make_ood is not None else None
        W = b = None
        if isinstance(module, torch.nn.Linear):
            W = module.weight.detach().clone()
            b = None if module.bias is None else module.bias.detach().clone()
        name = str(path)
        y_all = torch.cat(labels)
        if y_all.numel() == 0:
            raise MeasureError(f"{name}: data() yielded no samples")
        k = _classes_K(name, int(y_all.min()), int(y_all.max()), K, W)
        _check_missing(name, torch.bincount(y_all.cpu(), minlength=k), missing)
        metrics = _measure_blocks(name, lambda: zip(feats, labels, strict=True), k, W, b,
                                  (lambda: iter(ood)) if ood is not None else None, options)
        rows.append(Measurement(name, int(y_all.numel()), k, int(feats[0].shape[1]), metrics,
                                N_ood=sum(int(t.shape[0]) for t in ood) if ood else 0, epoch=epoch))
    return rows


# ---------------------------------------------------------------------------------------------------- output


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _columns(rows: Sequence[Measurement], columns: Sequence[str] | str | None) -> list[str]:
    keys = [k for k in (*METRIC_KEYS, "excluded_classes", *OOD_KEYS)]
    if columns == "all":
        chosen = [k for k in keys if any(k in r.metrics for r in rows)]
    elif columns is None:
        chosen = list(DEFAULT_COLUMNS)
        chosen += [k for k in ("excluded_classes", *OOD_KEYS) if any(k in r.metrics for r in rows)]
    else:
        unknown = [c for c in columns if c not in keys]
        if unknown:
            raise MeasureError(f"unknown column(s) {unknown}; the columns are {', '.join(keys)}")
        chosen = list(columns)
    head = ["epoch"] if any(r.epoch is not None for r in rows) else []
    head += ["N", "K", "d"] + (["N_ood"] if any(r.N_ood for r in rows) else [])
    return head + chosen


def format_table(rows: Sequence[Measurement], columns: Sequence[str] | str | None = None) -> str:
    """The rows as a text table: one line per source, one column per quantity (default: nc1–nc4, accuracy,
    ncc_accuracy, and excluded_classes and the OOD keys where present; "all": every key; or a list of keys).

    >>> print(format_table([Measurement("a.npz", 10, 2, 3, {"nc1": 0.25, "nc2": 0.0})], ["nc1"]))
    source  N   K  d  nc1
    a.npz   10  2  3  0.25
    """
    cols = _columns(rows, columns)
    table = [["source", *cols]]
    for r in rows:
        fixed = {"epoch": r.epoch, "N": r.N, "K": r.K, "d": r.d, "N_ood": r.N_ood}
        table.append([r.source, *(_cell(fixed[c] if c in fixed else r.metrics.get(c, math.nan)) for c in cols)])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in table)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_json(path: str | os.PathLike, rows: Sequence[Measurement], options: dict[str, Any] | None = None) -> None:
    """{"options": …, "rows": [Measurement.to_dict(), …]} to `path`, NaN and ±inf as null, atomically (a temporary
    file in the same folder, fsync, then os.replace: a reader never sees a torn file).

    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "nc.json")
    >>> write_json(path, [Measurement("a.npz", 10, 2, 3, {"nc3": float("nan")})])
    >>> json.load(open(path))["rows"][0]["metrics"]
    {'nc3': None}
    """
    path = Path(path)
    text = json.dumps(_json_safe({"options": options or {}, "rows": [r.to_dict() for r in rows]}), indent=2,
                      allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 → what a plain open() would give
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
            _columns([], columns)  # unknown keys are refused before any work
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
