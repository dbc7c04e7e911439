"""`python -m ufm.atlas [--smoke] [--markdown] [--readme FILE] [NAME …]`: the UFM literature's results as targets,
one row per theorem — the configuration that tests it, the paper, the predicted and the measured value of its
key quantity, the gap and a verdict. Each row is one float64 L-BFGS run through `ufm.run`, held against the
theory target (or the check block) the run itself reports, so the atlas checks the same code users run. Every
row is small (the whole atlas takes ~25 s on 2 CPU cores), so the test suite runs all of it; `--smoke` runs
one row per family in a few seconds; `--readme FILE` rewrites the table between FILE's atlas markers."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ufm.api import RunResult, run
from ufm.config import SimConfig
from ufm.errors import cli_text
from ufm.output.format import fmt
from ufm.output.rundir import atomic_write_text

Compare = Callable[[RunResult], tuple[float | None, float | None]]


def theory_key(key: str) -> Compare:
    """(predicted, measured) of a key of summary["final"]: the run's theory target against its last measurement."""
    def compare(r: RunResult) -> tuple[float | None, float | None]:
        theory = r.summary["theory"]
        return (theory["predicted"].get(key) if theory["applies"] else None), r.final.get(key)
    return compare


def block_key(block: str, predicted: str, measured: Callable[[dict], float]) -> Compare:
    """(predicted, measured) from a check block of the summary (e.g. sqi, minority)."""
    def compare(r: RunResult) -> tuple[float | None, float | None]:
        b = r.summary.get(block) or {}
        return b.get(predicted), (measured(b) if b else None)
    return compare


def lemma1(r: RunResult) -> tuple[float, float]:
    """Rangamani & Banburski, Lemma 1: the bias-free outputs Wh of a free-bias MSE optimum are NC outputs (α on
    the true class, −α/(K−1) elsewhere), whose square loss is ½((1 − α)² + α²/(K−1)) >= 1/(2K): predicted from
    the measured α, measured directly from the outputs."""
    from analysis.theory import lemma1_square_loss

    H, W = r.params["H"].double(), r.params["W"].double()
    y = torch.repeat_interleave(torch.arange(r.config.K), torch.tensor(r.config.class_counts))
    Z = H @ W.T
    alpha = float(Z.gather(1, y[:, None]).mean())
    measured = float(0.5 * (Z - torch.nn.functional.one_hot(y, r.config.K)).square().sum(1).mean())
    return lemma1_square_loss(alpha, r.config.K), measured


@dataclass(frozen=True)
class Row:
    """A theorem: the run that tests it (`settings`, flat SimConfig keys), the target name the run must report
    (None: a check block's comparison, `compare`), the quantity compared and the tolerance on its relative gap
    (absolute where the prediction is 0). `smoke`: one of the few rows of `--smoke`."""

    name: str
    paper: str
    target: str | None
    settings: dict[str, Any]
    key: str = "loss"
    rtol: float = 1e-8
    compare: Compare | None = None
    smoke: bool = False

    def config(self) -> SimConfig:
        return SimConfig.from_dict({"optimizer": "lbfgs", "dtype": "float64", "steps": 1500, "certificate": False,
                                    **self.settings})


