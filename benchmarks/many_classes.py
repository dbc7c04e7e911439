"""Many classes (issue 24; DESIGN §8): K = 10⁴–10⁵ on one machine, each part in a fresh process so that its peak
memory (VmHWM) is its own, every ratio measured in the same run.

- step: the closed-form CE GD step at K = 32 768, n = 4, d = 256 (float32), its logits in blocks within the memory
  budget, against its floor: the step's three matrix products (Z_B = H_B Wᵀ, G_Bᵀ H_B, G_B W) over the same
  blocks, interleaved, best of `--repeats`;
- tracker: NC metrics of N = 200 000 features of d = 256 in K = 32 768 classes, batches of 2 000, one thread: our
  NCAccumulator with sufficient statistics (one pass, O(K·d + d²) memory) and with the features kept (the exact
  two-pass path), against rhubarbwu/neural-collapse's accumulators on the same data (`--peer PATH` or
  UFM_PEER_NC: their checkout, run beside ours, never copied into ours; benchmarks/peers.py);
- code: the spherical code of K = 1 000 directions in d = 64, its time and its quality against the bounds
  (benchmarks/spherical_code.py).

python -m benchmarks.many_classes [--part step|tracker|code|all] [--quick] [--peer PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SIZES = {"step": dict(K=32768, n=4, d=256), "tracker": dict(K=32768, N=200_000, d=256, batch=2000),
         "code": dict(K=1000, d=64)}
QUICK = {"step": dict(K=4096, n=4, d=256), "tracker": dict(K=4096, N=40_000, d=256, batch=2000),
         "code": dict(K=200, d=16)}


def peak_bytes() -> int:
    """This process's peak resident memory (VmHWM of /proc/self/status), in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return -1


def step_part(K: int, n: int, d: int, repeats: int) -> dict:
    """The fused CE GD step of one configuration against the products of its blocks."""
    import torch

    from analysis.blocked import memory_budget
    from benchmarks.timing import blocked_floor
    from ufm.config import SimConfig
    from ufm.fit.steppers import FusedGD
    from ufm.model import init_params
    from ufm.problem import resolve

    cfg = SimConfig(K=K, n=n, d=d, loss="ce", wd=5e-4, steps=1, certificate=False)
    problem = resolve(cfg)
    params = init_params(problem, torch.device("cpu"), torch.float32)
    y = problem.labels()
    stepper = FusedGD([problem], [params], y)
    blocks = [rows for rows, _ in stepper.gd.blocks]
    floor = blocked_floor(params["H"].detach(), params["W"].detach(), blocks)
    times = {"step": [], "floor": []}
    stepper.step()  # warm-up
    floor()
    for _ in range(repeats):
        for name, f in (("step", stepper.step), ("floor", floor)):
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {"K": K, "n": n, "d": d, "N": cfg.N, "blocks": len(blocks), "rows": blocks[0].stop,
            "budget": memory_budget(), "step_s": min(times["step"]), "floor_s": min(times["floor"]),
            "peak_bytes": peak_bytes(), "threads": torch.get_num_threads()}


def tracker_part(K: int, N: int, d: int, batch: int, keep_features: bool, pairwise: bool) -> dict:
    """Our accumulator over the synthetic batches (one thread; the data's generation not timed, as for the peer)."""
    import torch

    from analysis.tracking import NCAccumulator
    from benchmarks.peers import synthetic_batches

    torch.set_num_threads(1)
    acc = NCAccumulator(K, keep_features=keep_features)
    seconds = 0.0
    for H, y in synthetic_batches(K, d, N, batch, seed=0):
        start = time.perf_counter()
        acc.update(H, y)
        seconds += time.perf_counter() - start
    start = time.perf_counter()
    out = acc.compute(pairwise=pairwise)
    seconds += time.perf_counter() - start
    return {"seconds": seconds, "peak_bytes": peak_bytes(), "nc1": out["nc1"], "state_bytes": acc.nbytes,
            "cpu_seconds": time.process_time()}


def code_part(K: int, d: int) -> dict:
    from benchmarks.spherical_code import code_benchmark

    return code_benchmark(K, d, device="cpu")


