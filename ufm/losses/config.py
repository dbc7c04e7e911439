"""LossConfig: the loss and its hyper-parameters, one typed dataclass shared by SimConfig, TrainConfig, both
command-line tools (ufm.cli.loss_flags) and the UFM twin of a backbone run."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from analysis.hierarchy import LCA_DISTANCES
from ufm.errors import ConfigError, ConfigTypeError
from ufm.losses.registry import LOSSES
from ufm.losses.tree import HXE_WEIGHTINGS  # height, depth, depth-normalized: the formulas are there
from ufm.validation import check_fields

HUG_MEASURES = ("energy", "gram", "maxgap")
HUG_PROXIES = ("learned", "fixed")

# α by loss when --alpha is not given: HXE 0.1 (Bertinetto et al. 2020 use 0.1 and 0.5); HAFrame 0.4
# (the cosine-loss weight of the authors' CIFAR-100 and FGVC scripts, with γ = 2)
DEFAULT_ALPHA = {"hxe": 0.1, "haframe": 0.4}


@dataclass
class LossConfig:
    """The loss ℓ(z, y) of the logits z = Wh + b and its hyper-parameters (each loss reads the ones it uses).

    In config.json, summary.json and sweep grids the fields appear flat: "loss" is `name`, the others keep
    their names (`to_flat`, `from_flat`). Example:
    >>> LossConfig("ls", smoothing=0.2).to_flat()["loss"], LossConfig("hxe", hierarchy="balanced:2,3").alpha
    ('ls', 0.1)
    """

    name: str = "mse"  # a name in ufm.losses.LOSSES (built-in or registered with ufm.register_loss)
    smoothing: float = 0.1  # ls: targets (1 − α)e_y + α/K
    target_scale: float = 1.0  # mse: targets s·e_y
    focal_gamma: float = 2.0  # focal: −(1 − p_y)^γ log p_y (Lin et al. 2017)
    hierarchy: str | None = None  # class tree: built-in name, balanced:b1,b2,…, flat:K, or a JSON path
    # LCA distance d_ij of the tree (metrics, soft labels, HAFrame Gram), one of analysis.hierarchy.LCA_DISTANCES:
    # "auto" = tree height − depth(LCA) (the papers') where leaf depths differ; where they don't, all coincide
    lca_distance: str = "auto"
    alpha: float | None = None  # hxe: λ(C) = exp(−α·h(C)); haframe: cosine-loss weight (None: DEFAULT_ALPHA)
    beta: float = 10.0  # soft: targets softmax(−β·LCA distance / largest LCA distance)
    # hxe: "height" (the paper), "depth" (the authors' code: exp(−α·depth)) or "depth-normalized" (summing to 1)
    hxe_weighting: str = "height"
    gamma: float = 2.0  # haframe: S = (1 − s_min)·exp(−γ·d/d_max) + s_min
    s_min: float | None = None  # haframe: S_ij's limit for large d_ij; None = the smallest value keeping S PSD
    hug_measure: str = "energy"  # hug: uniformity of the proxies, one of HUG_MEASURES
    hug_s: float = 1.0  # hug energy: Riesz exponent (0: log energy)
    hug_sigma: float = 2 ** -0.5  # hug gram: kernel exp(−r²/(2σ²)) width; 1/√2 gives exp(−r²)
    hug_sharpness: float = 64.0  # hug maxgap: t of the smooth minimum distance
    hug_inter: float = 1.0  # hug: weight of the inter-class term
    hug_intra: float = 1.0  # hug: weight of the intra-class term
    hug_proxies: str = "learned"  # hug: "learned" (trained) or "fixed" (the spherical code, not trained)
    # seconds the reference spherical code may take to compute (HUG, and the GNC check of every run with K > d + 1);
    # a code estimated to take longer is skipped with a note (analysis.spherical_codes)
    code_budget: float = 120.0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.alpha is None:
            self.alpha = DEFAULT_ALPHA.get(self.name)
        self.validate()

    @property
    def entry(self):
        """The registry entry of this loss (ufm.losses.LOSSES)."""
        return LOSSES[self.name]

    def validate(self) -> None:
        """Values only (the tree itself is loaded and checked by ufm.problem.resolve)."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.name in LOSSES, f"--loss must be one of {sorted(LOSSES)}, got {self.name!r}")
        need(0 <= self.smoothing < 1, f"--smoothing must lie in [0, 1), got {self.smoothing}")
        need(math.isfinite(self.target_scale) and self.target_scale > 0,
             f"--target-scale must be > 0, got {self.target_scale}")
        need(math.isfinite(self.focal_gamma) and self.focal_gamma >= 0,
             f"--focal-gamma must be a finite number >= 0, got {self.focal_gamma}")
        self._validate_hierarchy(need)
        self._validate_hug(need)

    def require_tree(self) -> None:
        """A loss that reads the class tree needs one (checked by the run's configuration, which may supply a
        default tree, e.g. a dataset's own)."""
        if self.hierarchy is None and self.entry.tree:
            raise ConfigError(f"--loss {self.name} needs a class tree: give --hierarchy (e.g. cifar100, "
                              "balanced:2,5,10)")

    def _validate_hierarchy(self, need: Callable[[bool, str], None]) -> None:
        need(self.hxe_weighting in HXE_WEIGHTINGS,
             f"--hxe-weighting must be one of {HXE_WEIGHTINGS}, got {self.hxe_weighting!r}")
        need(self.lca_distance in LCA_DISTANCES,
             f"--lca-distance must be one of {LCA_DISTANCES}, got {self.lca_distance!r}")
        if self.alpha is not None:
            need(math.isfinite(self.alpha) and self.alpha >= 0,
                 f"--alpha must be a finite number >= 0, got {self.alpha}")
            need(self.name in DEFAULT_ALPHA, f"--alpha applies to --loss hxe or haframe, not {self.name}")
            # α = 1 leaves only the cosine loss, which is scale-invariant: weight decay then drives H to 0
            # and the objective has no minimizer
            need(self.name != "haframe" or self.alpha < 1, f"--alpha (HAFrame's cosine-loss weight) must lie in "
                                                           f"[0, 1): α = 1 has no minimizer, got {self.alpha}")
        need(math.isfinite(self.beta) and self.beta > 0, f"--beta must be > 0, got {self.beta}")
        need(math.isfinite(self.gamma) and self.gamma > 0, f"--gamma must be > 0, got {self.gamma}")
        if self.s_min is not None:
            need(math.isfinite(self.s_min) and self.s_min < 1, f"--s-min must be a number < 1, got {self.s_min}")

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
        need(isinstance(self.code_budget, (int, float)) and math.isfinite(self.code_budget) and self.code_budget > 0,
             f"--code-budget must be a number of seconds > 0, got {self.code_budget}")

    def to_flat(self) -> dict:
        """The flat keys of config.json: "loss" (the name) and every hyper-parameter by its own name."""
        d = asdict(self)
        return {"loss": d.pop("name"), **d}

    @classmethod
    def from_flat(cls, d: dict) -> LossConfig:
        """The LossConfig of flat keys (config.json, a sweep row); keys that are not loss fields are ignored."""
        names = {f.name for f in fields(cls)} - {"name"}
        name = d.get("loss", cls.name)
        if not isinstance(name, str):
            raise ConfigTypeError(f"loss must be a loss name or a LossConfig, got {name!r} ({type(name).__name__})")
        return cls(name, **{k: v for k, v in d.items() if k in names})

