"""The loss registry: one entry per `--loss` name. A built-in loss is one entry here; a researcher adds their
own per-sample loss of the logits with `register_loss` and runs the UFM under it like any other."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ufm.losses.contrastive import supcon
from ufm.losses.flat import cross_entropy, focal, label_smoothing, mse
from ufm.losses.hug import hug
from ufm.losses.options import LossOptions
from ufm.losses.tree import haframe_loss, hierarchical_cross_entropy, soft_labels

PerSample = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossEntry:
    """A loss: `fn(logits, y, options, features=None, classifier=None)` → the mean over samples (a scalar).

    convex: convex in the logits, so the UFM's global optimum is a nuclear-norm program and the run gets a
    certificate; tree: needs a class tree; fused: has the closed-form GD step of ufm.fit.fused_gd. A
    registered loss also keeps its per-sample function and, when given, its convex conjugate ℓ*(u; y)
    (which turns the certificate's bound into a proof)."""

    name: str
    fn: Callable[..., torch.Tensor]
    description: str = ""
    convex: bool = False
    tree: bool = False
    features_only: bool = False
    fused: bool = False
    per_sample: PerSample | None = None
    conjugate: PerSample | None = None
    shift_invariant: bool = False  # ℓ(z + c1, y) = ℓ(z, y): the convex program restricts to X1 = 0
    # a mean over samples of a function of the sample's own logits (and features): computable in blocks of rows
    # (ufm.losses.blocked); HUG's pairwise proxy term and SupCon's pairs of samples are not
    rowwise: bool = True

    @property
    def builtin(self) -> bool:
        return self.per_sample is None

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, opts: LossOptions, features=None,
                 classifier=None) -> torch.Tensor:
        return self.fn(logits, y, opts, features=features, classifier=classifier)


LOSSES: dict[str, LossEntry] = {e.name: e for e in (
    LossEntry("mse", mse, "½||z − s·e_y||²", convex=True, fused=True),
    LossEntry("ce", cross_entropy, "cross-entropy", convex=True, fused=True),
    LossEntry("ls", label_smoothing, "label-smoothed cross-entropy", convex=True, fused=True),
    LossEntry("focal", focal, "focal loss −(1 − p_y)^γ log p_y (Lin et al. 2017; --focal-gamma)"),
    LossEntry("hxe", hierarchical_cross_entropy, "hierarchical cross-entropy", tree=True),
    LossEntry("soft", soft_labels, "soft labels from the tree", convex=True, tree=True),
    LossEntry("haframe", haframe_loss, "fixed hierarchy-aware frame + cosine loss", tree=True),
    LossEntry("hug", hug, "hyperspherical uniformity gap", rowwise=False),
    LossEntry("supcon", supcon, "supervised contrastive loss of the normalized features (Khosla et al. 2020; "
                                "--temperature)", features_only=True, rowwise=False),
)}
BUILTIN_LOSSES = tuple(LOSSES)
LOSS_NAME = re.compile(r"[A-Za-z_][\w.-]*")  # a name the command lines and sweep grids can carry