def _child(part: str, **kwargs) -> dict:
    """Run one part in a fresh interpreter and return its JSON line."""
    cmd = [sys.executable, "-m", "benchmarks.many_classes", "--child", part, "--kwargs", json.dumps(kwargs)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(f"{part} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def report_step(sizes: dict, repeats: int) -> None:
    r = _child("step", repeats=repeats, **sizes)
    print(f"CE GD step, K={r['K']} n={r['n']} d={r['d']} N={r['N']} float32 on cpu, {r['threads']} threads "
          f"(best of {repeats}, interleaved)")
    print(f"  logits in {r['blocks']} blocks of {r['rows']} rows (memory budget {gib(r['budget'])})")
    print(f"  {'':38}{'s/step':>10}{'ratio':>10}")
    print(f"  {'ours (closed form, blocked)':38}{r['step_s']:10.3f}{r['step_s'] / r['floor_s']:10.2f}  ours / floor")
    print(f"  {'floor (3 products of the blocks)':38}{r['floor_s']:10.3f}{1.0:10.2f}")
    print(f"  peak memory of the process: {gib(r['peak_bytes'])} "
          f"(the N×K logits in one piece would be {gib(r['N'] * r['K'] * 4)})")


def report_tracker(sizes: dict, peer: str | None) -> None:
    from benchmarks.peers import find_peer, peer_nc1

    stats = _child("tracker", keep_features=False, pairwise=False, **sizes)
    every = _child("tracker", keep_features=False, pairwise=True, **sizes)
    kept = _child("tracker", keep_features=True, pairwise=False, **sizes)
    K, N, d, batch = sizes["K"], sizes["N"], sizes["d"], sizes["batch"]
    print(f"NC metrics of N={N} features, d={d}, K={K}, batches of {batch}, one thread")
    print(f"  {'':58}{'seconds':>9}{'peak memory':>13}{'NC1':>14}")
    rows = [("ours, one pass (sufficient statistics), NC1 and d×d metrics", stats),
            ("ours, one pass, and every pair of means (K×K tiles)", every),
            ("ours, features kept, two passes (+ nearest-mean decisions)", kept)]
    path = find_peer(peer)
    theirs = None
    if path is not None:
        theirs = peer_nc1(path, K, d, N, batch, seed=0, threads=1)
        rows.append(("rhubarbwu/neural-collapse: Mean-, CovarAccumulator, NC1", theirs))
    for name, r in rows:
        print(f"  {name:58}{r['seconds']:9.2f}{gib(r['peak_bytes']):>13}{r['nc1']:14.8g}")
    if theirs is not None:
        print(f"  theirs / ours (one pass, NC1) = {theirs['seconds'] / stats['seconds']:.1f}× the time, "
              f"{theirs['peak_bytes'] / stats['peak_bytes']:.2f}× the memory; NC1 agrees to "
              f"{abs(theirs['nc1'] / stats['nc1'] - 1):.1e} (theirs in float32)")
    else:
        print("  (no peer: pass --peer PATH or set UFM_PEER_NC to a checkout of rhubarbwu/neural-collapse)")


def report_code(sizes: dict) -> None:
    from benchmarks.spherical_code import code_rows

    r = _child("code", **sizes)
    print(f"the reference spherical code (Riesz s = 1), {r['device']}, {r['threads']} threads, float64")
    for what, size, measured, against in code_rows(r):
        print(f"  {what}, {size}: {measured} ({against})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.many_classes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("step", "tracker", "code", "all"), default="all")
    p.add_argument("--quick", action="store_true", help="smaller sizes (minutes → seconds)")
    p.add_argument("--repeats", type=int, default=3, help="timings of the step and its floor (best of)")
    p.add_argument("--peer", default=None, help="checkout of rhubarbwu/neural-collapse (default: $UFM_PEER_NC)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        part = {"step": step_part, "tracker": tracker_part, "code": code_part}[args.child]
        print(json.dumps(part(**json.loads(args.kwargs))))
        return 0
    sizes = QUICK if args.quick else SIZES
    for part in ("step", "tracker", "code"):
        if args.part in (part, "all"):
            {"step": lambda: report_step(sizes["step"], args.repeats),
             "tracker": lambda: report_tracker(sizes["tracker"], args.peer),
             "code": lambda: report_code(sizes["code"])}[part]()
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
