"""Datasets as in-memory tensors (N, C, H, W) with integer labels: offline ones (scikit-learn's digits,
MNIST-1D generated locally, Gaussian mixtures flat or along a class tree) and torchvision's MNIST,
FashionMNIST, CIFAR-10/100 from --data-root. Inputs are standardized with the training set's statistics;
no augmentation (NC is studied on the training set the network fits)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ufm.backbone.config import TrainConfig
from ufm.errors import ConfigError


class DataError(ConfigError):
    """A dataset that cannot be loaded; the message names the path and the flag to fix it."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    K: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(torch.bincount(self.y_train, minlength=self.K).tolist())


def _as_image(x: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """Reshape rows to (C, H, W): a vector of length p becomes (1, 1, p)."""
    shape = tuple(shape)
    full = {1: (1, 1, *shape), 2: (1, *shape), 3: shape}[len(shape)]
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).reshape(len(x), *full)


def _standardize(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel: subtract the training mean, divide by the training std."""
    dims = (0, 2, 3)
    mean, std = train.mean(dims, keepdim=True), train.std(dims, keepdim=True).clamp_min(1e-8)
    return (train - mean) / std, (test - mean) / std


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a train/test split that keeps each class's share (seeded)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        cut = int(round(len(idx) * test_fraction))
        test.append(idx[:cut])
        train.append(idx[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def digits(cfg: TrainConfig) -> Dataset:
    """scikit-learn's 1 797 handwritten digits (8×8, 10 classes); a stratified 80/20 split (--data-seed)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    tr, te = _stratified_split(y, 0.2, cfg.data_seed)
    x_train, x_test = _standardize(_as_image(X[tr] / 16.0, (8, 8)), _as_image(X[te] / 16.0, (8, 8)))
    return Dataset("digits", x_train, torch.as_tensor(y[tr]), x_test, torch.as_tensor(y[te]), 10)


def mnist1d(cfg: TrainConfig) -> Dataset:
    """MNIST-1D (Greydanus 2020) generated locally by the `mnist1d` package with its default arguments
    (4 000 training and 1 000 test signals of length 40, 10 classes); its generator seed is --data-seed
    when that is not 0, else the package's own default (42)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if cfg.data_seed:
        args.seed = cfg.data_seed
    state = np.random.get_state()  # make_dataset reseeds numpy's global generator: leave it as it was
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    x_train, x_test = _standardize(_as_image(d["x"], (40,)), _as_image(d["x_test"], (40,)))
    return Dataset("mnist1d", x_train, torch.as_tensor(d["y"]).long(), x_test, torch.as_tensor(d["y_test"]).long(), 10)


def _mixture(means: np.ndarray, cfg: TrainConfig, rng: np.random.Generator, name: str) -> Dataset:
    """Samples μ_y + noise·ε/√p, ε ~ N(0, I_p): per-class and test-per-class samples of each class."""
    K, p = means.shape

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(K), n)
        return means[y] + cfg.noise * rng.standard_normal((len(y), p)) / math.sqrt(p), y

    x_train, y_train = draw(cfg.per_class)
    x_test, y_test = draw(cfg.test_per_class)
    return Dataset(name, _as_image(x_train, cfg.input_shape), torch.as_tensor(y_train),
                   _as_image(x_test, cfg.input_shape), torch.as_tensor(y_test), K)


def synthetic(cfg: TrainConfig) -> Dataset:
    """A Gaussian mixture: K class means drawn N(0, separation²/p · I_p), isotropic noise of norm ≈ --noise."""
    rng = np.random.default_rng(cfg.data_seed)
    p = int(np.prod(cfg.input_shape))
    means = cfg.separation * rng.standard_normal((cfg.classes, p)) / math.sqrt(p)
    return _mixture(means, cfg, rng, "synthetic")


def synthetic_hier(cfg: TrainConfig) -> Dataset:
    """A Gaussian mixture whose class means follow the class tree: μ_leaf = Σ over the nodes v on the path
    from the root (excluded) of z_v · separation · decay^(depth(v) − 1), z_v ~ N(0, I_p/p). Siblings share
    every offset above them, so classes close in the tree are close in input space."""
    from ufm.problem import class_tree

    tree = class_tree(cfg.loss.hierarchy)
    rng = np.random.default_rng(cfg.data_seed)
    p = int(np.prod(cfg.input_shape))
    offsets = rng.standard_normal((len(tree.names), p)) / math.sqrt(p)
    means = np.zeros((tree.K, p))
    for k, leaf in enumerate(tree.leaves):
        for v in tree.path_to_root(leaf)[:-1]:  # the root carries no offset
            means[k] += offsets[v] * cfg.separation * cfg.level_decay ** (tree.depth[v] - 1)
    return _mixture(means, cfg, rng, "synthetic-hier")


# torchvision class, directory it reads under --data-root (for the error message), classes
_TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw", 10),
    "fashionmnist": ("FashionMNIST", "FashionMNIST/raw", 10),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", 10),
    "cifar100": ("CIFAR100", "cifar-100-python", 100),
}


def torchvision_dataset(cfg: TrainConfig) -> Dataset:
    """MNIST, FashionMNIST, CIFAR-10 or CIFAR-100 from --data-root (downloaded there with --download)."""
    cls_name, folder, K = _TORCHVISION[cfg.dataset]
    root = Path(cfg.data_root or "data").expanduser()
    where = root / folder
    if not cfg.download and not where.exists():
        raise DataError(f"--dataset {cfg.dataset}: not found at {where}; pass --data-root DIR (the directory that "
                        f"holds {folder}) or add --download")
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise DataError(f"--dataset {cfg.dataset} needs torchvision: pip install torchvision (matching your torch "
                        f"version) or pip install -e '.[vision]'") from None
    cls = getattr(tvd, cls_name)
    try:
        parts = [cls(str(root), train=train, download=cfg.download) for train in (True, False)]
    except (RuntimeError, OSError) as e:
        raise DataError(f"--dataset {cfg.dataset}: cannot load it from {root} ({e}); check --data-root "
                        f"or --download") from None

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(np.asarray(ds.data), dtype=torch.float32) / 255.0
        x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]  # CIFAR: NHWC; MNIST: NHW
        return x.contiguous(), torch.as_tensor(np.asarray(ds.targets)).long()

    (x_train, y_train), (x_test, y_test) = (tensors(p) for p in parts)
    x_train, x_test = _standardize(x_train, x_test)
    return Dataset(cfg.dataset, x_train, y_train, x_test, y_test, K)


LOADERS = {"digits": digits, "mnist1d": mnist1d, "synthetic": synthetic, "synthetic-hier": synthetic_hier,
           **dict.fromkeys(_TORCHVISION, torchvision_dataset)}


def load_dataset(cfg: TrainConfig) -> Dataset:
    """The dataset of `cfg`, with --train-per-class applied (the first n samples of each class)."""
    data = LOADERS[cfg.dataset](cfg)
    if cfg.train_per_class is not None:
        keep = torch.cat([torch.nonzero(data.y_train == k).flatten()[: cfg.train_per_class] for k in range(data.K)])
        keep = keep.sort().values
        data = Dataset(data.name, data.x_train[keep], data.y_train[keep], data.x_test, data.y_test, data.K)
    missing = [k for k, c in enumerate(data.counts) if c == 0]
    if missing:
        raise DataError(f"--dataset {cfg.dataset}: classes without training samples: {missing}")
    return data
