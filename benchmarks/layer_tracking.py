"""The cost of NC at every layer: a ResNet18 (ufm.backbone.networks, CIFAR-sized inputs 3×32×32, 10 classes) with its
stem and all 8 residual blocks tracked by `NCTracker(model, layer, layers=[...])` against the same passes without
tracking, measured in one run, interleaved, best of --repeats:

- measurement epoch: forward passes over the data in eval mode without gradients — plain `model(x)` against
  `tracker.update(x, y)` (the classifier's input and the 9 stages, pooled by global average, one-pass statistics);
- training epoch: SGD steps over the same data, then the tracked measurement pass, against the SGD steps alone.

    python -m benchmarks.layer_tracking                    # 1024 images, width 64: a few minutes on 2 CPU cores
    python -m benchmarks.layer_tracking --cpu-smoke        # 64 images, width 8: seconds
    python -m benchmarks.layer_tracking --device cuda --images 10000

Also the statistics' memory (class sums and a C×C scatter per stage) against keeping the stages' pooled features.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from analysis.tracking import NCTracker
from ufm.backbone.networks import ResNet18


class Classifier(nn.Module):
    """ResNet18 body, then a linear classifier named fc (whose input the tracker measures)."""

    def __init__(self, width: int, K: int) -> None:
        super().__init__()
        self.body = ResNet18(3, width)
        self.fc = nn.Linear(self.body.out_features, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def stages() -> list[str]:
    return ["body.stem", *[f"body.blocks.{i}" for i in range(8)]]


def measure(images: int, width: int, batch: int, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    K = 10
    model = Classifier(width, K).to(device)
    x = torch.randn(images, 3, 32, 32, device=device)
    y = torch.arange(images, device=device) % K
    batches = [(x[i:i + batch], y[i:i + batch]) for i in range(0, images, batch)]
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    tracker = NCTracker(model, "fc", layers=stages())

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def plain_pass() -> None:
        model.eval()
        with torch.no_grad():
            for xb, _ in batches:
                model(xb)
        sync()

    def tracked_pass() -> None:
        tracker.reset()
        for xb, yb in batches:
            tracker.update(xb, yb)
        tracker.compute_layers()
        sync()

    def train_epoch() -> None:
        model.train()
        for xb, yb in batches:
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync()

    times: dict[str, float] = {}
    runs = {"plain": plain_pass, "tracked": tracked_pass, "train": train_epoch,
            "train+tracked": lambda: (train_epoch(), tracked_pass())}
    for f in runs.values():  # warm-up
        f()
    for _ in range(repeats):  # interleaved: the machine's drift hits every variant alike
        for name, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[name] = min(times.get(name, float("inf")), time.perf_counter() - t0)
    stats_bytes = sum(s.nbytes for s in tracker.layer_stats.values())
    feature_bytes = sum(images * s.d * 4 for s in tracker.layer_stats.values())
    tracker.remove()
    return {"images": images, "width": width, "batch": batch, "device": device, "times": times,
            "stats_bytes": stats_bytes, "feature_bytes": feature_bytes, "layers": len(stages())}


def report(r: dict) -> str:
    t = r["times"]
    lines = [f"ResNet18 (width {r['width']}), {r['images']} images of 3×32×32 in batches of {r['batch']}, "
             f"{r['layers']} stages tracked, on {r['device']} (best of the interleaved repeats)",
             "| epoch | without tracking | with every stage tracked | ratio |", "| --- | --- | --- | --- |",
             f"| measurement (eval forward) | {t['plain']:.3f} s | {t['tracked']:.3f} s | "
             f"**{t['tracked'] / t['plain']:.2f}×** |",
             f"| training (SGD) + measurement | {t['train']:.3f} s (training alone) | {t['train+tracked']:.3f} s | "
             f"**{t['train+tracked'] / t['train']:.2f}×** |",
             f"statistics kept: {r['stats_bytes'] / 2**20:.2f} MiB (class sums and a C×C scatter per stage), against "
             f"{r['feature_bytes'] / 2**20:.1f} MiB for the stages' pooled features of these images"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.layer_tracking", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1024, help="images per epoch (default 1024)")
    p.add_argument("--width", type=int, default=64, help="ResNet18's first-stage channels (default 64)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats, best kept (default 3)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--cpu-smoke", action="store_true", help="64 images, width 8, one repeat: seconds")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.images, args.width, args.batch, args.repeats, args.device = 64, 8, 32, 1, "cpu"
    print(report(measure(args.images, args.width, args.batch, args.repeats, args.device)))


if __name__ == "__main__":
    main()
