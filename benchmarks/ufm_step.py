"""One UFM gradient-descent step against a plain autograd loop and against the matrix-product floor, and
batched against sequential configurations, all measured in one run.

    python -m benchmarks.ufm_step                  # K = 10, d = 512, n = 100, float32, CPU
    python -m benchmarks.ufm_step --device cuda

plain autograd: F = mean loss + λ/2‖·‖² through autograd, then torch.optim.SGD (what a researcher writes).
ours: ufm.fit.fused_gd.gd_step, the closed-form step with H's update fused into the last product.
floor: the step's three matrix products alone, Z = H Wᵀ (N×d×K), Gᵀ H and G W, on tensors of its shapes.
batched: one gd_step on B configurations (a λ sweep) against B steps of one configuration each.
scaling: our step's time against N, d and K (doubling each from the base), as fitted log-log slopes.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import best_time, loglog_slope, product_floor
from ufm.fit.fused_gd import GDStep, LossSpec


def problem(N: int, d: int, K: int, B: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    H = (0.1 * torch.randn(B, N, d, generator=g) / d**0.5).to(device)
    W = (0.1 * torch.randn(B, K, d, generator=g) / d**0.5).to(device)
    y = (torch.arange(N) % K).to(device)
    return H, W, y


def ours(N: int, d: int, K: int, B: int, device: str, steps: int = 20):
    H, W, y = problem(N, d, K, B, device)
    step = GDStep(y, LossSpec("ce"), *(torch.full((B,), v, device=device) for v in (1.0, 5e-4, 5e-4, 5e-4)))

    def run() -> None:
        for _ in range(steps):
            step.step(H, W, None)
        if device == "cuda":
            torch.cuda.synchronize()
    return run


def plain_autograd(N: int, d: int, K: int, device: str, steps: int = 20):
    H, W, y = problem(N, d, K, 1, device)
    H, W = H[0].clone().requires_grad_(), W[0].clone().requires_grad_()
    opt = torch.optim.SGD([H, W], lr=1.0)

    def run() -> None:
        for _ in range(steps):
            opt.zero_grad()
            F = torch.nn.functional.cross_entropy(H @ W.T, y) + 2.5e-4 * (H.square().sum() + W.square().sum())
            F.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ufm_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--K", type=int, default=10)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--n", type=int, default=100, help="samples per class")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default="1,4,16,64,256", help="B of the batched comparison")
    p.add_argument("--sweep-shape", default="10,20,64", help="K,n,d of each configuration in the batched comparison")
    args = p.parse_args(argv)
    K, d, N, dev, r = args.K, args.d, args.K * args.n, args.device, args.repeats
    steps = 20
    t_ours = best_time(ours(N, d, K, 1, dev, steps), r) / steps
    t_auto = best_time(plain_autograd(N, d, K, dev, steps), r) / steps
    t_floor = best_time(product_floor([(N, d, K)], dev, steps), r) / steps
    print(f"UFM step, K={K} d={d} N={N} float32 on {dev}, {torch.get_num_threads()} threads (best of {r})")
    print(f"{'':<36}{'ms/step':>10}{'ratio':>10}")
    print(f"{'plain autograd + torch.optim.SGD':<36}{1e3 * t_auto:>10.3f}{t_auto / t_ours:>10.2f}  autograd / ours")
    print(f"{'ours (closed form, fused update)':<36}{1e3 * t_ours:>10.3f}{1.0:>10.2f}")
    print(f"{'floor (3 matrix products)':<36}{1e3 * t_floor:>10.3f}{t_ours / t_floor:>10.2f}  ours / floor")

    sK, sn, sd = (int(v) for v in args.sweep_shape.split(","))
    sN = sK * sn
    print(f"\nbatched λ-sweep, each configuration K={sK} d={sd} N={sN}: one batched step vs B single steps")
    print(f"{'B':>6}{'batched ms':>12}{'sequential ms':>15}{'sequential / batched':>22}")
    for B in (int(b) for b in args.batches.split(",")):
        t_b = best_time(ours(sN, sd, sK, B, dev, 5), max(2, r // 2)) / 5
        single = ours(sN, sd, sK, 1, dev, 5)
        t_s = best_time(lambda: [single() for _ in range(B)], max(2, r // 2)) / 5  # noqa: B023
        print(f"{B:>6}{1e3 * t_b:>12.3f}{1e3 * t_s:>15.3f}{t_s / t_b:>22.2f}")

    print(f"\nscaling of our step from N={N} d={d} K={K} (doubling one at a time): time ∝ size^slope")
    for name in ("N", "d", "K"):
        sizes = [dict(N=N, d=d, K=K) for _ in range(4)]
        for i, s in enumerate(sizes):
            s[name] = s[name] * 2**i
        times = [best_time(ours(s["N"], s["d"], s["K"], 1, dev, 5), max(2, r // 2)) / 5 for s in sizes]
        print(f"  {name}: {[s[name] for s in sizes]} → slope {loglog_slope([s[name] for s in sizes], times):.2f} "
              f"(ms {', '.join(f'{1e3 * t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