PROG = "python -m ufm.atlas"
SMALL = {"K": 4, "n": 5, "d": 6}
SPHERE = {"K": 4, "n": 3, "d": 6}
ROWS = (
    Row("ce_etf", "Zhu et al. 2021, Thm 3.1", "ce_etf", {**SMALL, "loss": "ce", "wd": 5e-3}, smoke=True),
    Row("ls_etf", "Zhou et al. 2022 (label smoothing)", "ls_etf", {**SMALL, "loss": "ls", "smoothing": 0.15,
                                                                    "wd": 5e-3}),
    Row("mse_bias_free", "Zhou et al. 2022; Tirer & Bruna 2022", "mse_bias_free", {**SMALL, "loss": "mse",
                                                                                  "wd": 5e-3}, smoke=True),
    Row("mse_free_bias", "Han et al. 2022 (MSE NC); DESIGN §5.2", "mse_free_bias",
        {**SMALL, "loss": "mse", "bias": True, "wd": 5e-3, "wd_b": 0.0}),
    Row("mse_regularized_bias", "DESIGN §5.2 (derived)", "mse_regularized_bias",
        {**SMALL, "loss": "mse", "bias": True, "wd": 5e-3}),
    Row("mse_imbalanced", "imbalanced bias-free MSE: per-class shrinkage", "mse_bias_free",
        {"counts": (8, 6, 4, 2), "d": 6, "loss": "mse", "wd": 5e-3}),
    Row("sqi", "Rangamani & Banburski 2022 (SQI: ‖w_c‖²)", None,
        {**SMALL, "loss": "mse", "bias": True, "wd": 5e-3, "wd_b": 0.0}, key="W_row_norm_sq",
        compare=block_key("sqi", "sqi_W_row_norm_sq", lambda b: sum(b["W_row_norm_sq"]) / len(b["W_row_norm_sq"]))),
    Row("lemma1", "Rangamani & Banburski 2022, Lemma 1", None,
        {**SMALL, "loss": "mse", "bias": True, "wd": 5e-3, "wd_b": 0.0}, key="square_loss(Wh)", compare=lemma1),
    Row("minority_collapse", "Fang et al. 2021 (minority collapse)", None,
        {"counts": (20, 20, 1, 1), "d": 6, "loss": "ce", "wd": 3e-2, "certificate": True}, key="minority_cos",
        rtol=1e-6, compare=block_key("minority", "ufm_optimum_cosine", lambda b: b["cosine"])),
    Row("focal_etf", "Zhou et al. 2022 (focal loss)", "focal_etf", {**SMALL, "loss": "focal", "focal_gamma": 2.0,
                                                                    "wd": 5e-3}),
    Row("deep_linear_mse", "Dang et al. 2023; Súkeník et al. 2023", "deep_linear_mse",
        {**SMALL, "d": 8, "width": 8, "depth": 3, "loss": "mse", "wd": 1e-3, "steps": 3000}, smoke=True),
    Row("dnc_binary", "Súkeník, Mondelli & Lampert 2023 (K = 2)", "dnc",
        {"K": 2, "n": 5, "d": 4, "width": 4, "depth": 3, "act": "relu", "loss": "mse", "wd": 5e-3, "steps": 2000},
        rtol=1e-6),
    Row("sphere_etf", "Graf et al. 2021; Lu & Steinerberger 2022", "sphere_etf",
        {**SMALL, "loss": "ce", "normalize": "both", "temperature": 0.5}, smoke=True),
    Row("sphere_features", "Yaras et al. 2022 setting; scale derived (analysis.sphere)", "sphere_etf",
        {**SPHERE, "loss": "ce", "normalize": "features", "temperature": 0.5, "wd_W": 1e-2}),
    Row("sphere_classifier", "normalized classifier; scale derived (analysis.sphere)", "sphere_etf",
        {**SPHERE, "loss": "ce", "normalize": "classifier", "temperature": 0.5, "wd_H": 1e-2}),
    Row("ls_sphere_tilt", "label smoothing on the sphere: margin u* < K/((K−1)τ) (derived)", "sphere_etf",
        {"K": 4, "n": 3, "d": 5, "loss": "ls", "smoothing": 0.3, "normalize": "both", "temperature": 0.2}),
    Row("focal_sphere", "focal loss on the sphere (derived, condition checked)", "sphere_etf",
        {**SPHERE, "loss": "focal", "focal_gamma": 2.0, "normalize": "both", "temperature": 0.5}),
    Row("supcon_etf", "Graf et al. 2021 (supervised contrastive)", "supcon_etf",
        {**SPHERE, "loss": "supcon", "temperature": 0.5}, smoke=True),
    Row("mse_nonneg", "Tirer & Bruna 2022 (non-negative features)", "mse_nonneg",
        {**SMALL, "loss": "mse", "wd": 5e-3, "features": "nonneg"}),
    Row("haframe_optimum", "Liang & Davis 2023 (HAFrame)", "haframe_optimum",
        {"K": 6, "n": 5, "d": 8, "loss": "haframe", "hierarchy": "balanced:2,3", "wd": 5e-3}, rtol=1e-7),
    Row("hug_etf", "Liu et al. 2023 (HUG, K <= d + 1)", "simplex_etf",
        {"K": 4, "n": 5, "d": 3, "loss": "hug", "wd": 0.0}, key="nc1", rtol=1e-8, smoke=True),
    Row("spherical_code", "Liu et al. 2023 (HUG, K > d + 1: the Thomson code)", "spherical_code",
        {"K": 5, "n": 3, "d": 2, "loss": "hug", "wd": 0.0}, key="energy_W", rtol=1e-8),
)


