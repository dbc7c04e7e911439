"""The configuration of one UFM simulation: a typed dataclass; the CLI only builds it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from ufm.losses import HIERARCHICAL_LOSSES, HXE_WEIGHTINGS, LOSSES

HUG_MEASURES = ("energy", "gram", "maxgap")
ACTIVATIONS = ("linear", "relu")
HUG_PROXIES = ("learned", "fixed")

OPTIMIZERS = ("gd", "sgd", "adam", "lbfgs")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "float64")

# Defaults per optimizer, chosen so the default run reaches the closed form (see README).
DEFAULT_STEPS = {"gd": 5000, "sgd": 5000, "adam": 5000, "lbfgs": 500}
DEFAULT_LR = {"gd": 1.5, "sgd": 0.5, "adam": 1e-3, "lbfgs": 1.0}
DEEP_STEPS_FACTOR = 2  # depth > 1: twice the steps (measured: the SQI norms reach 1e-4 at 10 000 GD steps)


# α by loss when --alpha is not given: HXE 0.1 (Bertinetto et al. 2020 use 0.1 and 0.5); HAFrame 0.4
# (the cosine-loss weight of the authors' CIFAR-100 and FGVC scripts, with γ = 2)
DEFAULT_ALPHA = {"hxe": 0.1, "haframe": 0.4}

DEFAULT_WD = 5e-4
DEFAULT_INIT_SCALE = 0.1

MAX_SEED = 2**62  # torch generators take 64-bit seeds; the loop also uses seed + 1


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the flag and the offending value."""


