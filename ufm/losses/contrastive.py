"""The supervised contrastive loss (Khosla et al. 2020) of the normalized features alone (no classifier)."""

from __future__ import annotations

import torch

from ufm.losses.options import LossOptions

# the loss builds the N×N similarity matrix (and autograd keeps a few of them): beyond this many samples in a
# batch it would need gigabytes, so the configuration is refused (use --batch-size)
SUPCON_MAX_BATCH = 8192


def supcon(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions, features=None, classifier=None) -> torch.Tensor:
    """SupCon (Khosla et al. 2020, their L_out), over the batch: with ĥ the normalized features,
    ℓ_i = −1/|P(i)| Σ_{p∈P(i)} log(exp(ĥ_i·ĥ_p/τ) / Σ_{a≠i} exp(ĥ_i·ĥ_a/τ)), P(i) = the other samples of
    i's class; the mean over the samples that have a positive. The logits and the classifier are not read.
    >>> import torch; h = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    >>> y = torch.tensor([0, 0, 1, 1]); round(float(supcon(None, y, LossOptions(), features=h)), 6)  # log(1 + 2e⁻²)
    0.239545
    """
    if features is None:
        raise ValueError("the SupCon loss needs the features")
    h = features / features.norm(dim=1, keepdim=True).clamp_min(torch.finfo(features.dtype).tiny)
    S = h @ h.T / opts.temperature
    self_pair = torch.eye(len(y), dtype=torch.bool, device=S.device)
    S = S.masked_fill(self_pair, -torch.inf)  # a sample is neither its own positive nor its own negative
    log_prob = S - S.logsumexp(1, keepdim=True)
    positive = (y[:, None] == y[None, :]) & ~self_pair
    count = positive.sum(1)
    per_sample = -log_prob.masked_fill(~positive, 0.0).sum(1) / count.clamp_min(1)
    return per_sample[count > 0].mean()
