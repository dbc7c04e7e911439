"""Accept numpy arrays, torch tensors and nested lists alike; compute in torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_tensor(x: Any, *, device: torch.device | str | None = None, name: str = "array") -> torch.Tensor:
    """A torch view of `x` (no copy for numpy arrays or tensors already on `device`); TypeError naming `name` when
    `x` holds no numbers (strings, objects)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            a = np.asarray(x)
        except ValueError as e:  # ragged nested lists
            raise ValueError(f"{name} must be a rectangular array of numbers: {e}") from None
        if a.dtype.kind not in "biufc":
            raise TypeError(f"{name} must be an array of numbers (a numpy array, torch tensor or nested list), got "
                            f"{type(x).__name__} of {a.dtype}")
        # torch cannot wrap a read-only array (e.g. a cached LCA matrix) without a warning: copy it
        t = torch.as_tensor(a if a.flags.writeable else a.copy())
    return t if device is None else t.to(device)


def as_labels(y: Any, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer class labels as a 1-D int64 tensor."""
    t = as_tensor(y, device=device, name="labels")
    if t.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {t.dtype}")
    return t.long()


def as_features(x: Any, *, device: torch.device | str | None = None) -> torch.Tensor:
    """A 2-D floating-point tensor (integers are promoted to float64)."""
    t = as_tensor(x, device=device, name="features")
    if t.dim() != 2:
        raise ValueError(f"features must be 2-D (N, d), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.double()
    return t
