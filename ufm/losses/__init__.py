"""Losses of the UFM, as means over samples of a per-sample loss of the logits z = Wh + b.

config (LossConfig, shared by every configuration) · registry (one entry per --loss; `register_loss` adds
your own) · options (what the built-in losses read) · flat (CE, label smoothing, MSE) · tree (HXE, soft
labels, HAFrame) · hug (HUG) · contrastive (SupCon, of the features alone).
HAFrame's cosine loss and HUG also read the features h, and HUG the classifier.
"""

from ufm.losses.config import DEFAULT_ALPHA, HUG_MEASURES, HUG_PROXIES, HXE_WEIGHTINGS, LossConfig
from ufm.losses.contrastive import supcon
from ufm.losses.flat import cross_entropy, focal, label_smoothing, mse
from ufm.losses.hug import hug, inter_class_nonuniformity
from ufm.losses.options import HugOptions, LossOptions
from ufm.losses.registry import (
    BUILTIN_LOSSES,
    LOSSES,
    LossEntry,
    register_loss,
    unregister_loss,
)
from ufm.losses.tree import (
    HierarchyData,
    haframe_loss,
    hierarchical_cross_entropy,
    hierarchy_data,
    node_log_probs,
    soft_labels,
)

__all__ = ["BUILTIN_LOSSES", "DEFAULT_ALPHA", "HUG_MEASURES", "HUG_PROXIES",
           "HXE_WEIGHTINGS", "LOSSES", "HierarchyData", "HugOptions", "LossConfig", "LossEntry", "LossOptions",
           "cross_entropy", "focal", "haframe_loss", "hierarchical_cross_entropy", "hierarchy_data", "hug",
           "inter_class_nonuniformity", "label_smoothing", "mse", "node_log_probs", "register_loss", "soft_labels",
           "supcon", "unregister_loss"]
