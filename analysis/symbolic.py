"""The closed forms of analysis.theory, derived symbolically with sympy from their optimality conditions.

Each function derives a target from first principles (a stationarity condition solved by sympy) and
returns sympy expressions in the symbols of `SYMBOLS`; tests evaluate them against the numeric forms
of analysis.theory. Balanced classes (n per class), MSE target scale 1, the objective of DESIGN §3.
"""

from __future__ import annotations

import sympy as sp

K, n, lam_W, lam_H, lam_b, alpha, eps, lam = sp.symbols("K n lambda_W lambda_H lambda_b alpha epsilon lambda",
                                                      positive=True)
SYMBOLS = {"K": K, "n": n, "wd_W": lam_W, "wd_H": lam_H, "wd_b": lam_b, "alpha": alpha, "eps": eps, "wd": lam}
c = sp.sqrt(n * lam_W * lam_H)  # the shrinkage constant of DESIGN §5.2


def _argmin_1d(f: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """The stationary point of a function of one variable (sympy must find exactly one)."""
    roots = sp.solve(sp.diff(f, x), x)
    if len(roots) != 1:
        raise ValueError(f"expected one stationary point of {f}, got {roots}")
    return roots[0]


def shrinkage() -> tuple[sp.Expr, sp.Expr]:
    """Per singular value σ of the targets: min_z (1/(2N))(σ − z)² + ρz → z* = σ − Nρ and its value."""
    sigma, z, N, rho = sp.symbols("sigma z N rho", positive=True)
    f = (sigma - z) ** 2 / (2 * N) + rho * z
    z_star = _argmin_1d(f, z)
    return z_star, sp.simplify(f.subs(z, z_star))


def _shrink_value(sigma: sp.Expr, count: int | sp.Expr) -> sp.Expr:
    """`count` singular values σ each shrunk by τ = N√(λ_Wλ_H), N = Kn (no collapse assumed)."""
    s_sym, N_sym, rho_sym = sp.symbols("sigma N rho", positive=True)
    _, value = shrinkage()
    return count * value.subs({s_sym: sigma, N_sym: K * n, rho_sym: sp.sqrt(lam_W * lam_H)})


def mse_bias_free_loss() -> sp.Expr:
    """F* of bias-free MSE: K singular values √n of Y (expected: Kc − K²c²/2)."""
    return sp.simplify(_shrink_value(sp.sqrt(n), K))


def mse_free_bias_loss() -> sp.Expr:
    """F* with an unregularized bias: K − 1 singular values √n of Y − 11ᵀ/K (expected: (K−1)c(1 − Kc/2))."""
    return sp.simplify(_shrink_value(sp.sqrt(n), K - 1))


def mse_regularized_bias() -> dict[str, dict[str, sp.Expr]]:
    """The regularized-bias optimum Z = a(Y − 11ᵀ/K) + g·11ᵀ, b = β1 (target scale 1) from its
    optimality conditions. The objective separates into a class part (K−1)/(2K)(a − 1)² + c(K−1)a,
    minimized by a* (no collapse assumed), and K times ½(g + β − t)² + c·g + (λ_b/2)β², t = 1/K, g >= 0:
    - "etf": g = 0 with β minimizing the rest; optimal while the subgradient condition
      |∂/∂g| = t − β <= c holds ("condition" <= 0);
    - "common": g > 0, both derivatives vanish; valid where its g is positive ("g" > 0).
    Returns a* and, per case, g, β, the condition and F*."""
    a, g, beta = sp.symbols("a g beta", real=True)
    t = 1 / K
    class_part = (K - 1) / (2 * K) * (a - 1) ** 2 + c * (K - 1) * a
    a_star = _argmin_1d(class_part, a)
    class_value = class_part.subs(a, a_star)
    f = (g + beta - t) ** 2 / 2 + c * g + lam_b * beta**2 / 2
    beta0 = _argmin_1d(f.subs(g, 0), beta)
    sol = sp.solve([sp.diff(f, g), sp.diff(f, beta)], [g, beta], dict=True)[0]
    return {
        "a": {"a": sp.simplify(a_star)},
        "etf": {"g": sp.Integer(0), "beta": beta0,
                "condition": sp.simplify((t - beta0) - c),
                "loss": sp.simplify(class_value + K * f.subs({g: 0, beta: beta0}))},
        "common": {"g": sp.simplify(sol[g]), "beta": sp.simplify(sol[beta]),
                   "loss": sp.simplify(class_value + K * f.subs(sol))},
    }


def ce_etf() -> dict[str, sp.Expr]:
    """CE on the scaled simplex ETF (Zhu et al. 2021). The regularizer of a logit gap u, minimized over
    the feature/classifier ratio κ, is (K − 1)c·u; the data loss is ln(1 + (K − 1)e^{−u}); u* solves
    the stationarity condition. Returns u*, F*, ‖W‖², the optimal κ and the wrong-class probability."""
    u, kappa, a_sq = sp.symbols("u kappa a_sq", positive=True)
    # ‖w_k‖² = a_sq, h = κ w_y: logit gap u = κ a_sq K/(K − 1); regularizer over the K rows of W and N rows of H
    a_of = u * (K - 1) / (kappa * K)
    reg = (lam_W * K * a_sq / 2 + lam_H * K * n * kappa**2 * a_sq / 2).subs(a_sq, a_of)
    kappa_star = _argmin_1d(reg, kappa)
    reg_star = sp.simplify(reg.subs(kappa, kappa_star))
    F = sp.log(1 + (K - 1) * sp.exp(-u)) + reg_star
    u_star = _argmin_1d(F, u)
    return {
        "u": sp.simplify(u_star),
        "loss": sp.simplify(F.subs(u, u_star)),
        "W_norm_sq": sp.simplify(K * a_of.subs({kappa: kappa_star, u: u_star})),
        "kappa": kappa_star,
        "p_wrong": sp.simplify(sp.exp(-u_star) / (1 + (K - 1) * sp.exp(-u_star))),
        "regularizer_per_gap": sp.simplify(reg_star / u),
    }


def lemma1() -> dict[str, sp.Expr]:
    """Rangamani–Banburski Lemma 1: the square loss of NC outputs (α on the true class, −α/(K−1) on the
    others) and its minimum over α, which is positive: no NC solution interpolates."""
    loss = ((1 - alpha) ** 2 + (K - 1) * (alpha / (K - 1)) ** 2) / 2
    a_star = _argmin_1d(loss, alpha)
    return {"loss": sp.simplify(loss), "alpha_star": a_star, "minimum": sp.simplify(loss.subs(alpha, a_star))}


def sqi_norm_sq() -> sp.Expr:
    """‖w_c‖² from the stationarity identity ‖w_c‖² = (1/(λN)) Σ_i (y_i − f_i)_c f_{i,c} with SQI
    outputs: f_c = 1 − ε on the n samples of class c, ε/(K−1) on the (K−1)n others."""
    own = n * eps * (1 - eps)  # (y − f)_c = ε, f_c = 1 − ε
    others = (K - 1) * n * (-eps / (K - 1)) * (eps / (K - 1))
    return sp.simplify((own + others) / (lam * K * n))


def as_function(expr: sp.Expr, *names: str):
    """A numpy function of the named parameters (keys of SYMBOLS) in that order."""
    return sp.lambdify([SYMBOLS[name] for name in names], expr, "numpy")
