"""The reference spherical code at scale (analysis.spherical_codes): the search's time and the code's quality against
the bounds no code beats (analysis.code_bounds: the Levenshtein/Rankin bounds on the minimum angle, the universal
lower bound on the Riesz energy) and, in d = 3, against the tables of best codes known (Sloane's packings, the
Thomson energies).

- the tiled energy-and-gradient pass against the plain reference it replaced, in the same process: autograd
  through the whole vector of K(K−1)/2 distances (the old search's objective, one L-BFGS evaluation);
- the search (float64, restarts within --budget seconds): its time, restarts, iterations and seconds per iteration,
  the energy and minimum angle, and their gaps to the bounds;
- `--table`: a few codes in R³ against Sloane's table (max-min) and the Thomson energies (energy).

    python -m benchmarks.spherical_code                          # K = 1000, d = 64: a minute or two on 2 cores
    python -m benchmarks.spherical_code --kind maxmin --K 200 --d 8
    python -m benchmarks.spherical_code --cpu-smoke              # K = 40, d = 8: seconds
    python -m benchmarks.spherical_code --K 10000 --d 512 --device cuda --budget 300

`code_benchmark(K, d, …)` returns the numbers as a dict (benchmarks.gpu_check and benchmarks.many_classes call it);
`code_rows(result)` the table rows. The disk cache is off while it measures (a cached code would take no time).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from benchmarks.timing import best_time

Row = tuple[str, str, str, str]  # what, size, measured, against the reference
SMOKE = {"K": 40, "d": 8}


@contextmanager
def no_disk_cache() -> Iterator[None]:
    """UFM_CACHE=off for the duration (the search must be measured, not read back), and a fresh in-process memo."""
    from analysis import spherical_codes

    before = os.environ.get(spherical_codes.CACHE_ENV)
    os.environ[spherical_codes.CACHE_ENV] = "off"
    spherical_codes.clear_memo()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(spherical_codes.CACHE_ENV, None)
        else:
            os.environ[spherical_codes.CACHE_ENV] = before
        spherical_codes.clear_memo()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pass_times(K: int, d: int, device: torch.device, repeats: int = 3, reference: bool = True) -> dict:
    """Seconds of one energy-and-gradient evaluation at the code's size: the tiled pass, and (where its K(K−1)/2
    distances fit in memory: K <= 20 000) the old objective, autograd through the dense distance vector."""
    from analysis.uniformity import pair_potential, pairwise_distances

    g = torch.Generator().manual_seed(0)
    U = torch.randn(K, d, dtype=torch.float64, generator=g).to(device)
    U /= U.norm(dim=1, keepdim=True)

    def tiled() -> None:
        pair_potential(U, "riesz", 1.0, grad=True)
        _sync(device)

    out = {"tiled": best_time(tiled, repeats)}
    if reference and K <= 20_000:
        X = U.clone().requires_grad_(True)

        def dense() -> None:
            X.grad = None
            r = pairwise_distances(X / X.norm(dim=1, keepdim=True))
            r.pow(-1.0).sum().backward()
            _sync(device)

        out["dense_autograd"] = best_time(dense, repeats)
    return out


def code_benchmark(K: int, d: int, kind: str = "energy", s: float = 1.0, device: str = "auto",
                   budget: float | None = None, restarts: int = 8, seed: int = 0, reference: bool = True) -> dict:
    """Search the code of K points in R^d (no disk cache) and measure it: `seconds` (wall clock of the search),
    `restarts`, `iterations`, `seconds_per_iteration`, `converged`, `energy`, `min_angle_deg`, the quality against
    the bounds and tables (`analysis.code_bounds.code_quality` keys: angle_bound_deg, angle_gap_to_bound_deg,
    energy_bound, energy_rel_gap_to_bound, …), the per-evaluation times (`pass_seconds`: tiled, dense_autograd), the
    estimate the search was admitted on (`estimated_seconds` for one restart), `device` and `threads`; a search
    estimated over its budget is not run: then only `refused` (the message) and `estimated_seconds`.
    >>> r = code_benchmark(12, 3, restarts=2, reference=False)
    >>> round(r["energy"], 6), r["restarts"], abs(r["energy_rel_gap_to_bound"]) < 1e-9   # the icosahedron
    (49.165253, 2, True)
    """
    from analysis.spherical_codes import CodeBudgetError, code_seconds, resolve_device, spherical_code

    dev = resolve_device(device, K, d)
    head = {"K": K, "d": d, "kind": kind, "s": s, "device": dev.type, "threads": torch.get_num_threads()}
    with no_disk_cache():
        estimate = code_seconds(K, d, kind, dev)
        start = time.perf_counter()
        try:
            code = spherical_code(K, d, kind, s, restarts=restarts, seed=seed, budget=budget, device=dev,
                                  progress=True)
        except CodeBudgetError as e:  # a row that says so, not a traceback (the GPU check goes on)
            return {**head, "refused": str(e), "estimated_seconds": estimate}
        seconds = time.perf_counter() - start
    out = {**head, "seconds": seconds, "estimated_seconds": estimate, "restarts": code.restarts,
           "iterations": code.iterations, "seconds_per_iteration": seconds / max(1, code.iterations),
           "converged": code.converged, "timed_out": code.timed_out, "exact": code.exact, "energy": code.energy,
           "min_angle_deg": math.degrees(code.min_angle)}
    out.update(code.quality())
    out["pass_seconds"] = pass_times(K, d, dev, reference=reference)
    return out


def code_rows(r: dict) -> list[Row]:
    """The table rows of one `code_benchmark` result."""
    from analysis.spherical_codes import duration

    size = f"K={r['K']} d={r['d']} ({r['kind']}, {r['device']})"
    if "refused" in r:
        return [("code search (restarts within the budget)", size, "not run", r["refused"])]
    p = r["pass_seconds"]
    rows = []
    if "dense_autograd" in p:
        rows.append(("one energy+gradient evaluation: tiled vs dense autograd (the old search)", size,
                     f"{1e3 * p['tiled']:.2f} ms", f"{p['dense_autograd'] / p['tiled']:.1f}× faster than "
                     f"{1e3 * p['dense_autograd']:.1f} ms"))
    rows.append(("code search (restarts within the budget)", size,
                 f"{r['seconds']:.1f} s: {r['restarts']} restart{'s' if r['restarts'] != 1 else ''}, "
                 f"{r['iterations']} iterations, "
                 f"{1e3 * r['seconds_per_iteration']:.2f} ms/iteration",
                 f"estimated {duration(r['estimated_seconds'])} per restart; "
                 f"{'converged' if r['converged'] else 'cut by the budget' if r['timed_out'] else 'iteration cap'}"))
    rows.append(("energy vs the universal lower bound", size, f"{r['energy']:.10g}",
                 f"{r['energy_rel_gap_to_bound']:.2e} above {r['energy_bound']:.10g} (ULB)"))
    rows.append(("min angle vs the best upper bound", size, f"{r['min_angle_deg']:.4f}°",
                 f"{r['angle_gap_to_bound_deg']:.3f}° below {r['angle_bound_deg']:.4f}° ({r['angle_bound_name']})"))
    if "energy_asymptotic" in r:
        rows.append(("energy vs the asymptotic I_s·K²/2 (an estimate, not a bound)", size, f"{r['energy']:.10g}",
                     f"{r['energy_rel_to_asymptotic']:+.2e} relative to {r['energy_asymptotic']:.10g}"))
    if "table_min_angle_deg" in r and r["kind"] == "maxmin":
        rows.append(("min angle vs Sloane's table", size, f"{r['min_angle_deg']:.7f}°",
                     f"{r['angle_gap_to_table_deg']:.1e}° below {r['table_min_angle_deg']:.7f}°"))
    if "table_energy" in r and r["kind"] == "energy":
        rows.append(("energy vs the best Thomson energy known", size, f"{r['energy']:.9f}",
                     f"{r['energy_rel_gap_to_table']:.1e} relative to {r['table_energy']:.9f}"))
    return rows


def table_rows(sizes: tuple[int, ...] = (14, 24, 30)) -> list[Row]:
    """Codes on S² against the tables: max-min against Sloane's, energy against the Thomson values."""
    rows = []
    for N in sizes:
        for kind in ("maxmin", "energy"):
            r = code_benchmark(N, 3, kind, device="cpu", reference=False)
            rows += [row for row in code_rows(r) if "table" in row[0] or "Thomson" in row[0]]
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.spherical_code", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--K", type=int, default=1000)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--kind", choices=("energy", "maxmin"), default="energy")
    p.add_argument("--s", type=float, default=1.0, help="Riesz exponent (0: log energy)")
    p.add_argument("--device", default="auto")
    p.add_argument("--budget", type=float, default=None, help="seconds (default: the library's DEFAULT_BUDGET)")
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--table", action="store_true", help="also codes in R³ against Sloane's and the Thomson tables")
    p.add_argument("--cpu-smoke", action="store_true", help=f"K = {SMOKE['K']}, d = {SMOKE['d']} on the CPU")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_smoke:
        args.K, args.d, args.device = SMOKE["K"], SMOKE["d"], "cpu"
    r = code_benchmark(args.K, args.d, args.kind, args.s, args.device, args.budget, args.restarts)
    rows = code_rows(r)
    if args.table:
        rows += table_rows()
    print(f"spherical code benchmark ({r['device']}, {r['threads']} threads, float64)\n")
    print("| what | size | measured | against |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
