"""The closed-form UFM step (ufm.fit.fused_gd) against autograd: gradients to 1e-12 (float64), and a fused GD
run against a plain autograd GD loop."""

import pytest
import torch

from ufm.config import SimConfig
from ufm.fit.fused_gd import GDStep, LossSpec, objective_and_grads
from ufm.losses import LOSSES, LossOptions
from ufm.model import init_params, objective_and_grad
from ufm.problem import resolve


@pytest.mark.parametrize("loss, bias", [("ce", False), ("ce", True), ("ls", True), ("mse", False), ("mse", True)])
def test_closed_form_gradients_equal_autograd(loss, bias):
    B, K, n, d = 3, 4, 5, 6
    g = torch.Generator().manual_seed(0)
    H = torch.randn(B, K * n, d, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(B, K, d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(B, K, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    y = torch.arange(K).repeat_interleave(n)
    wd = [torch.tensor([1e-3, 5e-2, 0.0], dtype=torch.float64) * s for s in (1, 2, 3)]
    spec = LossSpec(loss, smoothing=0.2, target_scale=1.5)
    F, data, grads = objective_and_grads(H.detach(), W.detach(), None if b is None else b.detach(), y, spec, *wd)
    opts = LossOptions(smoothing=0.2, target_scale=1.5)
    for i in range(B):
        Z = H[i] @ W[i].T + (0 if b is None else b[i])
        ref_data = LOSSES[loss](Z, y, opts)
        ref = ref_data + 0.5 * (wd[0][i] * W[i].square().sum() + wd[1][i] * H[i].square().sum()
                                + (0 if b is None else wd[2][i] * b[i].square().sum()))
        blocks = [H, W] + ([b] if b is not None else [])
        autograd = torch.autograd.grad(ref, blocks)
        assert float(data[i]) == pytest.approx(float(ref_data), rel=1e-13)
        assert float(F[i]) == pytest.approx(float(ref), rel=1e-13)
        for name, a in zip(("H", "W", "b"), autograd, strict=False):
            torch.testing.assert_close(grads[name][i], a[i], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("wd", [5e-4, 2e-2])
def test_fused_gd_follows_the_autograd_gd_trajectory(wd):
    """300 fused steps (B = 1, the single-run path, H's decay carried by a scalar; with λ = 2e-2 the scalar
    leaves [1e-2, 1e2] and is written back mid-run) against torch.optim.SGD on the autograd objective."""
    cfg = SimConfig(K=3, n=4, d=5, loss="ce", bias=True, wd_W=wd, wd_H=wd, wd_b=1e-2, lr=0.9, steps=300,
                    dtype="float64")
    problem = resolve(cfg)
    y = problem.labels(torch.device("cpu"))
    ref = init_params(problem, torch.device("cpu"), torch.float64)
    fused = {k: v.detach().clone() for k, v in ref.items()}
    opt = torch.optim.SGD(list(ref.values()), lr=cfg.lr)
    hyper = [torch.tensor([v], dtype=torch.float64) for v in (cfg.lr, cfg.wd_W, cfg.wd_H, cfg.wd_b)]
    stepper = GDStep(y, LossSpec("ce"), *hyper)
    synced = 0
    for _ in range(cfg.steps):
        opt.step(lambda: objective_and_grad(ref, y, problem)[0])
        stepper.step(fused["H"][None], fused["W"][None], fused["b"][None])
        synced += stepper.s == 1.0
    stepper.sync(fused["H"][None])
    assert (synced > 0) == (wd > 1e-2)
    for k in ref:
        torch.testing.assert_close(fused[k], ref[k].detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss", ["ce", "ls", "mse"])
@pytest.mark.parametrize("B", [1, 3])
def test_the_row_major_step_of_many_classes_follows_autograd(loss, B):
    """From ROW_MAJOR_K classes on the step's logits are row-major (Z = H Wᵀ, torch's fused softmax): 30 steps at
    K = ROW_MAJOR_K (with a bias, B = 1 and a batch of 3) equal plain GD on the autograd objective to 1e-10
    (float64)."""
    from ufm.fit.fused_gd import ROW_MAJOR_K

    K, n, d, lr = ROW_MAJOR_K, 2, 6, 0.5
    assert K >= ROW_MAJOR_K
    y = torch.arange(K).repeat_interleave(n)
    g = torch.Generator().manual_seed(1)
    H = torch.randn(B, K * n, d, generator=g, dtype=torch.float64)
    W = torch.randn(B, K, d, generator=g, dtype=torch.float64)
    b = 0.1 * torch.randn(B, K, generator=g, dtype=torch.float64)
    wd = torch.tensor([1e-3, 3e-2, 1e-1][:B], dtype=torch.float64)
    spec = LossSpec(loss, smoothing=0.2, target_scale=1.5)
    ref = [t.clone() for t in (H, W, b)]
    stepper = GDStep(y, spec, torch.full((B,), lr, dtype=torch.float64), wd, wd, wd, K=K)
    assert stepper.row_major
    for _ in range(30):
        _, _, grads = objective_and_grads(*ref, y, spec, wd, wd, wd)
        for t, name in zip(ref, ("H", "W", "b"), strict=True):
            t -= lr * grads[name]
        stepper.step(H, W, b)
    stepper.sync(H)
    for ours, theirs in zip((H, W, b), ref, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
