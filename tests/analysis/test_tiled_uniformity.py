"""The tiled pairwise measures of analysis.uniformity (DESIGN §8): values and gradients equal naive dense references
written here (autograd through the whole K×K matrix of cosines) to rounding, with tiles really used (a budget of a
few KiB), and the Gram determinant refused beyond the budget."""

import math

import numpy as np
import pytest
import torch

from analysis.blocked import budget
from analysis.uniformity import (
    check_gram_fits,
    gram_log_det,
    log_riesz_energy,
    log_sum_exp_distance,
    min_angle,
    pair_potential,
    riesz_energy,
)

TINY = 6 * 1024  # bytes: tiles of 12×12 float64 (5 copies), so K = 37 splits into 4×4 tiles


def dense(X: torch.Tensor, kind: str, p: float) -> torch.Tensor:
    """The reference: all pairs i < j of the normalized rows from one K×K matrix, r = √max(2 − 2c, 1e-30)."""
    U = X / X.norm(dim=1, keepdim=True)
    iu = torch.triu_indices(len(U), len(U), 1)
    r = (2 - 2 * (U @ U.T)[iu[0], iu[1]]).clamp_min(1e-30).sqrt()
    if kind == "riesz":
        return -torch.log(r).sum() if p == 0 else r.pow(-p).sum()
    if kind == "lse_riesz":
        return torch.logsumexp(-p * torch.log(r), 0)
    if kind == "lse_distance":
        return torch.logsumexp(-p * r, 0)
    return 2 * torch.asin((r.min() / 2).clamp(max=1.0))


MEASURES = {"riesz": riesz_energy, "lse_riesz": log_riesz_energy, "lse_distance": log_sum_exp_distance,
            "min": lambda X, p: min_angle(X)}


@pytest.mark.parametrize("kind, p", [("riesz", 1.0), ("riesz", 2.0), ("riesz", 0.7), ("riesz", 0.0),
                                     ("lse_riesz", 4.0), ("lse_riesz", 256.0), ("lse_distance", 10.0), ("min", 0.0)])
@pytest.mark.parametrize("nbytes", [None, TINY])
def test_tiled_measures_and_gradients_equal_the_dense_reference(kind, p, nbytes):
    """E_s (s = 0: the log energy), log E_s, log Σ e^{−t r}, θ_min and their gradients (the backward recomputes every
    tile: grad_U[I] += Φ U[J], grad_U[J] += Φᵀ U[I], Φ = dE/dc) against autograd through the dense matrix."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(37, 5, dtype=torch.float64, generator=g) * torch.rand(37, 1, dtype=torch.float64, generator=g)
    A, B = X.clone().requires_grad_(True), X.clone().requires_grad_(True)
    with budget(nbytes):
        value = MEASURES[kind](A, p)
        value.backward()
    reference = dense(B, kind, p)
    reference.backward()
    assert float(value.detach()) == pytest.approx(float(reference.detach()), rel=1e-13, abs=1e-13)
    torch.testing.assert_close(A.grad, B.grad, rtol=1e-12, atol=1e-13 * float(B.grad.abs().max()))


def test_pair_potential_one_pass_equals_its_pieces():
    """`pair_potential` with grad=True: the value of the forward pass and the gradient of the backward, in one pass
    (the log-sum-exp's gradient accumulated under a running maximum), for tiles of every shape (K = 29, tile 8: the
    last tiles are ragged)."""
    g = torch.Generator().manual_seed(2)
    U = torch.randn(29, 4, dtype=torch.float64, generator=g)
    U /= U.norm(dim=1, keepdim=True)
    for kind, p in [("riesz", 1.0), ("log", 0.0), ("lse_riesz", 64.0), ("lse_distance", 3.0)]:
        V, G = pair_potential(U, kind, p, grad=True, tile=8)
        X = U.clone().requires_grad_(True)
        ref = dense(X, "riesz" if kind == "log" else kind, p)
        ref.backward()
        # the gradient is the Euclidean one of V(U) for the rows as given (the reference differentiates through the
        # normalization too): compare on the tangent spaces, where the two agree
        tangent = X.grad - (X.grad * U).sum(1, keepdim=True) * U
        assert float(V) == pytest.approx(float(ref.detach()), rel=1e-13)
        torch.testing.assert_close(G - (G * U).sum(1, keepdim=True) * U, tangent, rtol=1e-12, atol=1e-12)


def test_coincident_and_antipodal_points_give_finite_values_and_zero_forces():
    """Coincident rows: r clamped at 1e-15, a finite energy and no force between them (as autograd through the clamp);
    the minimum angle 0; tiles on both sides of the pair."""
    X = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64,
                     requires_grad=True)
    with budget(4096):
        E = riesz_energy(X, 1.0)
        E.backward()
    assert math.isfinite(E.item()) and torch.isfinite(X.grad).all()
    assert float(min_angle(X)) == pytest.approx(0.0, abs=1e-7)


def test_min_angle_ties_share_the_gradient_like_torch_min():
    """The octahedron: every neighbouring pair is at 90°: the gradient is spread over the tied pairs as torch's min
    spreads it (the dense reference), not put on one pair."""
    X = torch.tensor(np.concatenate([np.eye(3), -np.eye(3)]), dtype=torch.float64)
    A, B = X.clone().requires_grad_(True), X.clone().requires_grad_(True)
    min_angle(A).backward()
    dense(B, "min", 0).backward()
    torch.testing.assert_close(A.grad, B.grad, rtol=1e-12, atol=1e-14)


def test_float32_stays_float32_and_few_rows():
    X = torch.randn(9, 3)
    assert riesz_energy(X).dtype == torch.float32
    assert float(riesz_energy(X[:1])) == 0.0 and float(log_riesz_energy(X[:1], 2.0)) == -math.inf
    with pytest.raises(ValueError, match="at least 2 rows"):
        min_angle(X[:1])


def test_gram_determinant_refused_beyond_the_budget():
    """log det of the K×K Gaussian kernel cannot be tiled: beyond the memory budget it says what it needs."""
    with budget(4096):
        with pytest.raises(ValueError, match="whole K×K kernel"):
            gram_log_det(torch.randn(64, 3, dtype=torch.float64))
        with pytest.raises(ValueError, match="energy or maxgap"):
            check_gram_fits(10_000)
    assert math.isfinite(float(gram_log_det(torch.randn(64, 3, dtype=torch.float64))))
