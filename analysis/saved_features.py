"""Files of saved features for `analysis.measure`: their keys, the .npy companions, the checks of one source, and
its rows read a block at a time.

**Files of features** (`open_features`; one row of `analysis.measure`'s table per file, or all as one data set):

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
np.memmap at its offset; `analysis.array_files`); a `.pt` is opened with torch.load(mmap=True). The rows are read
`block_rows` at a time (`row_ranges`, `tensor_block`; default: 16 MiB of features per block, `default_rows`, at
least K rows), twice (class sums, then deviations from the means), after two passes over the labels alone
(`label_range` for K, then `class_counts`): memory O(block·d + K·d + min(K, d)²) whatever N. An
np.savez_compressed member cannot be mapped and is read whole.

>>> import os, tempfile
>>> import numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "feats.npz")
>>> np.savez(path, H=np.ones((5, 2)), y=np.array([0, 1, 2, 1, 0]))
>>> [src] = open_features([path])
>>> src.N, src.d, label_range([src], rows=2), class_counts([src], 3, rows=2).tolist()
(5, 2, (0, 2), [2, 2, 1])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.array_files import MeasureError, load_tensors, npz_members, read_npy
from analysis.checkpoints import STATE_KEYS

__all__ = [
    "ALIASES", "COMPANIONS", "DEFAULT_BLOCK_BYTES", "SavedFeatures", "checked", "open_features", "tensor_block",
    "row_ranges", "default_rows", "label_range", "class_counts",
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

DEFAULT_BLOCK_BYTES = 16 * 2**20  # features per block when block_rows is not given


@dataclass(frozen=True)
class SavedFeatures:
    """One source of saved features: `features` (N, d) and `labels` (N,) as numpy arrays (memory-mapped where
    possible) or torch tensors, optional `W` (K, d), `b` (K,) and `ood` (M, d); `source` names it in the table.

    >>> import numpy as np
    >>> src = SavedFeatures("mine", np.zeros((6, 4)), np.arange(6) % 2)
    >>> src.N, src.d
    (6, 4)
    """

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


def _members(path: Path) -> dict[str, Callable[[], Any]]:
    """The named arrays of an .npz or .pt file, read on demand."""
    if path.suffix == ".npz":
        return npz_members(path)
    obj = load_tensors(path, "a .pt of features must be a dict of tensors")
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


def checked(sf: SavedFeatures) -> SavedFeatures:
    """The shapes and dtypes of one source, checked (one line naming the source and the key); nested lists become
    numpy arrays, arrays and tensors stay as given (memory maps stay mapped).

    >>> checked(SavedFeatures("mine", [[1.0, 0.0], [0.0, 1.0]], [0, 1])).features.shape
    (2, 2)
    >>> checked(SavedFeatures("mine", [[1.0, 0.0], [0.0, 1.0]], [0.0, 1.0]))
    Traceback (most recent call last):
    ...
    analysis.array_files.MeasureError: the labels of mine must be integers (class indices 0..K-1), got dtype float64
    """
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
        return read_npy(path)
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
                entry: dict[str, Any] = {"features": read_npy(path)}
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
            entry[key] = read_npy(path)
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
        out.append(checked(SavedFeatures(name, entry["features"], entry["labels"], entry.get("W"), entry.get("b"),
                                          entry.get("ood"))))
    return out


# ---------------------------------------------------------------------------------------------------- blocks


def tensor_block(a: Any, labels: bool = False) -> torch.Tensor:
    """Rows of an array or tensor as a tensor of native byte order (a copy of mapped rows: the map stays clean);
    integer features become float64, labels int64.

    >>> import numpy as np
    >>> tensor_block(np.array([[1, 2]], dtype=">i4")).dtype, tensor_block(np.array([3, 4]), labels=True).dtype
    (torch.float64, torch.int64)
    """
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


def row_ranges(a: Any, rows: int) -> Iterator[tuple[int, int]]:
    """The (start, stop) of the blocks of `rows` rows of `a`, the last one shorter.

    >>> import numpy as np
    >>> list(row_ranges(np.zeros((5, 3)), 2))
    [(0, 2), (2, 4), (4, 5)]
    """
    for start in range(0, int(a.shape[0]), rows):
        yield start, min(int(a.shape[0]), start + rows)


def default_rows(src: SavedFeatures) -> int:
    """The rows of `src`'s features in DEFAULT_BLOCK_BYTES (16 MiB), at least one.

    >>> import numpy as np
    >>> default_rows(SavedFeatures("mine", np.zeros((3, 1024), dtype=np.float32), np.zeros(3, dtype=int)))
    4096
    """
    itemsize = src.features.element_size() if isinstance(src.features, torch.Tensor) else src.features.dtype.itemsize
    return max(1, DEFAULT_BLOCK_BYTES // (src.d * max(itemsize, 1)))


def label_range(sources: Sequence[SavedFeatures], rows: int | None) -> tuple[int, int]:
    """(min, max) of the labels of the sources, one block at a time (`rows` labels, default 2 Mi).

    >>> import numpy as np
    >>> label_range([SavedFeatures("a", np.zeros((3, 2)), np.array([4, 1, 2]))], rows=2)
    (1, 4)
    """
    lo, hi = None, None
    for src in sources:
        step = rows or max(1, DEFAULT_BLOCK_BYTES // 8)
        for i, j in row_ranges(src.labels, step):
            y = tensor_block(src.labels[i:j], labels=True)
            lo = int(y.min()) if lo is None else min(lo, int(y.min()))
            hi = int(y.max()) if hi is None else max(hi, int(y.max()))
    assert lo is not None and hi is not None
    return lo, hi


def class_counts(sources: Sequence[SavedFeatures], K: int, rows: int | None) -> torch.Tensor:
    """The samples of each of the K classes over all the sources, one block of `rows` labels at a time.

    >>> import numpy as np
    >>> class_counts([SavedFeatures("a", np.zeros((3, 2)), np.array([2, 0, 2]))], 4, rows=2).tolist()
    [1, 0, 2, 0]
    """
    counts = torch.zeros(K, dtype=torch.int64)
    for src in sources:
        for i, j in row_ranges(src.labels, rows or max(1, DEFAULT_BLOCK_BYTES // 8)):
            counts += torch.bincount(tensor_block(src.labels[i:j], labels=True), minlength=K)
    return counts

