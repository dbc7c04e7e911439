"""Memory, estimated before anything is allocated: a configuration that cannot fit is refused with one line
(--d 1000000000 used to end in an out-of-memory traceback)."""

from __future__ import annotations

import os

from ufm.config import SimConfig
from ufm.errors import ConfigError

# parameter-sized buffers a run holds: the parameters, their gradients, the optimizer's state (Adam: 2 more;
# L-BFGS: its history of 20 pairs), plus the float64 copy (and its gradients) each measurement makes
STATE_COPIES = {"gd": 3, "sgd": 3, "adam": 5, "lbfgs": 2 + 2 * 20}
HEADROOM = 0.9  # refuse beyond this fraction of the memory available


def estimate_bytes(cfg: SimConfig) -> int:
    """About how many bytes a run of `cfg` needs at its peak: parameter-sized state, the float64 measurement
    copy, and the N×(K + hidden widths) activations and logits (three times: values, gradients, softmax).
    >>> estimate_bytes(SimConfig(K=10, n=100, d=512)) < 50 * 2**20
    True
    """
    item = 4 if cfg.dtype == "float32" else 8
    N, K, d, w = cfg.N, cfg.K, cfg.d, cfg.width
    hidden = (w * d + (cfg.depth - 2) * w * w) if cfg.depth > 1 else 0
    params = N * d + K * cfg.feature_dim + hidden + K
    activations = N * (K + w * (cfg.depth - 1))
    pairs = cfg.N * cfg.N if cfg.loss.entry.features_only else 0  # SupCon's similarity matrix
    return int(params * (item * STATE_COPIES.get(cfg.optimizer, 3) + 16) + (activations + pairs) * (3 * item + 24))


def available_bytes(device: str = "cpu") -> int | None:
    """The memory free for a run on `device`: MemAvailable of /proc/meminfo (Linux) or the physical memory, or
    the GPU's free memory; None when unknown."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: SimConfig, device: str = "cpu") -> None:
    """ConfigError (one line) when the run of `cfg` cannot fit in the memory available on `device`."""
    need, have = estimate_bytes(cfg), available_bytes(device)
    if have is not None and need > HEADROOM * have:
        where = "GPU" if device.startswith("cuda") else "memory"
        raise ConfigError(f"this run needs about {need / 2**30:.3g} GiB (H alone is N×d = {cfg.N}×{cfg.d}), more "
                          f"than the {have / 2**30:.3g} GiB of {where} available: reduce --n, --d, --K or --width")
