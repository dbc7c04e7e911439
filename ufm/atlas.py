"""`python -m ufm.atlas [--markdown] [NAME …]`: the UFM literature's results as targets, one row per theorem —
the configuration that tests it, the paper, the predicted and the measured value of its key quantity, the
gap and a verdict. Each row is one float64 L-BFGS run through `ufm.run`, held against the theory target the
run itself reports (so the atlas checks the same code users run). Every row is small (the whole atlas takes
~15 s on 2 CPU cores), so the test suite runs all of it."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ufm.api import run
from ufm.config import SimConfig
from ufm.output.format import fmt


@dataclass(frozen=True)
class Row:
    """A theorem: the run that tests it (`settings`, flat SimConfig keys), the target name the run must report,
    the quantity compared (a key of summary["final"] and of the target's predictions) and the tolerance on
    its relative gap (absolute where the prediction is 0)."""

    name: str
    paper: str
    target: str
    settings: dict[str, Any]
    key: str = "loss"
    rtol: float = 1e-8

    def config(self) -> SimConfig:
        return SimConfig.from_dict({"optimizer": "lbfgs", "dtype": "float64", "steps": 1500, "certificate": False,
                                    **self.settings})


SMALL = {"K": 4, "n": 5, "d": 6}
ROWS = (
    Row("ce_etf", "Zhu et al. 2021, Thm 3.1", "ce_etf", {**SMALL, "loss": "ce", "wd": 5e-3}),
    Row("ls_etf", "Zhou et al. 2022 (label smoothing)", "ls_etf", {**SMALL, "loss": "ls", "smoothing": 0.15,
                                                                    "wd": 5e-3}),
    Row("mse_bias_free", "Zhou et al. 2022; Tirer & Bruna 2022", "mse_bias_free", {**SMALL, "loss": "mse",
                                                                                  "wd": 5e-3}),
    Row("mse_free_bias", "Han et al. 2022 (MSE NC); DESIGN §5.2", "mse_free_bias",
        {**SMALL, "loss": "mse", "bias": True, "wd": 5e-3, "wd_b": 0.0}),
    Row("mse_regularized_bias", "DESIGN §5.2 (derived)", "mse_regularized_bias",
        {**SMALL, "loss": "mse", "bias": True, "wd": 5e-3}),
    Row("mse_imbalanced", "imbalanced bias-free MSE: per-class shrinkage", "mse_bias_free",
        {"counts": (8, 6, 4, 2), "d": 6, "loss": "mse", "wd": 5e-3}),
    Row("focal_etf", "Zhou et al. 2022 (focal loss)", "focal_etf", {**SMALL, "loss": "focal", "focal_gamma": 2.0,
                                                                    "wd": 5e-3}),
    Row("deep_linear_mse", "Dang et al. 2023; Súkeník et al. 2023", "deep_linear_mse",
        {**SMALL, "d": 8, "width": 8, "depth": 3, "loss": "mse", "wd": 1e-3, "steps": 3000}),
    Row("dnc_binary", "Súkeník, Mondelli & Lampert 2023 (K = 2)", "dnc",
        {"K": 2, "n": 5, "d": 4, "width": 4, "depth": 3, "act": "relu", "loss": "mse", "wd": 5e-3, "steps": 2000},
        rtol=1e-6),
    Row("sphere_etf", "Graf et al. 2021; Lu & Steinerberger 2022", "sphere_etf",
        {**SMALL, "loss": "ce", "normalize": "both", "temperature": 0.5}),
    Row("mse_nonneg", "Tirer & Bruna 2022 (non-negative features)", "mse_nonneg",
        {**SMALL, "loss": "mse", "wd": 5e-3, "features": "nonneg"}),
    Row("haframe_optimum", "Liang & Davis 2023 (HAFrame)", "haframe_optimum",
        {"K": 6, "n": 5, "d": 8, "loss": "haframe", "hierarchy": "balanced:2,3", "wd": 5e-3}, rtol=1e-7),
    Row("hug_etf", "Liu et al. 2023 (HUG, K <= d + 1)", "simplex_etf",
        {"K": 4, "n": 5, "d": 3, "loss": "hug", "wd": 0.0}, key="nc1", rtol=1e-8),
)


def measure_row(row: Row) -> dict[str, Any]:
    """Run the row's configuration; the predicted and measured value of its key, the gap and the verdict."""
    start = time.perf_counter()
    s = run(row.config(), progress=False).summary
    theory = s["theory"]
    predicted = theory["predicted"].get(row.key) if theory["applies"] else None
    measured = s["final"].get(row.key)
    gap = s["rel_gap"].get(row.key)
    ok = theory["name"] == row.target and gap is not None and gap <= row.rtol
    return {"name": row.name, "paper": row.paper, "target": theory["name"], "quantity": row.key,
            "predicted": predicted, "measured": measured, "gap": gap, "rtol": row.rtol,
            "verdict": "reproduced" if ok else "NOT reproduced", "seconds": time.perf_counter() - start}


def atlas(names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every row (or those named), measured. Example:
    >>> [r["verdict"] for r in atlas(["ce_etf", "sphere_etf"])]
    ['reproduced', 'reproduced']
    """
    unknown = set(names) - {r.name for r in ROWS}
    if unknown:
        raise ValueError(f"unknown atlas rows {sorted(unknown)}; rows: {[r.name for r in ROWS]}")
    return [measure_row(r) for r in ROWS if not names or r.name in names]


def _fmt(x: Any) -> str:
    """Numbers as the end-of-run table prints them (ufm.output.format.fmt), anything else as text."""
    return fmt(x) if x is None or isinstance(x, float) else str(x)


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    cols = ("name", "paper", "quantity", "predicted", "measured", "gap", "verdict")
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
        lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
        return "\n".join(lines)
    return "\n".join(f"{r['name']:<22} {r['quantity']:<6} predicted {_fmt(r['predicted']):>12}  measured "
                     f"{_fmt(r['measured']):>12}  gap {_fmt(r['gap']):>10}  {r['verdict']:<15} {r['paper']} "
                     f"({r['seconds']:.1f} s)" for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    from ufm.cli.common import OneLineParser

    p = OneLineParser(prog="python -m ufm.atlas", description=__doc__)
    p.add_argument("names", nargs="*", help=f"rows to run (default: all): {', '.join(r.name for r in ROWS)}")
    p.add_argument("--markdown", action="store_true", help="a Markdown table (for the README)")
    args = p.parse_args(argv)
    try:
        rows = atlas(args.names)
    except ValueError as e:
        p.error(str(e))
    print(table(rows, args.markdown))
    return 0 if all(r["verdict"] == "reproduced" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
