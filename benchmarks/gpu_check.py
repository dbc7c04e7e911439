"""The GPU check: one command for a session that is lent a GPU, at most ~8 minutes, writing one Markdown table — the
GPU tests; the UFM step against its matrix-product floor (one layer, fixed frame, deep); batched B = 256 against
sequential; the NC metrics streamed at N = 1.28 M, d = 2048, K = 1000; the ImageNet-scale UFM's steps/s (K = 1000,
n = 130, d = 2048, float32 with TF32); many classes: the CE step at K = 10⁵, d = 512, N = 10⁶ (logits in blocks;
steps/s, memory, against its floor) and the spherical code of K = 10 000 directions in d = 512; ResNet18 on a
CIFAR-shaped synthetic set (epochs/s and NC measurement time, bf16 autocast); one UFM on 2 GPUs with NCCL (skipped,
saying why, with fewer). `--cpu-smoke` runs every row at toy
sizes on the CPU (the test suite does), so the script cannot rot before a GPU comes.

    bash benchmarks/gpu_check.sh --out gpu_check.md          # on the GPU machine
    python -m benchmarks.gpu_check --cpu-smoke               # anywhere, seconds
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.timing import best_time, blocked_floor

Row = tuple[str, str, str, str]  # what, size, measured, against the reference

FULL = {"step": (100, 1000, 512), "deep": (100, 200, 512), "frame": ("cifar100", 100, 512), "batch": 256,
        "metrics": (1_280_000, 2048, 1000), "imagenet": (1000, 130, 2048), "resnet": (10, 500, 100), "steps": 20,
        "many": (100_000, 10, 512), "code": (10_000, 512), "layers": (10_000, 64, 256),
        "dist": (10_000, 100, 512)}
SMOKE = {"step": (10, 10, 32), "deep": (4, 10, 16), "frame": ("balanced:2,3", 5, 24), "batch": 4,
         "metrics": (3000, 16, 10), "imagenet": (10, 13, 32), "resnet": (4, 4, 4), "steps": 3,
         "many": (64, 3, 8), "code": (40, 8), "layers": (64, 8, 32), "dist": (10, 4, 8)}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(f: Callable[[], object], device: str, repeats: int = 3) -> float:
    def run() -> None:
        f()
        sync(device)
    return best_time(run, repeats)


def gpu_tests(device: str) -> Row:
    if device != "cuda":
        return ("GPU tests (tests/ufm/test_gpu.py)", "—", "not run: no CUDA (--cpu-smoke)", "—")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/ufm/test_gpu.py"],
                          capture_output=True, text=True, timeout=300)
    last = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return ("GPU tests (tests/ufm/test_gpu.py)", "—", last, "exit 0" if done.returncode == 0 else "FAILED")


def one_layer_step(device: str, s: dict) -> list[Row]:
    from benchmarks.timing import product_floor
    from benchmarks.ufm_step import ours

    K, n, d = s["step"]
    N, steps = K * n, s["steps"]
    t_ours = timed(ours(N, d, K, 1, device, steps), device) / steps
    t_floor = timed(product_floor([(N, d, K)], device, steps), device) / steps
    B = s["batch"]
    t_batch = timed(ours(N, d, K, B, device, steps), device) / steps
    return [("one-layer GD step (CE) vs its 3 matrix products", f"N={N} d={d} K={K}", f"{1e3 * t_ours:.3f} ms",
             f"{t_ours / t_floor:.2f}× floor"),
            (f"batched B = {B} vs {B} sequential steps", f"N={N} d={d} K={K}", f"{1e3 * t_batch:.3f} ms per batch",
             f"{B * t_ours / t_batch:.1f}× faster than sequential")]


def fixed_frame_step(device: str, s: dict) -> Row:
    from benchmarks.fixed_frame import time_steps
    from ufm.config import SimConfig
    from ufm.fit.fixed_frame import LogitGD
    from ufm.fit.steppers import Autograd
    from ufm.model import init_params
    from ufm.problem import class_tree, resolve

    tree, n, d = s["frame"]
    cfg = SimConfig.from_dict({"K": class_tree(tree).K, "n": n, "d": d, "loss": "haframe", "hierarchy": tree})
    problem = resolve(cfg)
    y, dev = problem.labels(device), torch.device(device)
    full = time_steps(Autograd(problem, init_params(problem, dev, torch.float32), y), s["steps"], dev)
    reduced = time_steps(LogitGD(problem, init_params(problem, dev, torch.float32), y), s["steps"], dev)
    return ("fixed-frame step (HAFrame, LogitGD) vs the full-space step", f"{tree}: N={cfg.N} d={d} K={cfg.K}",
            f"{1e3 * reduced:.3f} ms", f"{full / reduced:.1f}× faster than full space")


def deep_step(device: str, s: dict) -> Row:
    from benchmarks.timing import product_floor
    from ufm.config import SimConfig
    from ufm.fit.steppers import Autograd
    from ufm.model import init_params
    from ufm.problem import resolve

    K, n, d = s["deep"]
    cfg = SimConfig(K=K, n=n, d=d, depth=3, loss="mse", device=device)
    problem = resolve(cfg)
    y, dev = problem.labels(device), torch.device(device)
    stepper = Autograd(problem, init_params(problem, dev, torch.float32), y)
    t = timed(stepper.step, device)
    floor = product_floor([(cfg.N, d, d)] * 3, device, 1)  # 2 hidden layers + W, taken as d × d
    return ("deep UFM step (L = 3, MSE, autograd) vs its matrix products", f"N={cfg.N} d={d} K={K}",
            f"{1e3 * t:.3f} ms", f"{t / timed(floor, device):.2f}× floor")


def streamed_metrics(device: str, s: dict) -> Row:
    from analysis.metrics import nc_metrics_streaming

    N, d, K = s["metrics"]
    batch = min(N, 65_536)
    g = torch.Generator(device=device).manual_seed(0)
    centers = torch.randn(K, d, device=device, generator=g)
    W = centers + 0.1 * torch.randn(K, d, device=device, generator=g)

    def batches():
        for start in range(0, N, batch):
            y = torch.arange(start, min(N, start + batch), device=device) % K
            yield centers[y] + 0.5 * torch.randn(len(y), d, device=device, generator=g), y

    t = timed(lambda: nc_metrics_streaming(batches, K, W), device, repeats=1)
    return ("NC metrics, streamed (two passes)", f"N={N} d={d} K={K}", f"{t:.3g} s", f"{N / t / 1e6:.3g} M samples/s")


def imagenet_ufm(device: str, s: dict) -> Row:
    from ufm.config import SimConfig
    from ufm.fit.steppers import FusedGD
    from ufm.model import init_params
    from ufm.problem import resolve

    K, n, d = s["imagenet"]
    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = SimConfig(K=K, n=n, d=d, loss="ce", device=device)
    problem = resolve(cfg)
    y, dev = problem.labels(device), torch.device(device)
    stepper = FusedGD([problem], [init_params(problem, dev, torch.float32)], y)
    steps = s["steps"]

    def run() -> None:
        for _ in range(steps):
            stepper.step()
    t = timed(run, device, repeats=2) / steps
    peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device == "cuda" else ""
    return ("ImageNet-scale UFM (CE, GD, float32/TF32)", f"N={cfg.N} d={d} K={K}", f"{1 / t:.1f} steps/s{peak}",
            "goal ≥ 20 steps/s on one H100")


def many_classes(device: str, s: dict) -> Row:
    """The CE GD step with 10⁵ classes (K = 100 000, n = 10, d = 512: N = 10⁶), its logits in blocks within the
    memory budget, against the three products of the same blocks; steps/s and the peak memory."""
    from ufm.config import SimConfig
    from ufm.fit.steppers import FusedGD
    from ufm.model import init_params
    from ufm.problem import resolve

    K, n, d = s["many"]
    cfg = SimConfig(K=K, n=n, d=d, loss="ce", device=device, certificate=False)
    problem = resolve(cfg)
    y, dev = problem.labels(device), torch.device(device)
    params = init_params(problem, dev, torch.float32)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stepper = FusedGD([problem], [params], y)
    blocks = [rows for rows, _ in stepper.gd.blocks]
    floor = blocked_floor(params["H"].detach(), params["W"].detach(), blocks)
    t = timed(stepper.step, device, repeats=2)
    t_floor = timed(floor, device, repeats=2)
    peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device == "cuda" else ""
    return ("many classes: CE GD step, logits in blocks", f"N={cfg.N} d={d} K={K} ({len(blocks)} blocks)",
            f"{1 / t:.2f} steps/s{peak}", f"{t / t_floor:.2f}× floor")


def spherical_code_row(device: str, s: dict) -> Row:
    """The spherical code of K = 10 000 directions in d = 512 (HUG's target beyond d + 1): the search's time within a
    budget of 300 s, its energy against the universal lower bound and its minimum angle against the best bound."""
    from benchmarks.spherical_code import code_benchmark

    K, d = s["code"]
    r = code_benchmark(K, d, device=device, budget=300.0, restarts=1, reference=False)
    size = f"K={K} d={d}"
    if "refused" in r:
        return ("spherical code (Riesz s = 1, restarts within 300 s)", size, "not run", r["refused"])
    return ("spherical code (Riesz s = 1, restarts within 300 s)", size,
            f"{r['seconds']:.1f} s, {r['iterations']} iterations",
            f"energy {r['energy_rel_gap_to_bound']:.1e} above the ULB; min angle {r['min_angle_deg']:.2f}° "
            f"≤ {r['angle_bound_deg']:.2f}° ({r['angle_bound_name']})")


def resnet(device: str, s: dict) -> Row:
    import ufm
    from ufm.backbone.config import TrainConfig

    classes, per_class, width = s["resnet"]
    cfg = TrainConfig.from_dict(dict(dataset="synthetic", arch="resnet18", classes=classes, per_class=per_class,
                                     test_per_class=max(1, per_class // 5), input_shape=(3, 32, 32),
                                     resnet_width=width if device != "cuda" else 64, epochs=2, batch_size=128,
                                     device=device, amp="on" if device == "cuda" else "off"))
    start = time.perf_counter()
    timing = ufm.train(cfg, progress=False).summary["timing"]
    total = time.perf_counter() - start
    return ("ResNet18, CIFAR-shaped synthetic" + (", bf16 autocast" if device == "cuda" else ""),
            f"{classes}×{per_class} images 3×32×32", f"{timing['epochs_per_second']:.2f} epochs/s",
            f"NC measurement {timing['mean_measure_seconds']:.2f} s each ({total:.0f} s in all)")


def layer_tracking_row(device: str, s: dict) -> Row:
    """NCTracker with a ResNet18's stem and 8 blocks tracked, against the same untracked forward (benchmarks.
    layer_tracking)."""
    from benchmarks.layer_tracking import measure

    images, width, batch = s["layers"]
    r = measure(images, width, batch, repeats=2, device=device)
    t = r["times"]
    return ("NC at every layer: ResNet18, 9 stages tracked", f"{images} images 3×32×32, width {width}",
            f"{t['tracked']:.2f} s a measurement pass", f"{t['tracked'] / t['plain']:.2f}× the untracked forward "
            f"({t['plain']:.2f} s); {r['stats_bytes'] / 2**20:.1f} MiB of statistics")


def distributed_row(device: str, s: dict) -> Row:
    """One UFM on 2 GPUs with NCCL (benchmarks.distributed): the fused GD step's efficiency t1/(2·t2) against one
    GPU; skipped, saying why, where fewer than 2 GPUs are present (the CPU smoke: gloo's scaling is the CPU
    benchmark's, python -m benchmarks.distributed)."""
    from benchmarks.distributed import scaling

    K, n, d = s["dist"]
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if gpus < 2:
        return ("data-parallel UFM, NCCL", f"K = {K}, n = {n}, d = {d}",
                f"skipped: {gpus} GPU{'s' if gpus != 1 else ''} here, NCCL needs 2", "—")
    r = scaling(K, n, d, s["steps"], 2, "cuda")
    return ("data-parallel UFM, NCCL", f"K = {K}, n = {n}, d = {d}, 2 GPUs",
            f"{1 / r['tP']:.1f} steps/s", f"efficiency t1/(2·t2) = {r['efficiency']:.2f} (1 GPU: {1 / r['t1']:.1f} "
            f"steps/s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true", help="every row at toy sizes on the CPU (seconds)")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table to this file")
    args = p.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("python -m benchmarks.gpu_check: error: no CUDA device here (use --cpu-smoke for the toy run)",
              file=sys.stderr)
        return 2
    device, sizes = ("cpu", SMOKE) if args.cpu_smoke else ("cuda", FULL)
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    rows: list[Row] = []
    checks = [lambda: [gpu_tests(device)], lambda: one_layer_step(device, sizes),
              lambda: [fixed_frame_step(device, sizes)], lambda: [deep_step(device, sizes)],
              lambda: [streamed_metrics(device, sizes)], lambda: [imagenet_ufm(device, sizes)],
              lambda: [many_classes(device, sizes)], lambda: [spherical_code_row(device, sizes)],
              lambda: [resnet(device, sizes)], lambda: [layer_tracking_row(device, sizes)],
              lambda: [distributed_row(device, sizes)]]
    start = time.perf_counter()
    for check in checks:
        try:
            rows.extend(check())
        except Exception as e:  # noqa: BLE001 - one failing row must not cost the others
            rows.append((getattr(check, "__name__", "check"), "—", f"FAILED: {type(e).__name__}: {e}", "—"))
        print(f"  {rows[-1][0]}: {rows[-1][2]}", file=sys.stderr, flush=True)
    smoke = " (cpu smoke: toy sizes)" if args.cpu_smoke else ""
    lines = [f"GPU check on {name}, torch {torch.__version__}{smoke}, {time.perf_counter() - start:.0f} s", "",
             "| what | size | measured | against |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")
    return 1 if any("FAILED" in " ".join(r) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
