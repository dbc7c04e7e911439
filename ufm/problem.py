"""The problem of a configuration, resolved once: labels, class tree, HAFrame, spherical code and loss options.

`resolve(cfg)` loads and checks everything a run reads besides the numbers of the configuration (a tree
whose leaf count is not K, a frame Gram that is not PSD: ConfigError), so the model, the loop, the
measurements and the checks read one `Problem` and nothing is rebuilt per step or per check.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import torch

from analysis.frames import Frame, FrameError, frame_from_gram, haframe_gram, psd_bound
from analysis.hierarchy import HierarchyError, Tree, load
from analysis.spherical_codes import CodeBudgetError, SphericalCode, duration, spherical_code
from analysis.uniformity import check_gram_fits
from ufm.config import SimConfig
from ufm.errors import ConfigError
from ufm.losses import LOSSES, HugOptions, LossConfig, LossEntry, LossOptions, hierarchy_data


@lru_cache(maxsize=16)
def class_tree(spec: str, K: int | None = None, lca_distance: str = "auto") -> Tree:
    """`analysis.hierarchy.load`, cached (the LCA matrix of a 1 000-class tree takes a fraction of a second).
    `lca_distance`: the convention of its `lca_heights` (--lca-distance), which every consumer of the tree reads."""
    return load(spec, K, lca_distance)


def tree_of(loss: LossConfig, K: int) -> Tree | None:
    """The class tree of `loss` for K classes with the loss's LCA-distance convention (None without --hierarchy);
    ConfigError when it does not load."""
    if loss.hierarchy is None:
        return None
    try:
        return class_tree(loss.hierarchy, K, loss.lca_distance)
    except HierarchyError as e:
        raise ConfigError(f"--hierarchy: {e}") from None


def frame_gram_of(loss: LossConfig, tree: Tree) -> tuple[np.ndarray, float]:
    """(S, s_min) of the HAFrame of the tree with the loss's γ and s_min (None: the PSD bound)."""
    lca = tree.lca_heights
    try:
        s = psd_bound(lca, loss.gamma) if loss.s_min is None else loss.s_min
        return haframe_gram(lca, loss.gamma, s), s
    except FrameError as e:
        raise ConfigError(f"--hierarchy {loss.hierarchy}: {e}") from None


def loss_options(loss: LossConfig, tree: Tree | None, S: np.ndarray | None, temperature: float = 1.0) -> LossOptions:
    """The options the built-in losses read, tensors built once (`temperature`: SupCon's τ, the run's)."""
    hier = None
    if tree is not None:
        hier = hierarchy_data(tree, alpha=loss.alpha if loss.name == "hxe" else 0.0,
                              beta=loss.beta if loss.name == "soft" else None, weighting=loss.hxe_weighting,
                              frame_gram=S if loss.name == "haframe" else None)
    hug = HugOptions(loss.hug_measure, loss.hug_s, loss.hug_sigma, loss.hug_sharpness, loss.hug_inter,
                     loss.hug_intra)
    return LossOptions(smoothing=loss.smoothing, target_scale=loss.target_scale, focal_gamma=loss.focal_gamma,
                       cosine_weight=loss.alpha if loss.name == "haframe" else 0.0, temperature=temperature,
                       hierarchy=hier, hug=hug)


