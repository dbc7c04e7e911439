"""The certificate's cost against K: the first-order solver (FISTA + dual bound, analysis.certificate) on
the general K×K program, the count-group program, and cvxpy/Clarabel where it runs, in one run.

    python -m benchmarks.certificate                  # K = 10 … 1000 (about 4 minutes on 2 CPU cores)
    python -m benchmarks.certificate --max-K 200      # quicker

The problem: imbalanced CE without a bias, 70 % of the classes with 100 samples and 30 % with 10,
λ_W = λ_H = 1e-5 (the minority classes of a long-tailed set). Each row gives the seconds and iterations
until the solver stops (relative dual gap <= 1e-14, or no progress once certified, <= 1e-9), the gap
reached, and the ratio of each solver's time to the general FISTA's; cvxpy's gap is that of the same
dual bound at its end point. The growth exponent is the log-log slope of time against K.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from analysis.certificate import CERTIFIED_RTOL, solve, solve_cvxpy
from analysis.nuclear_program import NuclearProgram
from benchmarks.timing import loglog_slope

CVXPY_MAX_K = 40  # measured: K = 40 takes ~25 s under Clarabel, K = 50 ~50 s


def counts_for(K: int) -> list[int]:
    K_A = round(0.7 * K)
    return [100] * K_A + [10] * (K - K_A)


def timed(f):
    start = time.perf_counter()
    sol = f()
    return time.perf_counter() - start, sol


class FirstCertified:
    """A solver callback that notes when the dual gap first reached CERTIFIED_RTOL."""

    def __init__(self) -> None:
        self.start, self.seconds = time.perf_counter(), math.nan

    def __call__(self, iteration: int, upper: float, lower: float) -> None:
        if math.isnan(self.seconds) and upper - lower <= CERTIFIED_RTOL * abs(upper):
            self.seconds = time.perf_counter() - self.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-K", type=int, default=1000, help="largest K of the general program (default 1000)")
    parser.add_argument("--wd", type=float, default=1e-5, help="λ_W = λ_H (default 1e-5)")
    args = parser.parse_args()
    Ks = [K for K in (10, 20, 30, 40, 50, 100, 200, 500, 1000) if K <= args.max_K]
    print(f"certificate of imbalanced CE (70 % of classes n = 100, 30 % n = 10), λ = {args.wd:g}, float64, "
          f"{torch.get_num_threads()} threads; seconds until the solver stops, relative dual gap reached "
          "(certified: <= 1e-9)")
    print(f"{'K':>5}  {'fista s':>9} {'to 1e-9':>8} {'iters':>6} {'rel gap':>8}  {'grouped s':>9} {'ratio':>6}  "
          f"{'cvxpy s':>8} {'rel gap':>8} {'ratio':>7}")
    rows = []
    for K in Ks:
        counts = counts_for(K)
        general = NuclearProgram.from_counts(counts, "ce", args.wd, args.wd, grouped=False)
        first = FirstCertified()
        t_f, sol = timed(lambda: solve(general, callback=first))  # noqa: B023
        t_g, grouped = timed(lambda: solve(NuclearProgram.from_counts(counts, "ce", args.wd, args.wd)))  # noqa: B023
        line = (f"{K:>5}  {t_f:>9.3f} {first.seconds:>8.3f} {sol.certificate.iterations:>6} "
                f"{sol.certificate.rel_gap:>8.1e}  {t_g:>9.3f} {t_g / t_f:>6.3f}")
        t_c = math.nan
        if K <= CVXPY_MAX_K:
            try:
                t_c, ref = timed(lambda: solve_cvxpy(general))  # noqa: B023
                line += f"  {t_c:>8.2f} {ref.certificate.rel_gap:>8.1e} {t_c / t_f:>7.1f}"
            except RuntimeError as e:
                line += f"  failed: {e}"
        assert math.isclose(sol.certificate.upper, grouped.certificate.upper, rel_tol=1e-8)
        rows.append((K, t_f, t_c, sol.certificate.iterations))
        print(line, flush=True)
    big = [row for row in rows if row[0] >= 50]
    if len(big) >= 2:
        Kb = [row[0] for row in big]
        print(f"growth of the general FISTA, K >= 50: time ∝ K^{loglog_slope(Kb, [row[1] for row in big]):.2f}, "
              f"iterations ∝ K^{loglog_slope(Kb, [row[3] for row in big]):.2f} (a K×K SVD per iteration)")
    small = [(K, t) for K, _, t, _ in rows if not math.isnan(t)]
    if len(small) >= 2:
        print(f"growth of cvxpy/Clarabel: time ∝ K^{loglog_slope(*zip(*small, strict=True)):.2f}")
    print("grouped and general values agree to 1e-8 at every K (asserted)")


if __name__ == "__main__":
    main()