@dataclass
class SimConfig:
    """One UFM run. Objective: (1/N) Σ_i ℓ(W h_i + b, y_i) + λ_W/2‖W‖² + λ_H/2‖H‖² + λ_b/2‖b‖²."""

    K: int = 10
    n: int | None = 100  # samples per class; with counts: counts[0] if balanced, else None
    counts: tuple[int, ...] | None = None  # per-class sample counts; sets K and overrides n
    imbalance: float | None = None  # step imbalance R: the last `minority` classes get max(1, round(n/R))
    minority: int | None = None  # K_B, the number of minority classes (with imbalance)
    d: int = 512
    depth: int = 1  # L: free features H, then L − 1 hidden layers, then the classifier W
    act: str = "linear"  # activation after each hidden layer: linear or relu
    width: int | None = None  # hidden-layer width (None: d)
    loss: str = "mse"
    wd_W: float | None = None  # None: DEFAULT_WD (0 under HUG, whose loss is scale-invariant)
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
    smoothing: float = 0.1  # loss "ls"
    target_scale: float = 1.0  # loss "mse"
    tol: float = 0.0  # stop early once the gradient norm is <= tol (checked at evaluations)
    evals_per_decade: int = 10
    certificate: bool = True  # solve the convex program and report the gap to the global optimum
    hierarchy: str | None = None  # class tree: built-in name, balanced:b1,b2,…, flat:K, or a JSON path
    alpha: float | None = None  # hxe: λ(C) = exp(−α·h(C)); haframe: cosine-loss weight (None: DEFAULT_ALPHA)
    beta: float = 10.0  # soft: targets softmax(−β·LCA height / tree height)
    hxe_weighting: str = "height"  # hxe: "height" (the paper) or "depth" (the authors' code: exp(−α·depth))
    gamma: float = 2.0  # haframe: S = (1 − s_min)·exp(−γ·d/d_max) + s_min
    s_min: float | None = None  # haframe: S_ij's limit for large d_ij; None = the smallest value keeping S PSD
    hug_measure: str = "energy"  # hug: uniformity of the proxies, one of HUG_MEASURES
    hug_s: float = 1.0  # hug energy: Riesz exponent (0: log energy)
    hug_sigma: float = 2 ** -0.5  # hug gram: kernel exp(−r²/(2σ²)) width; 1/√2 gives exp(−r²)
    hug_sharpness: float = 64.0  # hug maxgap: t of the smooth minimum distance
    hug_inter: float = 1.0  # hug: weight of the inter-class term
    hug_intra: float = 1.0  # hug: weight of the intra-class term
    hug_proxies: str = "learned"  # hug: "learned" (trained) or "fixed" (the spherical code, not trained)

    def __post_init__(self) -> None:
        if self.imbalance is not None and self.counts is None:
            if self.minority is None or not 1 <= self.minority < self.K or self.n is None or self.n < 1:
                raise ConfigError(f"--imbalance needs --minority K_B with 1 <= K_B < K = {self.K} (got "
                                  f"{self.minority}) and --n >= 1")
            if not (math.isfinite(self.imbalance) and self.imbalance >= 1):
                raise ConfigError(f"--imbalance R must be >= 1, got {self.imbalance}")
            minority_n = max(1, round(self.n / self.imbalance))
            self.counts = (self.n,) * (self.K - self.minority) + (minority_n,) * self.minority
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
        if self.alpha is None:
            self.alpha = DEFAULT_ALPHA.get(self.loss)
        # HUG normalizes features and proxies: weight decay has nothing to balance (it would shrink
        # them toward 0 without a minimizer), and unit-norm starts keep the steps of size lr
        hug = self.loss == "hug"
        for block in ("wd_W", "wd_H", "wd_b", "wd_M"):
            if getattr(self, block) is None:
                setattr(self, block, 0.0 if hug else DEFAULT_WD)
        if self.init_scale is None:
            self.init_scale = 1.0 if hug else DEFAULT_INIT_SCALE
        if self.width is None:
            self.width = self.d
        self.validate()

    @property
    def class_counts(self) -> tuple[int, ...]:
        return self.counts if self.counts is not None else (int(self.n),) * self.K

    @property
    def fixed_classifier(self) -> bool:
        """W is not trained (HAFrame, HUG with fixed proxies): no weight decay, wd_W plays no role."""
        return self.loss == "haframe" or (self.loss == "hug" and self.hug_proxies == "fixed")

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
        if self.counts is None:
            need(self.n is not None and self.n >= 1, f"--n must be at least 1, got {self.n}")
        else:
            need(all(c >= 1 for c in self.counts), f"--counts must all be >= 1, got {list(self.counts)}")
        need(self.d >= 1, f"--d must be at least 1, got {self.d}")
        need(self.depth >= 1, f"--depth must be at least 1, got {self.depth}")
        need(self.act in ACTIVATIONS, f"--act must be one of {ACTIVATIONS}, got {self.act!r}")
        need(self.width >= 1, f"--width must be at least 1, got {self.width}")
        if self.depth > 1:
            need(self.loss in ("mse", "ce", "ls"), f"--depth > 1 supports --loss mse, ce or ls, not {self.loss}")
        need(self.loss in LOSSES, f"--loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        for flag, value in (("--wd-W", self.wd_W), ("--wd-H", self.wd_H), ("--wd-b", self.wd_b),
                            ("--wd-M", self.wd_M)):
            need(math.isfinite(value) and value >= 0, f"{flag} must be a finite number >= 0, got {value}")
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
        need(self.dtype in DTYPES, f"--dtype must be one of {DTYPES}, got {self.dtype!r}")
        need(0 <= self.smoothing < 1, f"--smoothing must lie in [0, 1), got {self.smoothing}")
        need(math.isfinite(self.target_scale) and self.target_scale > 0,
             f"--target-scale must be > 0, got {self.target_scale}")
        need(self.tol >= 0, f"--tol must be >= 0, got {self.tol}")
        need(0 <= self.seed <= MAX_SEED, f"--seed must lie in 0..{MAX_SEED}, got {self.seed}")
        need(self.evals_per_decade >= 1, f"--evals-per-decade must be >= 1, got {self.evals_per_decade}")
        self._validate_hierarchy(need)
        self._validate_hug(need)

    def _validate_hug(self, need: Callable[[bool, str], None]) -> None:
        need(self.hug_measure in HUG_MEASURES, f"--hug-measure must be one of {HUG_MEASURES}, got {self.hug_measure!r}")
        need(self.hug_proxies in HUG_PROXIES, f"--hug-proxies must be one of {HUG_PROXIES}, got {self.hug_proxies!r}")
        for flag, v in (("--hug-s", self.hug_s), ("--hug-inter", self.hug_inter), ("--hug-intra", self.hug_intra)):
            need(math.isfinite(v) and v >= 0, f"{flag} must be a finite number >= 0, got {v}")
        need(math.isfinite(self.hug_sharpness) and self.hug_sharpness > 0,
             f"--hug-sharpness must be > 0, got {self.hug_sharpness}")
        # distances on the unit sphere lie in [0, 2]: a much narrower kernel is the identity (no repulsion
        # between proxies), a much wider one is all ones (singular, log det → −∞)
        need(math.isfinite(self.hug_sigma) and 0.05 <= self.hug_sigma <= 5,
             f"--hug-sigma must lie in [0.05, 5] (distances on the sphere are at most 2), got {self.hug_sigma}")
        if self.loss == "hug":
            need(max(self.wd_W, self.wd_H, self.wd_b) == 0, "--loss hug normalizes features and proxies, so weight "
                 "decay only shrinks them toward 0 (the objective has no minimizer): use --wd 0")
            need(not self.bias, "--loss hug classifies by the nearest proxy (cosine): drop --bias")
            need(self.d > 1 or self.K == 2, f"--loss hug: the sphere in R^1 has two points, K = {self.K} needs d >= 2")

    def _validate_hierarchy(self, need: Callable[[bool, str], None]) -> None:
        need(self.hierarchy is not None or self.loss not in HIERARCHICAL_LOSSES,
             f"--loss {self.loss} needs a class tree: give --hierarchy (e.g. cifar100, balanced:2,5,10)")
        need(self.hxe_weighting in HXE_WEIGHTINGS,
             f"--hxe-weighting must be one of {HXE_WEIGHTINGS}, got {self.hxe_weighting!r}")
        if self.alpha is not None:
            need(math.isfinite(self.alpha) and self.alpha >= 0,
                 f"--alpha must be a finite number >= 0, got {self.alpha}")
            need(self.loss in DEFAULT_ALPHA, f"--alpha applies to --loss hxe or haframe, not {self.loss}")
            # α = 1 leaves only the cosine loss, which is scale-invariant: weight decay then drives H to 0
            # and the objective has no minimizer
            need(self.loss != "haframe" or self.alpha < 1, f"--alpha (HAFrame's cosine-loss weight) must lie in "
                                                           f"[0, 1): α = 1 has no minimizer, got {self.alpha}")
        need(math.isfinite(self.beta) and self.beta > 0, f"--beta must be > 0, got {self.beta}")
        need(math.isfinite(self.gamma) and self.gamma > 0, f"--gamma must be > 0, got {self.gamma}")
        if self.s_min is not None:
            need(math.isfinite(self.s_min) and self.s_min < 1, f"--s-min must be a number < 1, got {self.s_min}")
        if self.hierarchy is None:
            return
        from analysis.frames import FrameError
        from analysis.hierarchy import HierarchyError
        from ufm.problem import class_tree, frame_gram, frame_of  # late: the tree loads only when one is asked for

        try:
            class_tree(self.hierarchy, self.K)
        except HierarchyError as e:
            raise ConfigError(f"--hierarchy: {e}") from None
        try:
            frame_gram(self)  # the reference Gram of the angular metrics, for every loss
            if self.loss == "haframe":
                need(not self.bias, "--loss haframe uses the plain logits Wh of the fixed frame: drop --bias")
                frame_of(self)
        except FrameError as e:
            raise ConfigError(f"--hierarchy {self.hierarchy}: {e}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["counts"] = list(self.class_counts)
        d["N"] = self.N
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SimConfig:
        """Rebuild from `to_dict()` output or a run's config.json (keys that are not fields are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
