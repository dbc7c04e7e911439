"""The configuration of one backbone training run: a typed dataclass; `python -m ufm.train` only builds it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from ufm.config import DEVICES, FLOAT_TINY, MAX_SEED, ConfigError
from ufm.errors import ConfigTypeError
from ufm.losses import LossConfig
from ufm.validation import check_fields

ARCHS = ("mlp", "resnet18", "wrn28")
DATASETS = ("digits", "mnist1d", "synthetic", "synthetic-hier", "mnist", "fashionmnist", "cifar10", "cifar100")
TORCHVISION_DATASETS = ("mnist", "fashionmnist", "cifar10", "cifar100")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("auto", "on", "off")

# learning rates by optimizer (measured: SGD + momentum 0.9 at 0.05 trains the MLP on digits under CE and
# MSE; with BatchNorm, MSE needs 0.01)
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}
DEFAULT_SYNTHETIC_TREE = "balanced:2,2,3"  # synthetic-hier without --hierarchy: 12 classes, height 3


@dataclass
class TrainConfig:
    """One backbone run. Objective: (1/N) Σ_i ℓ(W h_θ(x_i) + b, y_i) + λ/2 ‖θ, W, b‖², minimized by
    mini-batch SGD (or Adam) whose weight_decay = λ is the gradient of that penalty."""

    arch: str = "mlp"
    mlp_width: int = 512  # hidden width of the MLP (= its feature dimension)
    mlp_depth: int = 3  # hidden layers of the MLP
    batch_norm: bool = False  # MLP: BatchNorm after each hidden linear layer (off: MSE trains with the default lr)
    resnet_width: int = 64  # ResNet18: channels of the first stage (features: 8×)
    wrn_depth: int = 28  # WRN: 6n + 4
    wrn_widen: int = 10  # WRN: widening factor k (features: 64k)
    bias: bool = True  # the classifier's bias b
    dataset: str = "digits"
    data_root: str | None = None  # torchvision datasets live here
    download: bool = False
    data_seed: int = 0  # the train/test split of digits and the draws of the synthetic data
    train_per_class: int | None = None  # keep the first n training samples of each class
    classes: int = 10  # synthetic: K
    per_class: int = 100  # synthetic: training samples per class
    test_per_class: int = 100  # synthetic: test samples per class
    input_shape: tuple[int, ...] = (32,)  # synthetic: a vector (p,) or an image (C, H, W)
    separation: float = 3.0  # synthetic: ‖class mean‖ (synthetic-hier: of the coarsest level's offset)
    noise: float = 1.0  # synthetic: ‖within-class noise‖ (expected)
    level_decay: float = 0.5  # synthetic-hier: each level's offsets are this much smaller than its parent's
    loss: LossConfig = field(default_factory=lambda: LossConfig("ce"))  # or a loss name
    wd: float = 5e-4
    epochs: int = 100
    batch_size: int = 128
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    optimizer: str = "sgd"
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine to 0, step (÷10 at 1/3 and 2/3 of the epochs), constant
    evals_per_decade: int = 10  # NC measured on a log-spaced set of epochs
    device: str = "auto"
    amp: str = "auto"  # mixed precision (bfloat16 autocast) on CUDA; auto = on for CUDA
    seed: int = 0
    compare_ufm: bool = False  # also run the UFM twin and compare
    ufm_steps: int | None = None  # the twin's steps (None: the UFM default)
    # NC at every layer (ufm.backbone.layers): "all" or module names inside the body, comma-separated; None: off
    track_layers: str | None = None

    def __post_init__(self) -> None:
        check_fields(self, skip=("loss",))  # types first: epochs=2.5 and bias="no" are refused here
        if isinstance(self.loss, str):
            self.loss = LossConfig(self.loss)
        if not isinstance(self.loss, LossConfig):
            raise ConfigTypeError(f"loss must be a LossConfig or a loss name, got {self.loss!r}")
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if self.lr is None and self.optimizer in DEFAULT_LR:
            self.lr = DEFAULT_LR[self.optimizer]
        own_tree = {"cifar100": "cifar100", "synthetic-hier": DEFAULT_SYNTHETIC_TREE}.get(self.dataset)
        if self.loss.hierarchy is None and own_tree is not None:  # a copy: the caller's LossConfig stays as given
            self.loss = replace(self.loss, hierarchy=own_tree)
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.arch in ARCHS, f"--arch must be one of {ARCHS}, got {self.arch!r}")
        need(self.dataset in DATASETS, f"--dataset must be one of {DATASETS}, got {self.dataset!r}")
        self.loss.validate()
        self.loss.require_tree()
        for flag, v, lo in (("--mlp-width", self.mlp_width, 1), ("--mlp-depth", self.mlp_depth, 1),
                            ("--resnet-width", self.resnet_width, 1), ("--wrn-widen", self.wrn_widen, 1),
                            ("--epochs", self.epochs, 0), ("--batch-size", self.batch_size, 1),
                            ("--classes", self.classes, 2), ("--per-class", self.per_class, 1),
                            ("--test-per-class", self.test_per_class, 1),
                            ("--evals-per-decade", self.evals_per_decade, 1)):
            need(v >= lo, f"{flag} must be at least {lo}, got {v}")
        need(self.wrn_depth >= 10 and (self.wrn_depth - 4) % 6 == 0,
             f"--wrn-depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, …), got {self.wrn_depth}")
        need(self.train_per_class is None or self.train_per_class >= 1,
             f"--train-per-class must be >= 1, got {self.train_per_class}")
        need(1 <= len(self.input_shape) <= 3 and all(s >= 1 for s in self.input_shape),
             f"--input-shape must be P or CxHxW with positive sizes, got {'x'.join(map(str, self.input_shape))}")
        for flag, v in (("--separation", self.separation), ("--noise", self.noise),
                        ("--level-decay", self.level_decay)):
            need(math.isfinite(v) and v >= 0, f"{flag} must be a finite number >= 0, got {v}")
        need(math.isfinite(self.wd) and self.wd >= 0, f"--wd must be a finite number >= 0, got {self.wd}")
        need(not 0 < self.wd < FLOAT_TINY["float32"], f"--wd {self.wd:g} underflows to 0 in float32, the training's "
                                                      "dtype: use 0, or a larger value")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.lr is not None and math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(0 <= self.momentum < 1, f"--momentum must lie in [0, 1), got {self.momentum}")
        need(self.schedule in SCHEDULES, f"--schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(self.device in DEVICES, f"--device must be one of {DEVICES}, got {self.device!r}")
        need(self.amp in AMP_MODES, f"--amp must be one of {AMP_MODES}, got {self.amp!r}")
        need(0 <= self.seed <= MAX_SEED and 0 <= self.data_seed <= MAX_SEED, f"--seed and --data-seed must lie in "
                                                                             f"0..{MAX_SEED}")
        need(self.ufm_steps is None or self.ufm_steps >= 0, f"--ufm-steps must be >= 0, got {self.ufm_steps}")
        need(self.track_layers is None or bool(self.track_layers.strip(" ,")),
             "--track-layers must be 'all' or module names of the body, comma-separated")
        need(not self.loss.entry.features_only, f"--loss {self.loss.name} is a UFM loss of the features alone (no "
                                                "classifier to train or evaluate a backbone with): use it with "
                                                "python -m ufm.simulate")
        if self.loss.name in ("haframe", "hug"):
            need(not self.bias, f"--loss {self.loss.name} classifies without a bias: add --no-bias")
        need(self.loss.hug_proxies == "learned", "--hug-proxies fixed is a UFM option: a backbone trains its "
                                                 "classifier (the proxies)")

    @property
    def image_input(self) -> bool:
        return self.arch != "mlp"

    def to_dict(self) -> dict:
        """The flat dict of config.json (the loss's fields flat, "loss" its name)."""
        d = {k: v for k, v in asdict(self).items() if k != "loss"}
        d.update(self.loss.to_flat())
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Rebuild from `to_dict()` output or a run's config.json (keys that are not fields are ignored)."""
        names = {f.name for f in fields(cls)} - {"loss"}
        loss = d["loss"] if isinstance(d.get("loss"), LossConfig) else LossConfig.from_flat({"loss": "ce", **d})
        return cls(loss=loss, **{k: v for k, v in d.items() if k in names})