def register_loss(name: str, loss: PerSample, *, convex: bool = False, conjugate: PerSample | None = None,
                  shift_invariant: bool = False, description: str = "", replace: bool = False) -> LossEntry:
    """Register a per-sample loss ℓ(z, y) of the logits: `loss(logits (N, K), labels (N,))` → (N,) losses (torch,
    differentiable). The UFM then runs under --loss `name` with every metric and report. Declare
    `convex=True` when ℓ is convex in z: the run gets the convex program's optimum; give `conjugate(u, y)`
    = sup_z ⟨u, z⟩ − ℓ(z, y) (row-wise, +inf outside its domain) and that optimum is certified by a dual
    bound; without it the value is an upper bound only, and the summary says so. Declare `shift_invariant`
    when ℓ(z + c·1, y) = ℓ(z, y) (CE-like losses; checked): the program then works in the subspace X1 = 0 and
    the conjugate is only evaluated where Σ_j u_j = 0. Example:
    >>> import torch
    >>> def sq_hinge(z, y):  # Σ_{j≠y} max(0, 1 + z_j − z_y)²
    ...     return torch.relu(1 + z - z.gather(1, y[:, None])).scatter(1, y[:, None], 0.0).square().sum(1)
    >>> register_loss("sq_hinge", sq_hinge, convex=True, replace=True).convex
    True
    """
    if not isinstance(name, str) or not LOSS_NAME.fullmatch(name):
        raise (ValueError if isinstance(name, str) else TypeError)(
            f"name must be a non-empty string of letters, digits, _ . - (starting with a letter or _), got {name!r}")
    for flag, value in (("convex", convex), ("shift_invariant", shift_invariant), ("replace", replace)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {value!r} ({type(value).__name__})")
    if not isinstance(description, str):
        raise TypeError(f"description must be a string, got {type(description).__name__}")
    if name in BUILTIN_LOSSES:
        raise ValueError(f"{name!r} is a built-in loss; choose another name")
    if name in LOSSES and not replace:
        raise ValueError(f"a loss named {name!r} is registered already (pass replace=True to replace it)")
    if not callable(loss):
        raise TypeError(f"loss must be a function (logits, labels) -> per-sample values, got {type(loss).__name__}")
    if conjugate is not None and not callable(conjugate):
        raise TypeError(f"conjugate must be a function (u, labels) -> per-sample values, got "
                        f"{type(conjugate).__name__}")
    probe_loss(name, loss)

    def mean_loss(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions, features=None,
                  classifier=None) -> torch.Tensor:
        values = loss(logits, y)
        if values.shape != y.shape:
            raise ValueError(f"loss {name!r} must return one value per sample, shape {tuple(y.shape)}; "
                             f"got {tuple(values.shape)}")
        return values.mean()

    entry = LossEntry(name, mean_loss, description or f"registered loss {name}", convex=convex,
                      per_sample=loss, conjugate=conjugate, shift_invariant=shift_invariant)
    LOSSES[name] = entry
    return entry


def probe_loss(name: str, loss: PerSample) -> None:
    """Call a loss once on a small input (4 samples, 3 classes, float64, seeded) and check what every run relies
    on: a tensor of one finite value per sample that depends differentiably on the logits, with a finite gradient.
    Raises TypeError (not a tensor) or ValueError naming the loss and what is wrong, at registration rather than
    deep inside a run.
    >>> probe_loss("detached", lambda z, y: z.detach().square().sum(1))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: loss 'detached' returned values that do not depend on the logits (a detached tensor, ...
    """
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 0])
    try:
        values = loss(logits, y)
    except Exception as e:  # noqa: BLE001 - the user's function: report its failure as a registration error
        raise ValueError(f"loss {name!r} failed on a probe of 4 samples and 3 classes: {type(e).__name__}: "
                         f"{e}".splitlines()[0]) from e
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"loss {name!r} must return a torch tensor of per-sample values, got {type(values).__name__}")
    if values.shape != y.shape:
        raise ValueError(f"loss {name!r} must return one value per sample: shape (4,) for 4 samples, got "
                         f"{tuple(values.shape)}")
    if not torch.isfinite(values).all():
        raise ValueError(f"loss {name!r} returned non-finite values on finite logits: {values.tolist()}")
    if not values.requires_grad:
        raise ValueError(f"loss {name!r} returned values that do not depend on the logits (a detached tensor, or a "
                         "constant): the UFM trains through its gradient")
    (grad,) = torch.autograd.grad(values.sum(), logits, allow_unused=True)
    if grad is None or not torch.isfinite(grad).all():
        raise ValueError(f"loss {name!r} has no finite gradient in the logits on the probe")


def unregister_loss(name: str) -> None:
    """Remove a registered loss (built-ins stay).
    >>> register_loss("tmp", lambda z, y: z.square().sum(1)).name; unregister_loss("tmp"); "tmp" in LOSSES
    'tmp'
    False
    """
    if name in BUILTIN_LOSSES:
        raise ValueError(f"{name!r} is a built-in loss")
    LOSSES.pop(name, None)
