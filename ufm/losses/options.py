"""The options every built-in loss reads (built once per run by ufm.problem.resolve)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ufm.losses.tree import HierarchyData


@dataclass(frozen=True)
class HugOptions:
    """HUG's uniformity measure ("energy": Riesz s-energy, s = 0 the log energy; "gram": −log det of the
    Gaussian kernel exp(−r²/(2σ²)); "maxgap": a smooth minimum pairwise distance with sharpness t) and
    the weights of its inter- and intra-class terms."""

    measure: str = "energy"
    s: float = 1.0
    sigma: float = 2 ** -0.5
    sharpness: float = 64.0
    inter_weight: float = 1.0
    intra_weight: float = 1.0


@dataclass(frozen=True)
class LossOptions:
    """Hyper-parameters of the losses (each loss reads the ones it needs)."""

    smoothing: float = 0.1  # label smoothing α: targets (1 − α)e_y + α/K
    target_scale: float = 1.0  # MSE target s·e_y
    focal_gamma: float = 2.0  # focal loss γ
    cosine_weight: float = 0.4  # HAFrame's α: (1 − α)·CE + α·L_cos
    temperature: float = 1.0  # supcon: τ of the similarities ĥ_i·ĥ_j/τ
    hug: HugOptions | None = None  # loss "hug"
    hierarchy: HierarchyData | None = None  # hxe, soft, haframe

