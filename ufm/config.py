"""The configuration of one UFM simulation: a typed dataclass; the CLI only builds it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from ufm.counts import ZipfSpec, is_zipf
from ufm.errors import ConfigError, ConfigTypeError
from ufm.losses.config import LossConfig
from ufm.validation import check_fields

ACTIVATIONS = ("linear", "relu")
FEATURES = ("free", "nonneg")
NORMALIZE = ("none", "features", "classifier", "both")
SPHERE_LOSSES = ("ce", "ls", "focal", "supcon")

OPTIMIZERS = ("gd", "sgd", "adam", "lbfgs")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "float64")
FLOAT_TINY = {"float32": 1.1754943508222875e-38, "float64": 2.2250738585072014e-308}  # torch.finfo(dtype).tiny

# Defaults per optimizer, chosen so the default run reaches the closed form (see README).
DEFAULT_STEPS = {"gd": 5000, "sgd": 5000, "adam": 5000, "lbfgs": 500}
DEFAULT_LR = {"gd": 1.5, "sgd": 0.5, "adam": 1e-3, "lbfgs": 1.0}
DEEP_STEPS_FACTOR = 2  # depth > 1: twice the steps (measured: the SQI norms reach 1e-4 at 10 000 GD steps)

DEFAULT_WD = 5e-4
DEFAULT_INIT_SCALE = 0.1

MAX_SEED = 2**62  # torch generators take 64-bit seeds; the loop also uses seed + 1


@dataclass
class SimConfig:
    """One UFM run. Objective: (1/N) Σ_i ℓ(W h_i + b, y_i) + λ_W/2‖W‖² + λ_H/2‖H‖² + λ_b/2‖b‖².

    Values, defaults and their validation only (the tree, frame and loss options are resolved once by
    ufm.problem.resolve). `loss` takes a LossConfig or a loss name; `wd` sets the blocks left at None (they
    are filled in at construction, so vary λ with wd_W/wd_H/wd_b, or build a new config: a
    dataclasses.replace(cfg, wd=…) keeps the blocks of cfg).
    >>> cfg = SimConfig(K=4, loss="ls", wd=1e-3)
    >>> cfg.loss.name, cfg.loss.smoothing, cfg.wd_H, cfg.N
    ('ls', 0.1, 0.001, 400)
    >>> SimConfig(K=6, counts="zipf:1:5").counts   # long-tailed counts: n_k = max(1, round(5/k)), half up
    (5, 3, 2, 1, 1, 1)
    """

    K: int = 10
    n: int | None = 100  # samples per class; with counts: counts[0] if balanced, else None
    # per-class sample counts; sets K and overrides n. A string "zipf:S:NMAX" gives K long-tailed counts
    # (ufm.counts.zipf_counts: n_k = max(1, round-half-up(NMAX·k^(−S))), K from the K field)
    counts: tuple[int, ...] | str | None = None
    imbalance: float | None = None  # step imbalance R: the last `minority` classes get max(1, round(n/R))
    minority: int | None = None  # K_B, the number of minority classes (with imbalance)
    d: int = 512
    depth: int = 1  # L: free features H, then L − 1 hidden layers, then the classifier W
    act: str = "linear"  # activation after each hidden layer: linear or relu
    features: str = "free"  # "free" or "nonneg": the features are ReLU(H), as after a network's last activation
    # on the sphere: "features", "classifier" or "both" normalized, logits divided by τ ("features" under supcon)
    normalize: str = "none"
    temperature: float = 1.0  # τ of the normalized logits X̂Ŵᵀ/τ, and of SupCon's similarities ĥ_i·ĥ_j/τ
    width: int | None = None  # hidden-layer width (None: d)
    loss: LossConfig = field(default_factory=LossConfig)  # or a loss name: LossConfig(name)
    wd: float | None = None  # weight decay of every block left at None below (None: DEFAULT_WD, 0 under HUG)
    wd_W: float | None = None  # None: wd
    wd_H: float | None = None
    wd_b: float | None = None
    wd_M: float | None = None  # weight decay of the hidden layers (None: the default, like wd_W)
    bias: bool = False
    steps: int | None = None  # None: DEFAULT_STEPS[optimizer]
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    optimizer: str = "gd"
    momentum: float = 0.9  # sgd only
    batch_size: int | None = None  # sgd/adam mini-batches of samples; None: full batch
    init_scale: float | None = None  # rows of H and W start as N(0, s²/d · I), norm ≈ s (None: 0.1; HUG 1)
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 0
    tol: float = 0.0  # stop early once the gradient norm is <= tol (checked at evaluations)
    evals_per_decade: int = 10
    certificate: bool = True  # solve the convex program and report the gap to the global optimum

    def __post_init__(self) -> None:
        check_fields(self, skip=("loss",))  # types first: K=10.5, bias="no" and wd="5e-4" are refused here
        if isinstance(self.loss, str):
            self.loss = LossConfig(self.loss)
        if not isinstance(self.loss, LossConfig):
            raise ConfigTypeError(f"loss must be a LossConfig or a loss name, got {self.loss!r}")
        if self.loss.name == "supcon" and self.normalize == "none":
            self.normalize = "features"  # SupCon sees the normalized features only
        if self.imbalance is not None and self.counts is None:
            if self.minority is None or not 1 <= self.minority < self.K or self.n is None or self.n < 1:
                raise ConfigError(f"--imbalance needs --minority K_B with 1 <= K_B < K = {self.K} (got "
                                  f"{self.minority}) and --n >= 1")
            if not (math.isfinite(self.imbalance) and self.imbalance >= 1):
                raise ConfigError(f"--imbalance R must be >= 1, got {self.imbalance}")
            minority_n = max(1, round(self.n / self.imbalance))
            self.counts = (self.n,) * (self.K - self.minority) + (minority_n,) * self.minority
        if is_zipf(self.counts):
            try:
                self.counts = ZipfSpec.parse(self.counts).counts(self.K)
            except ValueError as e:
                raise ConfigError(f"--counts {self.counts}: {e}") from None
        elif isinstance(self.counts, str):
            raise ConfigError(f"--counts must be a list of integers or zipf:S:NMAX, got {self.counts!r}")
        if self.counts is not None:
            self.counts = tuple(int(c) for c in self.counts)
            self.K = len(self.counts)
            self.n = self.counts[0] if len(set(self.counts)) == 1 else None
        if self.steps is None and self.optimizer in DEFAULT_STEPS:
            # a deep UFM starts its hidden layers at unit scale (smaller starts sit at the saddle at 0,
            # measured), and weight decay removes that start's excess only at rate lr·λ per step
            self.steps = DEFAULT_STEPS[self.optimizer] * (DEEP_STEPS_FACTOR if self.depth > 1 else 1)
        if self.lr is None and self.optimizer in DEFAULT_LR:
            self.lr = DEFAULT_LR[self.optimizer]
        # HUG normalizes features and proxies: weight decay has nothing to balance (it would shrink
        # them toward 0 without a minimizer), and unit-norm starts keep the steps of size lr
        hug = self.loss.name == "hug"
        # a normalized block has no scale for weight decay to balance: its decay defaults to 0
        scale_free = {"wd_H": self.normalize in ("features", "both"), "wd_W": self.normalize in ("classifier", "both")}
        for block in ("wd_W", "wd_H", "wd_b", "wd_M"):
            if getattr(self, block) is None:
                default = 0.0 if hug or scale_free.get(block, False) else DEFAULT_WD
                setattr(self, block, self.wd if self.wd is not None else default)  # a given wd is refused there
        if self.init_scale is None:
            self.init_scale = 1.0 if hug or self.normalize != "none" else DEFAULT_INIT_SCALE  # unit-norm starts
        if self.width is None:
            self.width = self.d
        self.validate()

    @property
    def class_counts(self) -> tuple[int, ...]:
        return self.counts if self.counts is not None else (int(self.n),) * self.K

    @property
    def fixed_classifier(self) -> bool:
        """W is not trained (HAFrame, HUG with fixed proxies, a loss of the features alone such as SupCon): no
        weight decay, wd_W plays no role."""
        return (self.loss.name == "haframe" or (self.loss.name == "hug" and self.loss.hug_proxies == "fixed")
                or self.loss.entry.features_only)

    @property
    def feature_dim(self) -> int:
        """The dimension of the classifier's input: d for the one-layer UFM, the width when deeper."""
        return self.d if self.depth == 1 else self.width

    @property
    def hidden_layers(self) -> list[str]:
        """Names of the hidden layers' weights: M1 (width × d), M2 … M_{L−1} (width × width)."""
        return [f"M{l}" for l in range(1, self.depth)]

    @property
    def N(self) -> int:
        return sum(self.class_counts)

    @property
    def balanced(self) -> bool:
        return len(set(self.class_counts)) == 1

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.K >= 2, f"--K must be at least 2, got {self.K}")
        need(self.dtype in DTYPES, f"--dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.counts is None:
            need(self.n is not None and self.n >= 1, f"--n must be at least 1, got {self.n}")
        else:
            need(all(c >= 1 for c in self.counts), f"--counts must all be >= 1, got {list(self.counts)}")
        need(self.d >= 1, f"--d must be at least 1, got {self.d}")
        need(self.depth >= 1, f"--depth must be at least 1, got {self.depth}")
        need(self.act in ACTIVATIONS, f"--act must be one of {ACTIVATIONS}, got {self.act!r}")
        need(self.features in FEATURES, f"--features must be one of {FEATURES}, got {self.features!r}")
        need(self.normalize in NORMALIZE, f"--normalize must be one of {NORMALIZE}, got {self.normalize!r}")
        need(math.isfinite(self.temperature) and self.temperature > 0, f"--temperature must be > 0, got "
                                                                         f"{self.temperature}")
        if self.normalize != "none":
            need(self.loss.name in SPHERE_LOSSES, f"--normalize supports --loss {', '.join(SPHERE_LOSSES)}, not "
                                                  f"{self.loss.name}")
            need(self.depth == 1, "--normalize needs --depth 1")
            for block, normalized in (("wd_H", self.normalize in ("features", "both")),
                                      ("wd_W", self.normalize in ("classifier", "both"))):
                need(not normalized or getattr(self, block) == 0,
                     f"--normalize {self.normalize}: the loss does not see the scale of the normalized block, so "
                     f"--{block.replace('_', '-')} would only shrink it toward 0 (no minimizer): use 0")
        need(self.width >= 1, f"--width must be at least 1, got {self.width}")
        if self.depth > 1:
            need(self.loss.name not in ("hxe", "soft", "haframe", "hug"),
                 f"--depth > 1 supports --loss mse, ce, ls or a registered loss, not {self.loss.name}")
        self.loss.validate()
        self.loss.require_tree()
        for flag, value in (("--wd-W", self.wd_W), ("--wd-H", self.wd_H), ("--wd-b", self.wd_b),
                            ("--wd-M", self.wd_M)):
            need(math.isfinite(value) and value >= 0, f"{flag} must be a finite number >= 0, got {value}")
            tiny = FLOAT_TINY[self.dtype]
            given = "--wd" if self.wd == value else flag  # the flag the user typed
            need(not 0 < value < tiny, f"{given} {value:g} underflows to 0 in {self.dtype} (the smallest normal number "
                                       f"is {tiny:.3g}): use 0, or a larger value")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.steps is not None and self.steps >= 0, f"--steps must be >= 0, got {self.steps}")
        need(self.lr is not None and math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(0 <= self.momentum < 1, f"--momentum must lie in [0, 1), got {self.momentum}")
        if self.batch_size is not None:
            need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
            need(self.optimizer in ("sgd", "adam") or self.batch_size >= self.N,
                 f"--batch-size needs --optimizer sgd or adam ({self.optimizer} is full-batch)")
        need(math.isfinite(self.init_scale) and self.init_scale > 0,
             f"--init-scale must be > 0, got {self.init_scale}")
        need(self.device in DEVICES, f"--device must be one of {DEVICES}, got {self.device!r}")
        need(self.tol >= 0, f"--tol must be >= 0, got {self.tol}")
        need(0 <= self.seed <= MAX_SEED, f"--seed must lie in 0..{MAX_SEED}, got {self.seed}")
        need(self.evals_per_decade >= 1, f"--evals-per-decade must be >= 1, got {self.evals_per_decade}")
        if self.wd is not None:
            need(math.isfinite(self.wd) and self.wd >= 0, f"--wd must be a finite number >= 0, got {self.wd}")
        if self.loss.name == "haframe":
            need(not self.bias, "--loss haframe uses the plain logits Wh of the fixed frame: use --no-bias")
        if self.loss.name == "supcon":
            need(self.normalize == "features", f"--loss supcon is a loss of the normalized features alone: "
                                               f"--normalize must be features (its default), got {self.normalize}")
            need(not self.bias, "--loss supcon has no classifier: use --no-bias")
            need(min(self.class_counts) >= 2, "--loss supcon needs at least 2 samples in every class (each sample "
                                              "needs a positive)")
            from ufm.losses.contrastive import SUPCON_MAX_BATCH

            batch = min(self.N, self.batch_size or self.N)
            need(batch <= SUPCON_MAX_BATCH, f"--loss supcon builds a {batch}×{batch} similarity matrix per step; "
                 f"at most {SUPCON_MAX_BATCH} samples per batch (use --optimizer sgd --batch-size)")
        if self.loss.name == "hug":
            need(max(self.wd_W, self.wd_H, self.wd_b) == 0, "--loss hug normalizes features and proxies, so weight "
                 "decay only shrinks them toward 0 (the objective has no minimizer): use --wd 0")
            need(not self.bias, "--loss hug classifies by the nearest proxy (cosine): use --no-bias")
            need(self.d > 1 or self.K == 2, f"--loss hug: the sphere in R^1 has two points, K = {self.K} needs d >= 2")

    def to_dict(self) -> dict:
        """The flat dict of config.json: the loss's fields flat ("loss" is its name), counts and N (not `wd`, a
        constructor shorthand: the blocks wd_W, wd_H, wd_b, wd_M hold the values)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("loss", "wd")}
        d.update(self.loss.to_flat())
        d["counts"] = list(self.class_counts)
        d["N"] = self.N
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SimConfig:
        """Rebuild from `to_dict()` output, a run's config.json or any flat dict of fields (the loss's fields flat,
        as in to_dict; keys that are neither are ignored).
        >>> SimConfig.from_dict({"K": 3, "loss": "ls", "smoothing": 0.3}).loss.smoothing
        0.3
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"d must be a dict of configuration fields, got {type(d).__name__}")
        names = {f.name for f in fields(cls)} - {"loss"}
        loss = d["loss"] if isinstance(d.get("loss"), LossConfig) else LossConfig.from_flat(d)
        return cls(loss=loss, **{k: v for k, v in d.items() if k in names})