def measure_row(row: Row) -> dict[str, Any]:
    """Run the row's configuration; the predicted and measured value of its key, the gap and the verdict."""
    start = time.perf_counter()
    result = run(row.config(), progress=False)
    theory = result.summary["theory"]
    predicted, measured = (row.compare or theory_key(row.key))(result)
    gap = None
    if predicted is not None and measured is not None:
        gap = abs(measured - predicted) / (abs(predicted) if abs(predicted) > 1e-12 else 1.0)
    ok = (row.target is None or theory["name"] == row.target) and gap is not None and gap <= row.rtol
    return {"name": row.name, "paper": row.paper, "target": theory["name"], "quantity": row.key,
            "predicted": predicted, "measured": measured, "gap": gap, "rtol": row.rtol,
            "verdict": "reproduced" if ok else "NOT reproduced", "seconds": time.perf_counter() - start}


def atlas(names: Sequence[str] = (), smoke: bool = False, progress: bool = False) -> list[dict[str, Any]]:
    """Every row (or those named, or the smoke rows), measured. Example:
    >>> [r["verdict"] for r in atlas(["ce_etf", "sphere_etf"])]
    ['reproduced', 'reproduced']
    """
    unknown = set(names) - {r.name for r in ROWS}
    if unknown:
        raise ValueError(f"unknown atlas rows {sorted(unknown)}; rows: {[r.name for r in ROWS]}")
    chosen = [r for r in ROWS if (not names or r.name in names) and (not smoke or r.smoke)]
    if not progress:
        return [measure_row(r) for r in chosen]
    from tqdm import tqdm

    out = []
    with tqdm(chosen, desc="atlas", unit="row", file=sys.stderr) as bar:
        for r in bar:
            bar.set_postfix_str(r.name)
            out.append(measure_row(r))
    return out


def _fmt(x: Any) -> str:
    """Numbers as the end-of-run table prints them (ufm.output.format.fmt), anything else as text."""
    return fmt(x) if x is None or isinstance(x, float) else str(x)


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    cols = ("name", "paper", "quantity", "predicted", "measured", "gap", "verdict")
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
        lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
        return "\n".join(lines)
    return "\n".join(f"{r['name']:<20} {r['quantity']:<16} predicted {_fmt(r['predicted']):>12}  measured "
                     f"{_fmt(r['measured']):>12}  gap {_fmt(r['gap']):>10}  {r['verdict']:<15} {r['paper']} "
                     f"({r['seconds']:.1f} s)" for r in rows)


README_START, README_END = "<!-- atlas:start -->", "<!-- atlas:end -->"


def update_readme(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace the text between the atlas markers of `path` by the Markdown table of `rows` (atomically)."""
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{path} has no {README_START} … {README_END} markers")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(path, head + README_START + "\n" + table(rows, markdown=True) + "\n" + README_END + tail)


def main(argv: Sequence[str] | None = None) -> int:
    from ufm.cli.common import OneLineParser, add_version_flag, report_to_stderr

    p = OneLineParser(prog=PROG, description=__doc__)
    p.add_argument("names", nargs="*", help=f"rows to run (default: all): {', '.join(r.name for r in ROWS)}")
    p.add_argument("--markdown", action="store_true", help="a Markdown table (for the README)")
    p.add_argument("--smoke", action="store_true", help="only the smoke rows, one per family (a few seconds): "
                                                        + ", ".join(r.name for r in ROWS if r.smoke))
    p.add_argument("--readme", type=Path, default=None, metavar="FILE",
                   help="also write the Markdown table into FILE between its atlas:start/atlas:end markers "
                        "(the README's theory section)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_version_flag(p)
    args = p.parse_args(argv)
    if args.readme is not None and (args.names or args.smoke):
        p.error("--readme writes the whole atlas: give no row names and no --smoke")
    try:
        with report_to_stderr(PROG):
            rows = atlas(args.names, smoke=args.smoke, progress=not args.no_progress)
            if args.readme is not None:
                update_readme(args.readme, rows)
    except (ValueError, OSError) as e:
        p.error(cli_text(e))
    print(table(rows, args.markdown))
    return 0 if all(r["verdict"] == "reproduced" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
