"""The peer side of the tracker benchmark: NC1 by rhubarbwu/neural-collapse's accumulators, run on the same
synthetic data as ours, in a fresh process (its peak memory is its own).

Their code is never part of ours: it is imported at run time from a checkout named by an argument or by the
environment variable UFM_PEER_NC (the folder that holds their `neural_collapse` package), e.g.

    git clone https://github.com/rhubarbwu/neural-collapse /tmp/peer-nc
    UFM_PEER_NC=/tmp/peer-nc python -m benchmarks.peers                 # K 32768, d 256, N 200 000, batch 2000
    UFM_PEER_NC=/tmp/peer-nc python -m benchmarks.peers --N 20000       # smaller
    UFM_PEER_NC=/tmp/peer-nc python -m benchmarks.peers --check         # their NC1 against ours, tiny sizes

What is run (their API): MeanAccumulator(K, d, "cpu", dtype).accumulate(X, Y) over one pass and .compute() for
the class means; CovarAccumulator(K, d, "cpu", dtype, M=means).accumulate(X, Y, means) over a second pass and
.compute() for Σ_W; covariance_ratio(Σ_W, means, m_G) (metric "pinv") for NC1.

Their NC1 is tr(pinv(Σ_B) Σ_W) / K with Σ_B = (1/K) Σ_k (μ_k − m_G)(μ_k − m_G)ᵀ, Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(·)ᵀ,
torch.linalg.pinv's default cutoff (singular values below d·eps·σ_max dropped), everything in the accumulators'
dtype (float32 by default). Ours (analysis.nc_metrics) is the same trace ratio, in float64, eigenvalues below
1e-10·λ_max dropped. The one difference of definition is the global mean: their MeanAccumulator.compute() gives
the unweighted mean of the class means, μ̄ = (1/K) Σ_k μ_k (our global_mean="classes"), ours defaults to the mean of
the samples μ_G = Σ_k n_k μ_k / N (global_mean="samples"), and

    Σ_B(μ_G) = Σ_B(μ̄) + (μ̄ − μ_G)(μ̄ − μ_G)ᵀ,

equal only when the classes are balanced (at K = 32 768, N = 200 000 they are not: 6 or 7 samples a class).
Their compute(weighted=True), which would give μ_G, fails on the (K, d) totals (a (K,1) @ (K,d) product), so for
global_mean="samples" this module forms μ_G = Σ_k n_k μ_k / Σ_k n_k from their counts and means and passes it to
covariance_ratio; global_mean="classes" passes their own μ̄. Compare like with like: the same `global_mean` on
both sides.

Timing: "seconds" is the time inside their calls (the two passes' accumulate, compute, covariance_ratio), the
time spent generating the batches excluded ("data_seconds"; "wall_seconds" is the sum; "cpu_seconds" the
process's CPU time over the same span, the better number on a loaded machine; the passes apart in
"mean_pass_seconds", "covar_pass_seconds", "ratio_seconds"). The batches depend on `batch` as well as on the
seed (torch's normal stream is drawn batch by batch): both sides must use the same batch size. "peak_bytes" is
the child's VmHWM (whole process: interpreter, torch, the generator's K×d centers and N labels included);
"base_bytes" its VmRSS just before the first batch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

ENV_VAR = "UFM_PEER_NC"
PACKAGE = "neural_collapse"
REPO_ROOT = Path(__file__).resolve().parents[1]
GLOBAL_MEANS = ("samples", "classes")


def find_peer(path: str | os.PathLike | None = None) -> Path | None:
    """The folder holding their `neural_collapse` package (the folder to put on sys.path): `path`, else the
    environment variable UFM_PEER_NC; a path to the package folder itself is taken to mean its parent. None when
    neither is given or the folder holds no such package."""
    raw = path if path is not None else os.environ.get(ENV_VAR) or None
    if raw is None:
        return None
    p = Path(raw).expanduser().resolve()
    if p.name == PACKAGE and (p / "__init__.py").is_file():
        p = p.parent
    return p if (p / PACKAGE / "__init__.py").is_file() else None


def synthetic_batches(K: int, d: int, N: int, batch: int, seed: int, noise: float = 0.5
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic labelled features, batch by batch: (features (b, d) float32, labels (b,) int64).

    Class centers c_k ~ N(0, I_d); labels: arange(N) % K, shuffled (every class present, N ≥ K); features
    c_{y_i} + noise·N(0, I_d). The same (K, d, N, batch, seed, noise) gives the same batches on every call, so a
    second pass regenerates them (nothing of size N·d is kept). Memory: the K×d centers, the N labels, one batch.
    The noise is drawn batch by batch, so a different `batch` gives different features (same centers, labels)."""
    if N < K:
        raise ValueError(f"every class present needs N >= K, got N={N}, K={K}")
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(K, d, generator=g)
    labels = (torch.arange(N) % K)[torch.randperm(N, generator=g)]
    for start in range(0, N, batch):
        y = labels[start:start + batch]
        yield centers[y] + noise * torch.randn(len(y), d, generator=g), y


