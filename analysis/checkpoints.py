"""Checkpoints for `analysis.measure`: the folder of them, the model and data factories, the state dicts, and the
penultimate features of each checkpoint hooked from the network.

`measure_checkpoints` (`python -m analysis.measure runs/ckpts/ --model mypkg.models:make_model --data
mypkg.data:loader --layer fc`): the model factory builds the nn.Module once; every checkpoint (a .pt, .pth or .ckpt
file, or a folder of them, sorted naturally: epoch_2 before epoch_10; `checkpoint_files`) is read with
torch.load(weights_only=True) — a state dict, or a dict holding one under "model" (ufm.train's checkpoint.pt),
"state_dict", "model_state_dict" or "net", or under `state_key`; keys saved from a DDP/DataParallel wrapper
("module." …) are read without that prefix — and loaded into it; the data factory's (x, y) batches run through it in
eval mode without gradients, and `analysis.tracking.FeatureHook` records the input of `layer` (the penultimate
features). W and b come from the layer when it is an nn.Linear. A factory is a callable, or "package.module:name",
or "path/to/file.py:name". The features of one checkpoint are kept (N·d numbers, on `device`) for the two passes,
as `NCTracker` does (`HookedModel.features`).

>>> import os, tempfile
>>> import torch
>>> from torch import nn
>>> make = lambda: nn.Sequential(nn.Linear(2, 2))
>>> folder = tempfile.mkdtemp()
>>> torch.save({"epoch": 3, "model": make().state_dict()}, os.path.join(folder, "ep3.pt"))
>>> x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
>>> hooked = HookedModel(make, lambda: [(x, y)], "0")
>>> [ckpt] = [hooked.features(path) for path in checkpoint_files([folder])]
>>> ckpt.epoch, torch.equal(ckpt.features[0], x), ckpt.W.shape
(3, True, torch.Size([2, 2]))
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.array_files import MeasureError, load_tensors
from analysis.tracking import FeatureHook

__all__ = ["CHECKPOINT_SUFFIXES", "STATE_KEYS", "checkpoint_files", "CheckpointFeatures", "HookedModel"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
STATE_KEYS = ("model", "state_dict", "model_state_dict", "net")  # where a checkpoint may hold its state dict


def _natural(path: Path) -> list[Any]:
    """A sort key reading the digits of a name as numbers: epoch_2 before epoch_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def checkpoint_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The checkpoints named by `paths`: a file as given, a folder's .pt/.pth/.ckpt files sorted naturally.

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for name in ("epoch_10.pt", "epoch_2.pt", "notes.txt"):
    ...     open(os.path.join(folder, name), "w").close()
    >>> [p.name for p in checkpoint_files([folder])]
    ['epoch_2.pt', 'epoch_10.pt']
    """
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("paths must be a list of paths, got a single path: wrap it in a list")
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted((f for f in path.iterdir() if f.is_file() and f.suffix in CHECKPOINT_SUFFIXES),
                           key=_natural)
            if not found:
                raise MeasureError(f"{path} holds no checkpoints ({', '.join(CHECKPOINT_SUFFIXES)} files)")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise MeasureError(f"no such file or folder: {path}")
    if not out:
        raise MeasureError("no checkpoints given")
    return out


def _factory(spec: Any, what: str) -> Callable[[], Any]:
    """A callable, or "package.module:name" / "path/to/file.py:name" imported."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise MeasureError(f"{what} must be a callable or 'module:name' (e.g. mypkg.models:make_model), got {spec!r}")
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise MeasureError(f"{what} {spec!r}: no such file: {file}")
            module_spec = importlib.util.spec_from_file_location(file.stem, file)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except MeasureError:
        raise
    except Exception as e:
        raise MeasureError(f"{what} {spec!r}: cannot import {module_name} ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MeasureError(f"{what} {spec!r}: {module_name} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise MeasureError(f"{what} {spec!r}: {attr} is not callable")
    return obj


def _user(what: str, call: Callable[[], Any]) -> Any:
    """Run the user's code (a factory, the model's forward): its failure is one line saying where."""
    try:
        return call()
    except MeasureError:
        raise
    except Exception as e:
        raise MeasureError(f"{what} failed ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None


def _state_dict(path: Path, state_key: str | None) -> tuple[dict[str, torch.Tensor], int | None]:
    obj = load_tensors(path, "not a checkpoint of tensors")

    def is_state(x: Any) -> bool:
        return isinstance(x, dict) and bool(x) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in x.items())

    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    if state_key is not None:
        state = obj
        for part in state_key.split("."):
            if not isinstance(state, dict) or part not in state:
                keys = sorted(map(str, obj)) if isinstance(obj, dict) else []
                raise MeasureError(f"the checkpoint {path} has no {state_key!r} (its keys: {keys[:20]})")
            state = state[part]
        if not is_state(state):
            raise MeasureError(f"the checkpoint {path}: {state_key!r} is not a state dict (names to tensors)")
        return state, epoch
    if is_state(obj):
        return obj, epoch
    if isinstance(obj, dict):
        for key in STATE_KEYS:
            if is_state(obj.get(key)):
                return obj[key], epoch
    keys = sorted(map(str, obj))[:20] if isinstance(obj, dict) else type(obj).__name__
    raise MeasureError(f"the checkpoint {path} holds no state dict (a dict of tensors, or one under "
                       f"{'/'.join(STATE_KEYS)}; its keys: {keys}); name its key with state_key")


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    if all(k.startswith("module.") for k in state) and not all(k.startswith("module.") for k in own):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from a DDP/DataParallel wrapper
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise MeasureError(f"the checkpoint {path} does not match the model ({' '.join(str(e).split())[:300]})"
                           ) from None


def _batch(batch: Any, where: str, ood: bool = False) -> tuple[Any, Any]:
    if isinstance(batch, torch.Tensor) and ood:
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) >= (1 if ood else 2):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    raise MeasureError(f"{where} must yield (x, y) batches{' (or x alone)' if ood else ''}, got "
                       f"{type(batch).__name__}")


