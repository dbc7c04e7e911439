"""nc_metrics against the naive full-covariance implementation and against the floor, in one run.

    python -m benchmarks.nc_metrics                      # d = 2048, K = 100, N = 50 000, float32, CPU
    python -m benchmarks.nc_metrics --N 5000 --d 256     # smaller

naive: Σ_W as a d×d matrix (an N×d×d product), Σ_B and its d×d pseudo-inverse, N×K distances.
floor: one pass over the features (class sums) plus one N×d×K product (what NC1 alone needs);
floor+W: the same with an N×d×2K product — NC4 and accuracy also need the logits H Wᵀ, a second
N×d×K product that no method avoids.
"""

from __future__ import annotations

import argparse

import torch

from analysis.metrics import nc_metrics
from benchmarks.timing import best_time


def naive_nc(H: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, K: int) -> dict[str, float]:
    N, d = H.shape
    counts = torch.bincount(y, minlength=K).to(H.dtype)
    mu = H.new_zeros(K, d).index_add_(0, y, H) / counts[:, None]
    M = mu - H.mean(0)
    D = H - mu[y]
    Sigma_W = D.T @ D / N
    Sigma_B = M.T @ M / K
    nc1 = torch.trace(Sigma_W @ torch.linalg.pinv(Sigma_B, hermitian=True)) / K
    E = (torch.eye(K, dtype=H.dtype) - 1.0 / K) / (K - 1) ** 0.5
    A, B = M @ M.T, W @ M.T
    nc2 = torch.linalg.matrix_norm(A / torch.linalg.matrix_norm(A) - E)
    nc3 = torch.linalg.matrix_norm(B / torch.linalg.matrix_norm(B) - E)
    nearest = torch.cdist(H, mu).argmin(1)
    nc4 = ((H @ W.T + b).argmax(1) != nearest).double().mean()
    return {"nc1": float(nc1), "nc2": float(nc2), "nc3": float(nc3), "nc4": float(nc4)}


def floor(H: torch.Tensor, y: torch.Tensor, W: torch.Tensor | None, K: int) -> torch.Tensor:
    sums = H.new_zeros(K, H.shape[1]).index_add_(0, y, H)
    V = sums - sums.mean(0)
    return H @ (V if W is None else torch.cat([V, W])).T


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nc_metrics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--N", type=int, default=50_000)
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--K", type=int, default=100)
    p.add_argument("--repeats", type=int, default=7, help="timings per method; the best is kept")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(args.N) % args.K
    centers = torch.randn(args.K, args.d, generator=g)
    H = (centers[y] + 0.5 * torch.randn(args.N, args.d, generator=g)).to(args.device)
    W = (centers + 0.1 * torch.randn(args.K, args.d, generator=g)).to(args.device)
    b = torch.zeros(args.K, device=args.device)
    y = y.to(args.device)

    ours = nc_metrics(H, y, W, b)
    ref = naive_nc(H, y, W, b, args.K)
    t_ours = best_time(lambda: nc_metrics(H, y, W, b), args.repeats)
    t_naive = best_time(lambda: naive_nc(H, y, W, b, args.K), max(1, args.repeats // 3))
    t_floor = best_time(lambda: floor(H, y, None, args.K), args.repeats)
    t_floor_W = best_time(lambda: floor(H, y, W, args.K), args.repeats)
    t_no_W = best_time(lambda: nc_metrics(H, y), args.repeats)
    print(f"nc_metrics, N={args.N} d={args.d} K={args.K} float32 on {args.device}, "
          f"{torch.get_num_threads()} threads (best of {args.repeats})")
    print(f"{'':<34}{'seconds':>10}{'ratio':>10}")
    print(f"{'naive (d×d covariance + pinv)':<34}{t_naive:>10.3f}{t_naive / t_ours:>10.1f}  naive / ours")
    print(f"{'ours (K×K projection)':<34}{t_ours:>10.3f}{1.0:>10.1f}")
    print(f"{'floor+W (1 pass + N×d×2K product)':<34}{t_floor_W:>10.3f}{t_ours / t_floor_W:>10.2f}  ours / floor+W")
    print(f"{'floor (1 pass + N×d×K product)':<34}{t_floor:>10.3f}{t_ours / t_floor:>10.2f}  ours / floor")
    print(f"{'ours without W (nc1, nc2 only)':<34}{t_no_W:>10.3f}{t_no_W / t_floor:>10.2f}  ours without W / floor")
    print("agreement with naive: " + ", ".join(
        f"{k} {ours[k]:.6g} vs {ref[k]:.6g}" for k in ("nc1", "nc2", "nc3", "nc4")))


if __name__ == "__main__":
    main()