@dataclass
class Problem:
    """A configuration with everything resolved from it. The frame (in R^d) and the spherical code are computed
    on first use (the code of K = 1000 points in R^64 takes a minute or two), the rest by `resolve`."""

    cfg: SimConfig
    tree: Tree | None
    frame_gram: np.ndarray | None  # the HAFrame Gram S of the tree (the reference of the angular measures)
    s_min: float | None
    options: LossOptions
    progress: bool = True  # a progress bar for what is computed on first use (the spherical code's search)
    search: bool = True  # False (an interrupted run): only a code that costs nothing (the ETF, the disk cache)

    @property
    def loss(self) -> LossEntry:
        return LOSSES[self.cfg.loss.name]

    def labels(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """y = (0,…,0, 1,…,1, …): n_k samples of class k, grouped by class."""
        counts = self.cfg.class_counts
        return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)).to(device)

    @cached_property
    def frame(self) -> Frame:
        """The HAFrame of the tree embedded in R^d (the fixed classifier of --loss haframe)."""
        return Frame(S=self.frame_gram, W=frame_from_gram(self.frame_gram, self.cfg.d), gamma=self.cfg.loss.gamma,
                     s_min=self.s_min)

    @property
    def gnc_exponent(self) -> float:
        """The Riesz exponent of the GNC energies: HUG's s under its energy measure, else 1 (Thomson)."""
        loss = self.cfg.loss
        return loss.hug_s if loss.name == "hug" and loss.hug_measure == "energy" else 1.0

    @property
    def code_kind(self) -> str:
        """The kind of the reference code: max-min angle for HUG's maxgap measure, else minimal Riesz energy."""
        loss = self.cfg.loss
        return "maxmin" if loss.name == "hug" and loss.hug_measure == "maxgap" else "energy"

    @cached_property
    def _code(self) -> tuple[SphericalCode | None, str]:
        K, d = self.cfg.K, self.cfg.feature_dim
        budget = self.cfg.loss.code_budget if self.search else 1e-9  # a budget no search fits: ETF or cache only
        try:
            return spherical_code(K, d, kind=self.code_kind, s=self.gnc_exponent, budget=budget,
                                  progress=self.progress), ""
        except CodeBudgetError as e:
            if not self.search:
                return None, (f"the reference spherical code of K = {K} directions in R^{d} is not computed: the run "
                              "was interrupted")
            return None, (f"the reference spherical code of K = {K} directions in R^{d} is not computed: its search "
                          f"would take about {duration(e.seconds)} (estimated on {e.device}), over the budget of "
                          f"{duration(e.budget)} (LossConfig.code_budget; --code-budget SECONDS on the command line)")

    @property
    def code(self) -> SphericalCode | None:
        """The generalized-NC target of K and the classifier's input dimension: the simplex ETF for K <= d + 1,
        else the numerical spherical code (analysis.spherical_codes) — max-min angle for HUG's maxgap measure,
        minimal Riesz energy (HUG's exponent s, else the Thomson s = 1) otherwise — searched within
        --code-budget seconds (a code in the disk cache costs nothing). None where the search is estimated to take
        longer (`code_note` says how long, and names the flag); computed on first use."""
        return self._code[0]

    @property
    def code_note(self) -> str:
        """Why there is no reference spherical code ("" where there is one)."""
        return self._code[1]

    @property
    def soft_targets(self) -> np.ndarray:
        """The K×K soft-label targets (row y: softmax(−β·d(y, ·)/max d)); --loss soft only."""
        return self.options.hierarchy.soft_targets.numpy()


def run_device(cfg: SimConfig) -> torch.device:
    """The device a run of `cfg` will use (the CPU where the one asked for is not there: the run itself says so).
    >>> run_device(SimConfig(device="cpu")).type
    'cpu'
    """
    from ufm.devices import DeviceUnavailable, resolve_device

    try:
        return resolve_device(cfg.device)
    except DeviceUnavailable:
        return torch.device("cpu")


def resolve(cfg: SimConfig) -> Problem:
    """The Problem of `cfg`; ConfigError when its tree does not load or does not have K leaves, or its frame
    Gram is not positive semidefinite. Example:
    >>> p = resolve(SimConfig(K=4, loss=LossConfig("hxe", hierarchy="balanced:2,2")))
    >>> p.tree.K, p.frame_gram.shape, p.labels().tolist()[:3]
    (4, (4, 4), [0, 0, 0])
    """
    if not isinstance(cfg, SimConfig):
        raise TypeError(f"cfg must be a SimConfig, got {type(cfg).__name__}")
    tree = tree_of(cfg.loss, cfg.K)
    S, s_min = frame_gram_of(cfg.loss, tree) if tree is not None else (None, None)
    problem = Problem(cfg, tree, S, s_min, loss_options(cfg.loss, tree, S, cfg.temperature))
    if cfg.loss.name == "hug" and cfg.loss.hug_measure == "gram":
        try:  # the determinant needs the whole K×K kernel: refused beyond the memory budget, before the run
            check_gram_fits(cfg.K, 8 if cfg.dtype == "float64" else 4, device=run_device(cfg))
        except ValueError as e:
            raise ConfigError(f"--hug-measure gram: {e}") from None
    if cfg.loss.name == "hug" and cfg.loss.hug_proxies == "fixed" and problem.code is None:
        raise ConfigError(f"--hug-proxies fixed needs the spherical code, and {problem.code_note}: use learned proxies "
                          "or a smaller K")
    if cfg.loss.name == "haframe":
        try:
            problem.frame  # noqa: B018 - checked now: a frame that cannot be embedded in R^d is bad input
        except FrameError as e:
            raise ConfigError(f"--hierarchy {cfg.loss.hierarchy}: {e}") from None
    return problem