class _Clocked:
    """An iterable's items, the time spent producing them added to `seconds`."""

    def __init__(self, items: Iterable):
        self.items, self.seconds = items, 0.0

    def __iter__(self):
        it = iter(self.items)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                self.seconds += time.perf_counter() - t0
                return
            self.seconds += time.perf_counter() - t0
            yield item


def _import_peer(path: Path):
    p = str(path)
    if p not in sys.path:
        sys.path.insert(0, p)
    from neural_collapse.accumulate import CovarAccumulator, MeanAccumulator
    from neural_collapse.measure import covariance_ratio
    return MeanAccumulator, CovarAccumulator, covariance_ratio


def _run_peer(path: Path, K: int, d: int, N: int, batch: int, seed: int, *, dtype: str = "float32",
              global_mean: str = "samples", noise: float = 0.5) -> dict[str, float]:
    """Their two passes and NC1, in this process."""
    if global_mean not in GLOBAL_MEANS:
        raise ValueError(f"global_mean must be one of {GLOBAL_MEANS}, got {global_mean!r}")
    MeanAccumulator, CovarAccumulator, covariance_ratio = _import_peer(path)
    dt = getattr(torch, dtype)
    base = _status_bytes("VmRSS")
    cpu, start = time.process_time(), time.perf_counter()
    first = _Clocked(synthetic_batches(K, d, N, batch, seed, noise))
    mean_acc = MeanAccumulator(K, d, "cpu", dtype=dt)
    for X, Y in first:
        mean_acc.accumulate(X, Y)
    means, m_bar = mean_acc.compute()
    t_mean = time.perf_counter()
    if global_mean == "samples":  # their compute(weighted=True) fails for (K, d) totals: μ_G from their counts
        counts = mean_acc.ns_samples.to(dt)
        m_G = counts @ means / counts.sum()
    else:
        m_G = m_bar
    second = _Clocked(synthetic_batches(K, d, N, batch, seed, noise))
    covar_acc = CovarAccumulator(K, d, "cpu", dtype=dt, M=means)
    for X, Y in second:
        covar_acc.accumulate(X, Y, means)
    sigma_W = covar_acc.compute()
    t_covar = time.perf_counter()
    nc1 = covariance_ratio(sigma_W, means, m_G)
    end = time.perf_counter()
    wall, data = end - start, first.seconds + second.seconds
    return {"seconds": wall - data, "data_seconds": data, "wall_seconds": wall,
            "cpu_seconds": time.process_time() - cpu, "nc1": float(nc1), "base_bytes": base,
            "mean_pass_seconds": t_mean - start - first.seconds,
            "covar_pass_seconds": t_covar - t_mean - second.seconds, "ratio_seconds": end - t_covar}


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmHWM: peak resident set), in bytes; -1 where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def _child(spec: str) -> None:
    args = json.loads(spec)
    threads = args.pop("threads")
    torch.set_num_threads(threads)
    out = _run_peer(Path(args.pop("path")), **args)
    peak = _status_bytes("VmHWM")
    if peak < 0:  # no /proc: the peak resident set from getrusage (kilobytes on Linux, bytes on macOS)
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = rss if sys.platform == "darwin" else rss * 1024
    out["peak_bytes"] = peak
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out))


