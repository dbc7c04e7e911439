"""Device and dtype by name: `auto` picks CUDA, then MPS, then CPU."""

from __future__ import annotations

import torch

from ufm.errors import FlagWords


class DeviceUnavailable(FlagWords, RuntimeError):
    """The requested device does not exist on this machine."""


def resolve_device(name: str) -> torch.device:
    mps = getattr(torch.backends, "mps", None)
    mps_ok = mps is not None and mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("--device cuda: CUDA is not available on this machine (try --device cpu)")
    if name == "mps" and not mps_ok:
        raise DeviceUnavailable("--device mps: MPS is not available on this machine (try --device cpu)")
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]
