"""Per-sample losses of the logits and their convex conjugates, written by hand the way a researcher registers
them (ufm.register_loss, analysis.nuclear_program.CustomLoss): shared by the certificate, program and API tests."""

import math

import torch


def mse_loss(Z, y):
    """½‖z − e_y‖²."""
    return 0.5 * ((Z - torch.nn.functional.one_hot(y, Z.shape[1])) ** 2).sum(1)


def mse_conjugate(U, y):
    """½‖u‖² + u_y: the conjugate of ½‖z − e_y‖²."""
    return 0.5 * (U**2).sum(1) + U.gather(1, y[:, None])[:, 0]


def ce_loss(Z, y):
    """logsumexp(z) − z_y."""
    return torch.logsumexp(Z, 1) - Z.gather(1, y[:, None])[:, 0]


def ce_conjugate(U, y):
    """Σ_j p_j log p_j at p = u + e_y in the simplex, else +inf (rows of u sum to 0: the program projects)."""
    P = U + torch.nn.functional.one_hot(y, U.shape[1])
    value = torch.xlogy(P, P).sum(1)
    return torch.where((P >= 0).all(1), value, torch.full_like(value, math.inf))


def sq_hinge(Z, y):
    """Σ_{j≠y} max(0, 1 + z_j − z_y)², convex and shift-invariant (the j = y term masked, not subtracted:
    Σ_j … − 1 cancels to 1e-8 relative where the loss is small)."""
    return ((1 + Z - Z.gather(1, y[:, None])).clamp(min=0).scatter(1, y[:, None], 0.0) ** 2).sum(1)


def sq_hinge_conjugate(U, y):
    """Σ_{j≠y} (u_j²/4 − u_j) if u_j ≥ 0 for j ≠ y (and Σ_j u_j = 0), else +inf (derived: h(t) =
    max(0, 1 + t)² has h*(v) = v²/4 − v on v ≥ 0)."""
    off = U.scatter(1, y[:, None], 0.0)
    value = (off**2 / 4 - off).sum(1)
    return torch.where((off >= 0).all(1), value, torch.full_like(value, math.inf))


def dies_with_six_classes(Z, y):
    """½‖z − e_y‖², except that with 6 classes the process exits at once, as a worker killed by the kernel's
    out-of-memory handler would (tests of a sweep's pool that breaks)."""
    if Z.shape[1] == 6:
        import os

        os._exit(3)
    return mse_loss(Z, y)