def peer_nc1(path: str | os.PathLike, K: int, d: int, N: int, batch: int, seed: int, threads: int = 1, *,
             dtype: str = "float32", global_mean: str = "samples", noise: float = 0.5,
             timeout: float | None = None) -> dict[str, float]:
    """Their NC1 on synthetic_batches(K, d, N, batch, seed, noise), in a fresh process limited to `threads`
    threads. Returns {"seconds", "peak_bytes", "nc1"} plus "data_seconds", "wall_seconds", "cpu_seconds",
    the three parts' seconds, "base_bytes" and "threads" (module docstring). `global_mean`: "samples" (our
    default) or "classes" (their default)."""
    peer = find_peer(path)
    if peer is None:
        raise FileNotFoundError(f"no {PACKAGE} package under {path}")
    spec = json.dumps({"path": str(peer), "K": K, "d": d, "N": N, "batch": batch, "seed": seed,
                       "threads": threads, "dtype": dtype, "global_mean": global_mean, "noise": noise})
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", "import sys; from benchmarks.peers import _child; _child(sys.argv[1])",
                           spec], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the peer run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(path: Path, seed: int = 0) -> bool:
    """Their NC1 against ours at tiny sizes, each global mean and dtype; True when all agree."""
    from analysis.metrics import nc_metrics

    cases = [  # (K, d, N, what it exercises)
        (7, 5, 700, "balanced, K > d: Σ_B invertible"),
        (7, 5, 703, "unbalanced: the two global means differ"),
        (5, 7, 700, "balanced, K ≤ d: Σ_B of rank K − 1 (the pseudo-inverse's cutoff)"),
    ]
    tolerance = {"float64": 1e-10, "float32": 1e-4}
    ok = True
    print(f"{'K':>3}{'d':>3}{'N':>5}  {'global mean':<12}{'dtype':<9}{'theirs':>16}{'ours':>16}{'rel. diff':>11}")
    for K, d, N, what in cases:
        H, y = map(torch.cat, zip(*synthetic_batches(K, d, N, 64, seed), strict=True))
        print(f"-- {what}")
        for gm in GLOBAL_MEANS:
            ours = nc_metrics(H.double(), y, global_mean=gm)["nc1"]
            for dtype in ("float64", "float32"):
                theirs = _run_peer(path, K, d, N, 64, seed, dtype=dtype, global_mean=gm)["nc1"]
                rel = abs(theirs - ours) / abs(ours)
                good = rel <= tolerance[dtype]
                ok &= good
                print(f"{K:>3}{d:>3}{N:>5}  {gm:<12}{dtype:<9}{theirs:>16.10g}{ours:>16.10g}{rel:>11.2e}"
                      f"{'' if good else '  DISAGREE'}")
        if N % K:  # the relation between the two global means, on our side alone
            a, b = (nc_metrics(H.double(), y, global_mean=gm)["nc1"] for gm in GLOBAL_MEANS)
            print(f"   ours, samples vs classes: {a:.10g} vs {b:.10g} (Σ_B differs by (μ̄ − μ_G)(μ̄ − μ_G)ᵀ)")
    return ok


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", default=None, help=f"their checkout (default: ${ENV_VAR})")
    p.add_argument("--K", type=int, default=32768)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--N", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="their accumulators' dtype")
    p.add_argument("--global-mean", default="samples", choices=GLOBAL_MEANS)
    p.add_argument("--check", action="store_true", help="their NC1 against ours at tiny sizes, then exit")
    args = p.parse_args(argv)
    peer = find_peer(args.peer)
    if peer is None:
        tried = args.peer if args.peer is not None else os.environ.get(ENV_VAR)
        sys.exit(f"no {PACKAGE} checkout found ({'tried ' + tried if tried else ENV_VAR + ' is not set'}); "
                 f"clone https://github.com/rhubarbwu/neural-collapse and pass --peer PATH or set {ENV_VAR}")
    if args.check:
        sys.exit(0 if check(peer, args.seed) else 1)
    out = peer_nc1(peer, args.K, args.d, args.N, args.batch, args.seed, args.threads, dtype=args.dtype,
                   global_mean=args.global_mean)
    print(f"rhubarbwu/neural-collapse NC1 (Mean/CovarAccumulator, covariance_ratio pinv), K={args.K} d={args.d} "
          f"N={args.N} batch={args.batch} seed={args.seed}, {args.dtype}, global mean {args.global_mean}, "
          f"{out['threads']} thread(s)")
    print(f"seconds in their code {out['seconds']:.2f} (MeanAccumulator pass {out['mean_pass_seconds']:.2f}, "
          f"CovarAccumulator pass {out['covar_pass_seconds']:.2f}, covariance_ratio {out['ratio_seconds']:.2f}); "
          f"data generation {out['data_seconds']:.2f}; wall {out['wall_seconds']:.2f}, process CPU "
          f"{out['cpu_seconds']:.2f} (both with the data generation)")
    print(f"peak memory (VmHWM) {out['peak_bytes'] / 1e9:.3f} GB (resident before the first batch "
          f"{out['base_bytes'] / 1e9:.3f} GB)")
    print(f"nc1 {out['nc1']:.10g}" + ("" if math.isfinite(out["nc1"]) else "  (not finite)"))


if __name__ == "__main__":
    main()