def _hooked(model: torch.nn.Module, hook: Any, data: Callable[[], Any], device: torch.device, where: str,
            ood: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run the data factory's batches through the model; the hooked features (and labels) of every batch."""
    feats, labels = [], []
    batches = _user(f"{where}()", data)
    try:
        iterator = iter(batches)
    except TypeError:
        raise MeasureError(f"{where}() must return an iterable of batches, got {type(batches).__name__}") from None
    while True:
        batch = _user(f"iterating {where}()", lambda: next(iterator, StopIteration))
        if batch is StopIteration:
            break
        x, y = _batch(batch, where, ood)
        if isinstance(x, torch.Tensor):
            x = x.to(device)
        hook.features = None
        _user(f"the model's forward pass on a batch of {where}", lambda x=x: model(x))
        if hook.features is None:
            raise MeasureError(f"the layer did not run during the model's forward pass on a batch of {where}")
        H = hook.features
        if H.dim() != 2:
            raise MeasureError(f"the layer's input has shape {tuple(H.shape)} on a batch of {where}, not (n, d): hook "
                               "the layer whose input is the penultimate features, one row per sample")
        feats.append(H)
        if not ood:
            try:
                y_t = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
            except (TypeError, ValueError):
                raise MeasureError(f"the labels of a batch of {where} are not an array") from None
            if y_t.is_floating_point() or y_t.is_complex() or y_t.dtype == torch.bool or y_t.dim() != 1:
                raise MeasureError(f"the labels of {where}'s batches must be 1-D integers, got {y_t.dtype} of "
                                   f"shape {tuple(y_t.shape)}")
            if y_t.shape[0] != H.shape[0]:
                raise MeasureError(f"a batch of {where}: {H.shape[0]} features but {y_t.shape[0]} labels")
            labels.append(y_t.long().to(H.device))
    if not feats:
        raise MeasureError(f"{where}() yielded no batches")
    return feats, labels



@dataclass(frozen=True)
class CheckpointFeatures:
    """The penultimate features of one checkpoint: `features` and `labels` one tensor per batch of the data (on the
    model's device), `ood` the OOD features' batches (None without OOD data), `W` and `b` the hooked nn.Linear's
    weight and bias (None for another layer, or a Linear without bias), `epoch` where the checkpoint records one.

    >>> import torch
    >>> c = CheckpointFeatures(Path("ep1.pt"), 1, [torch.zeros(3, 2)], [torch.tensor([0, 1, 0])], None, None, None)
    >>> c.epoch, c.features[0].shape
    (1, torch.Size([3, 2]))
    """

    path: Path
    epoch: int | None
    features: list[torch.Tensor]
    labels: list[torch.Tensor]
    ood: list[torch.Tensor] | None
    W: torch.Tensor | None
    b: torch.Tensor | None


class HookedModel:
    """The network `model()` builds (a callable or "module:name"), once, on `device`, with the input of `layer` (a
    dotted submodule name: the classifier) to be hooked; `data()` yields (x, y) batches (a DataLoader), `ood_data()`
    batches x (or (x, y), y ignored) of OOD inputs. The factories are imported and the network built here; the data
    are run by `features` (module docstring for an example).
    """

    def __init__(self, model: Any, data: Any, layer: str, *, ood_data: Any = None,
                 device: str | torch.device = "cpu") -> None:
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a dotted submodule name such as 'fc', got {type(layer).__name__}")
        make_model = _factory(model, "model")
        self.make_data = _factory(data, "data")
        self.make_ood = None if ood_data is None else _factory(ood_data, "ood_data")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise MeasureError(f"device={device!r} is not a device (e.g. 'cpu', 'cuda')") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise MeasureError(f"device={device!r}, but CUDA is not available on this machine")
        net = _user("model()", make_model)
        if not isinstance(net, torch.nn.Module):
            raise MeasureError(f"model() must return a torch.nn.Module, got {type(net).__name__}")
        self.net = net.to(self.device)
        try:
            self.module = self.net.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in self.net.named_modules() if n]
            raise MeasureError(f"the model has no submodule {layer!r}; its submodules are {names[:30]}") from None

    def features(self, path: Path, state_key: str | None = None) -> CheckpointFeatures:
        """The checkpoint at `path` loaded into the network (its state dict under `state_key`, dotted, or found as
        the module docstring says), then the data and the OOD data run through it in eval mode without gradients:
        the hooked layer's inputs, and its W and b when it is an nn.Linear (module docstring for an example)."""
        state, epoch = _state_dict(path, state_key)
        _load_state(self.net, state, path)
        self.net.eval()
        with FeatureHook(self.net, self.module) as hook, torch.no_grad():
            feats, labels = _hooked(self.net, hook, self.make_data, self.device, "data")
            ood = (_hooked(self.net, hook, self.make_ood, self.device, "ood_data", ood=True)[0]
                   if self.make_ood is not None else None)
        W = b = None
        if isinstance(self.module, torch.nn.Linear):
            W = self.module.weight.detach().clone()
            b = None if self.module.bias is None else self.module.bias.detach().clone()
        return CheckpointFeatures(path, epoch, feats, labels, ood, W, b)
