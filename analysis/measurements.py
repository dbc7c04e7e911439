"""The rows of `analysis.measure`: `Measurement` (one source or checkpoint, its NC metrics), and the rows as a text
table (`format_table`: one line per row, chosen columns) and as JSON (`write_json`: every key, NaN as null, written
atomically).

>>> rows = [Measurement("ep1.npz", 100, 10, 64, {"nc1": 0.5}), Measurement("ep2.npz", 100, 10, 64, {"nc1": 0.125})]
>>> print(format_table(rows, ["nc1"]))
source   N    K   d   nc1
ep1.npz  100  10  64  0.5
ep2.npz  100  10  64  0.125
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from analysis.array_files import MeasureError
from analysis.files import write_json as write
from analysis.metrics import METRIC_KEYS
from analysis.ood import OOD_KEYS

__all__ = ["DEFAULT_COLUMNS", "Measurement", "table_columns", "format_table", "write_json"]

DEFAULT_COLUMNS = ("nc1", "nc2", "nc3", "nc4", "accuracy", "ncc_accuracy")


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


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def table_columns(rows: Sequence[Measurement], columns: Sequence[str] | str | None) -> list[str]:
    """The columns of `format_table`'s table after the source: epoch, N, K, d and N_ood where the rows have them, then
    the metrics chosen by `columns` (None: DEFAULT_COLUMNS and excluded_classes and the OOD keys where present;
    "all": every key present; or a list of keys, an unknown one a MeasureError).

    >>> table_columns([Measurement("a.npz", 10, 2, 3, {"nc1": 0.5}, epoch=4)], ["nc1"])
    ['epoch', 'N', 'K', 'd', 'nc1']
    """
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
    cols = table_columns(rows, columns)
    table = [["source", *cols]]
    for r in rows:
        fixed = {"epoch": r.epoch, "N": r.N, "K": r.K, "d": r.d, "N_ood": r.N_ood}
        table.append([r.source, *(_cell(fixed[c] if c in fixed else r.metrics.get(c, math.nan)) for c in cols)])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in table)


def write_json(path: str | os.PathLike, rows: Sequence[Measurement], options: dict[str, Any] | None = None) -> None:
    """{"options": …, "rows": [Measurement.to_dict(), …]} to `path`, NaN and ±inf as null, atomically (a temporary
    file in the same folder, fsync, then os.replace: a reader never sees a torn file).

    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "nc.json")
    >>> write_json(path, [Measurement("a.npz", 10, 2, 3, {"nc3": float("nan")})])
    >>> json.load(open(path))["rows"][0]["metrics"]
    {'nc3': None}
    """
    write(path, {"options": options or {}, "rows": [r.to_dict() for r in rows]})
