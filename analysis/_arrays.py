"""Accept numpy arrays, torch tensors and nested lists alike; compute in torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_tensor(x: Any, *, device: torch.device | str | None = None) -> torch.Tensor:
    """A torch view of `x` (no copy for numpy arrays or tensors already on `device`)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        a = np.asarray(x)
        # torch cannot wrap a read-only array (e.g. a cached LCA matrix) without a warning: copy it
        t = torch.as_tensor(a if a.flags.writeable else a.copy())
    return t if device is None else t.to(device)


def as_labels(y: Any, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer class labels as a 1-D int64 tensor."""
    t = as_tensor(y, device=device)
    if t.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {t.dtype}")
    return t.long()


def as_features(x: Any, *, device: torch.device | str | None = None) -> torch.Tensor:
    """A 2-D floating-point tensor (integers are promoted to float64)."""
    t = as_tensor(x, device=device)
    if t.dim() != 2:
        raise ValueError(f"features must be 2-D (N, d), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.double()
    return t
