"""Backbones with a linear classifier on top: an MLP, ResNet18 and WRN-28-k with CIFAR-style stems
(3×3 first convolution, no max-pool), and the HAFrame head. `Network.forward` returns the penultimate
features h (what NC is measured on) and the logits W h + b."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ufm.backbone.config import TrainConfig


class MLP(nn.Module):
    """Flatten, then `depth` × [Linear (no bias) → BatchNorm (optional) → ReLU] of `width` units."""

    def __init__(self, in_features: int, width: int, depth: int, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers.append(nn.Linear(in_features if i == 0 else width, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class BasicBlock(nn.Module):
    """ResNet's two 3×3 convolutions with BatchNorm and a shortcut (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 for small images: 3×3 stem of `width` channels, stages of 2 blocks with width·(1, 2, 4, 8)
    channels (strides 1, 2, 2, 2), global average pooling; 8·width features."""

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, c = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            stride = 1 if i == 0 else 2
            blocks += [BasicBlock(c, width * mult, stride), BasicBlock(width * mult, width * mult, 1)]
            c = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.out_features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)


class WideBlock(nn.Module):
    """Pre-activation block of wide ResNets (Zagoruyko & Komodakis 2016): BN-ReLU-conv twice."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(nn.Module):
    """WRN-depth-k: a 16-channel 3×3 stem, three groups of (depth − 4)/6 blocks with 16k, 32k, 64k channels
    (strides 1, 2, 2), BN-ReLU and global average pooling; 64k features."""

    def __init__(self, in_channels: int, depth: int = 28, widen: int = 10) -> None:
        super().__init__()
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        blocks, c = [], 16
        for i, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
            for j in range(n):
                blocks.append(WideBlock(c, width, (1 if i == 0 else 2) if j == 0 else 1))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c)
        self.out_features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(F.relu(self.bn(self.blocks(self.stem(x)))), 1).flatten(1)


class ResidualTransform(nn.Module):
    """One residual block of the HAFrame head: x + PReLU(BN(L₂ PReLU(BN(L₁ x)))), L bias-free K×K."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(k, k, bias=False), nn.BatchNorm1d(k), nn.PReLU(k),
                                  nn.Linear(k, k, bias=False), nn.BatchNorm1d(k), nn.PReLU(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class HAFrameHead(nn.Module):
    """The transformation layer of Liang & Davis (ICCV 2023) between the backbone and the fixed frame:
    a bias-free projection to K dimensions (their 1×1 convolution before pooling; pooling and a linear
    map commute), BatchNorm, then two residual blocks. Its K-dimensional output is the feature h."""

    def __init__(self, in_features: int, k: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, k, bias=False), nn.BatchNorm1d(k),
                                    ResidualTransform(k), ResidualTransform(k))
        self.out_features = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Network(nn.Module):
    """features → (optional HAFrame head) → linear classifier. With `fixed_classifier` (the HAFrame,
    or HUG's fixed proxies) W is a buffer: not trained, not weight-decayed."""

    def __init__(self, body: nn.Module, head: nn.Module | None, K: int, bias: bool,
                 fixed_classifier: torch.Tensor | None = None) -> None:
        super().__init__()
        self.body, self.head = body, head
        d = (head or body).out_features
        self.feature_dim = d
        if fixed_classifier is not None:
            self.register_buffer("W", torch.as_tensor(fixed_classifier, dtype=torch.float32).clone())
            self.b = None
        else:
            self.W = nn.Parameter(torch.empty(K, d))
            nn.init.kaiming_uniform_(self.W, a=math.sqrt(5))  # nn.Linear's initialization
            self.b = nn.Parameter(torch.zeros(K)) if bias else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return h if self.head is None else self.head(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        logits = h @ self.W.T
        return h, logits if self.b is None else logits + self.b


def build_network(cfg: TrainConfig, shape: tuple[int, int, int], K: int,
                  fixed_classifier: torch.Tensor | None = None) -> Network:
    """The network of `cfg` for inputs of `shape` (C, H, W) and K classes (seeded by the caller)."""
    if cfg.arch == "mlp":
        body: nn.Module = MLP(math.prod(shape), cfg.mlp_width, cfg.mlp_depth, cfg.batch_norm)
    elif cfg.arch == "resnet18":
        body = ResNet18(shape[0], cfg.resnet_width)
    else:
        body = WideResNet(shape[0], cfg.wrn_depth, cfg.wrn_widen)
    head = HAFrameHead(body.out_features, K) if cfg.loss.name == "haframe" else None
    return Network(body, head, K, cfg.bias, fixed_classifier)


def feature_dim(cfg: TrainConfig, K: int) -> int:
    """The dimension of the features h that `cfg`'s network gives the classifier."""
    if cfg.loss.name == "haframe":
        return K
    return {"mlp": cfg.mlp_width, "resnet18": 8 * cfg.resnet_width, "wrn28": 64 * cfg.wrn_widen}[cfg.arch]
