"""Certified global optima of the UFM: a first-order solver with a dual bound, and the factorization.

`solve` minimizes the program of `analysis.nuclear_program` by accelerated proximal gradient (FISTA,
Beck & Teboulle 2009) with singular-value thresholding as the proximal step of ρ‖X‖_*, a backtracking
step size that also grows (the curvature of CE falls by orders of magnitude as the logits grow: a fixed
1/L step would crawl at small weight decay) and adaptive restart (O'Donoghue & Candès 2015). It works in
float64 with torch (on CUDA when present and the program is large). Every few iterations it evaluates
the dual bound of the current iterate; it stops once

    gap = upper − lower <= tol·|upper|,

upper the best primal value seen and lower the best dual bound, and reports both. That pair is the
proof: "certified" means gap/|upper| <= CERTIFIED_RTOL, whatever the solver says about itself.

Custom losses (`analysis.nuclear_program.CustomLoss`): the same solver on the general K×K program, the
gradient by autograd. With a conjugate the certificate is the same pair (its lower bound rests on the
conjugate the user supplied; `Certificate.note` says so), both values widened by an allowance for the
rounding of the user's functions (`NuclearProgram.rounding_allowance`: a user's CE written lse(z) − z_y
is certified to 1e-9 down to λ ~ 1e-6, not at 1e-8, where its rounding is 1e-7 of the value). Without
one there is no lower bound: `lower` is −inf, `certified` is False, and the solver stops when the best
primal value has not fallen by more than `tol`·|value| in STALL_ITERS iterations (or at max_iter) — a
rule that ends every run and proves nothing; the note says which rule stopped it and gives the norm of
the last prox-gradient residual (an element of ∂F at the last iterate: 0 exactly at an optimum).

Scale: every tolerance is relative and the step size adapts, so the iterations do not depend on the
units of the problem (λ from 1e-10 to 1); the loss and its conjugate are evaluated to relative
precision near interpolation (see `NuclearProgram.loss_rows`), where the optimum is ~1e-8.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.nuclear_program import CUSTOM, ROUNDING_ULPS, CustomLoss, NuclearProgram, Point, svd
from analysis.theory import GRAMS_MAX_K, GroupFactorized, GroupMatrix, factorize_groups, factorize_logits

# "certified": the relative gap between the primal value and the dual bound is at most this
CERTIFIED_RTOL = 1e-9
# the solver goes on far below it: a gap of ε in value leaves the point (hence the predicted geometry:
# Grams, NC2) only ~√ε-accurate, and the last decades cost few iterations (linear convergence)
SOLVER_RTOL = 1e-14
# ... unless the rounding of the two values (~1e-15 relative) stops it first: once certified, it stops
# when the gap has not halved in STALL_ITERS iterations
STALL_ITERS = 100
MAX_ITER = 20000
ROUNDING_RTOL = 1e-12  # how far the dual bound may lie above the primal value by rounding alone
CHECK_EVERY = 5  # iterations between dual bounds (a bound costs about two steps)
# programs of fewer groups run on one CPU thread: their G×G products and SVDs are too small to gain from more,
# and the threads' synchronization dominates (measured: K = 32 768 Zipf, G = 62, 535 iterations: 1.1 s on one
# thread, 11.8 s on two of a 2-core machine shared with other jobs)
ONE_THREAD_MAX_G = 256
# a custom loss with a conjugate whose bound does not close (+inf at every candidate, say) also stops once
# its primal value has stalled for STALL_ITERS and its gap has not halved in this many iterations
CUSTOM_DUAL_STALL_ITERS = 3 * STALL_ITERS
NO_CONJUGATE_NOTE = ("no conjugate given: the value is an upper bound on F* only (generic first-order solver, "
                     "not certified)")


@dataclass
class Certificate:
    """A primal value (upper bound) and a dual lower bound on the global optimum of the program."""

    upper: float
    lower: float
    solver: str
    iterations: int
    seconds: float
    rtol: float = CERTIFIED_RTOL
    note: str = ""  # what the pair rests on, where it is more than the built-in conjugates (custom losses)

    @property
    def gap(self) -> float:
        return self.upper - self.lower

    @property
    def rel_gap(self) -> float:
        return self.gap / max(abs(self.upper), 1e-300)

    @property
    def certified(self) -> bool:
        """rel_gap <= rtol; a lower bound above the primal value beyond rounding (1e-12 relative) means
        an inconsistent program, never a certificate."""
        return bool(-ROUNDING_RTOL <= self.rel_gap <= self.rtol)

    def to_dict(self) -> dict:
        return {"upper": self.upper, "lower": self.lower, "gap": self.gap, "rel_gap": self.rel_gap,
                "certified": self.certified, "rtol": self.rtol, "solver": self.solver,
                "iterations": self.iterations, "seconds": self.seconds, "note": self.note}


@dataclass
class Solution:
    """The best point found and its certificate."""

    program: NuclearProgram
    point: Point
    certificate: Certificate


def initial_point(prog: NuclearProgram) -> Point:
    """Each class at the balanced closed form of its own count: CE logits u*(e_y − 1/K) with Zhu et
    al.'s gap u* = ln(1/c − (K − 1)), c = √(n_g)ρ; MSE the shrunk target (t − Nρ/√n_g)₊ (then restricted
    to the subspace of `NuclearProgram.restrict`). Balanced CE starts at its optimum:
    >>> prog = NuclearProgram.from_counts([5] * 4, "ce", 1e-4, 1e-4)
    >>> p = initial_point(prog); prog.dual_bound(p) / prog.objective(p) > 1 - 1e-14
    True
    """
    K, n = prog.K, prog.n
    if prog.kind == CUSTOM:  # nothing is known about a user's loss: X = 0, b = 0
        zeros = torch.zeros(prog.G, dtype=torch.float64, device=prog.device)
        return Point(torch.zeros(prog.G, prog.G, dtype=torch.float64, device=prog.device), zeros, zeros.clone())
    if prog.kind == "ce":
        c = n.sqrt() * prog.rho
        u = torch.where(K * c < 1, torch.log(1 / c.clamp(max=0.5 / K) - (K - 1)), 0.0)  # Kc >= 1: all at 0
        own, group = u * (K - 1) / K, (-u / K)[:, None].expand(prog.G, prog.G)
    else:
        own = (prog.own_target - prog.N * prog.rho / n.sqrt()).clamp(min=0)
        group = torch.zeros(prog.G, prog.G, dtype=torch.float64, device=prog.device)
    M, d = prog.compact(own * prog.sqrt_n, group * prog.sqrt_n[:, None])
    return Point(prog.restrict(M), d, torch.zeros_like(d))


def _prox(prog: NuclearProgram, p: Point, t: float) -> tuple[Point, float]:
    """prox of t·ρ‖X‖_* (the bias is smooth): singular-value thresholding of M, soft-thresholding of d.
    Returns the point and its nuclear norm."""
    U, S, Vh = svd(p.M)
    S = (S - t * prog.rho).clamp(min=0)
    d = torch.where(prog.grouped, p.d.sign() * (p.d.abs() - t * prog.rho).clamp(min=0), 0.0)
    nuclear = float(S.sum() + ((prog.m - 1) * d.abs()).sum())
    return Point((U * S) @ Vh, d, p.beta), nuclear


def _gradient(prog: NuclearProgram, sm) -> Point:
    """The gradient in the program's metric, restricted to the subspace of the iterates (the SVT of a
    matrix in it stays in it: its singular vectors do)."""
    return Point(prog.restrict(sm.Y_M), sm.Y_d, sm.g_beta)


def solve(prog: NuclearProgram, *, tol: float = SOLVER_RTOL, max_iter: int = MAX_ITER, start: Point | None = None,
          callback: Callable[[int, float, float], None] | None = None) -> Solution:
    """FISTA with backtracking and restart on the program, stopped by the dual bound (module docstring;
    a custom loss without a conjugate: by a stalled primal value, and never certified).

    `callback(iteration, upper, lower)` is called at every dual bound (a progress bar, say).
    Example:
    >>> from analysis.nuclear_program import NuclearProgram
    >>> sol = solve(NuclearProgram.from_counts([5] * 4, "ce", 1e-8, 1e-8))
    >>> sol.certificate.certified, round(sol.certificate.upper / 1.2487966784e-06, 6)
    (True, 1.0)
    """
    if prog.device.type == "cpu" and prog.G < ONE_THREAD_MAX_G and torch.get_num_threads() > 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return solve(prog, tol=tol, max_iter=max_iter, start=start, callback=callback)
        finally:
            torch.set_num_threads(threads)
    begin = time.perf_counter()
    x = initial_point(prog) if start is None else start
    sm_x = prog.smooth(x)
    best_upper, best_point = sm_x.value + prog.rho * prog.nuclear_norm(x.M, x.d), x
    best_lower = prog.dual_bound(x, sm_x)
    # the curvature of f in X is at most max ℓ''/N (ℓ'' <= 1 for MSE, 1/2 for CE): 1/L to start (a custom
    # loss: as MSE; backtracking finds its own)
    t = t_start = prog.N * (2.0 if prog.kind == "ce" else 1.0)
    y, sm_y, theta, it = x, sm_x, 1.0, 0
    best_sm = sm_x
    progress_gap, progress_it = math.inf, 0  # the last gap that halved the one before, and when
    stall_value, stall_it = best_upper, 0  # the last primal value that fell by more than tol, and when
    stopped = ""  # which rule stopped the solver: "gap", "stall" or "max_iter"
    while it < max_iter and best_upper - best_lower > tol * abs(best_upper):
        it += 1
        g = _gradient(prog, sm_y)
        t = min(1.25 * t, 1e12 * t_start)  # let the step grow: the curvature falls as the logits grow
        while True:
            x_new, nuclear = _prox(prog, y.combine(g, 1.0, -t), t)
            sm_new = prog.smooth(x_new)
            step = x_new.combine(y, 1.0, -1.0)
            # the descent lemma's test from gradients alone (for convex f, ⟨∇f(x⁺) − ∇f(y), x⁺ − y⟩ <=
            # ‖x⁺ − y‖²/(2t) implies f(x⁺) <= f(y) + ⟨∇f(y), x⁺ − y⟩ + ‖x⁺ − y‖²/(2t)): function values
            # stop resolving the step at ~1e-16·F, long before the iterate has converged
            if prog.inner(_gradient(prog, sm_new).combine(g, 1.0, -1.0), step) <= prog.inner(step, step) / (2 * t):
                break
            t *= 0.5
            if t < 1e-30 * t_start:  # only non-finite values fail the test at every step size
                raise RuntimeError(f"the step size collapsed at iteration {it} (non-finite gradient?)")
        last_step = (y, g, x_new, t)  # for the residual reported without a conjugate
        F_new = sm_new.value + prog.rho * nuclear
        if F_new < best_upper:
            best_upper, best_point, best_sm = F_new, x_new, sm_new
        # gradient-based adaptive restart (O'Donoghue & Candès 2015): drop the momentum once it points
        # against the step just taken
        if prog.inner(y.combine(x_new, 1.0, -1.0), x_new.combine(x, 1.0, -1.0)) > 0:
            y, sm_y, theta = x_new, sm_new, 1.0  # the next step starts from x_new, already evaluated
        else:
            theta_next = (1 + math.sqrt(1 + 4 * theta**2)) / 2
            y = x_new.combine(x_new.combine(x, 1.0, -1.0), 1.0, (theta - 1) / theta_next)
            sm_y, theta = prog.smooth(y), theta_next
        x, sm_x = x_new, sm_new
        if it % CHECK_EVERY == 0:
            best_lower = max(best_lower, prog.dual_bound(x, sm_x))
            if callback is not None:
                callback(it, best_upper, best_lower)
            # relative to |upper| as `Certificate.rel_gap` (a loss whose optimum is 0 has no relative gap: inf)
            gap = (best_upper - best_lower) / max(abs(best_upper), 1e-300)
            if best_upper < stall_value - tol * abs(stall_value):
                stall_value, stall_it = best_upper, it
            if gap <= progress_gap / 2 and math.isfinite(gap):
                progress_gap, progress_it = gap, it
            elif gap <= CERTIFIED_RTOL and it - progress_it >= STALL_ITERS:
                stopped = "gap"
                break
            # custom losses: stop on a stalled primal value (without a conjugate nothing else can stop it)
            if prog.kind == CUSTOM and it - stall_it >= STALL_ITERS and (
                    not prog.has_dual or it - progress_it >= CUSTOM_DUAL_STALL_ITERS):
                stopped = "stall"
                break
    else:
        stopped = "gap" if best_upper - best_lower <= tol * abs(best_upper) else "max_iter"
    best_lower = max(best_lower, prog.dual_bound(best_point, best_sm))
    zero = best_upper == 0  # before the rounding allowance: the program's value is exactly 0
    best_upper += prog.rounding_allowance(best_point, best_sm)  # a custom loss's rounding (0 for the built-in)
    residual = _residual(prog, *last_step) if it and not prog.has_dual else math.nan
    cert = Certificate(best_upper, best_lower, "fista", it, time.perf_counter() - begin,
                       note=_custom_note(prog, stopped, residual))
    if zero and math.isfinite(best_lower) and not cert.certified:
        zero_note = (f"the primal value is 0, where a relative gap (upper − lower)/|upper| cannot certify anything "
                     f"(absolute gap {cert.gap:.1e})")
        cert.note = "; ".join(filter(None, [cert.note, zero_note]))
    return Solution(prog, best_point, cert)


def _residual(prog: NuclearProgram, y: Point, g: Point, x_new: Point, t: float) -> float:
    """‖∇f(x⁺) − ∇f(y) − (x⁺ − y)/t‖ for the last prox-gradient step y → x⁺ = prox(y − t∇f(y)): an element
    of ∂F(x⁺) (in the iterates' subspace and the program's metric), 0 exactly at an optimum."""
    r = _gradient(prog, prog.smooth(x_new)).combine(g, 1.0, -1.0).combine(x_new.combine(y, 1.0, -1.0), 1.0, -1 / t)
    return math.sqrt(max(prog.inner(r, r), 0.0))


def _custom_note(prog: NuclearProgram, stopped: str, residual: float) -> str:
    """What a custom loss's certificate rests on, and (without a conjugate) why the solver stopped."""
    if prog.kind != CUSTOM:
        return ""
    name = prog.custom.name
    rounding = (f"; both values allow for the rounding of the user's functions ({ROUNDING_ULPS} ulps of the scale "
                "of their inputs: `NuclearProgram.rounding_allowance`)")
    if prog.has_dual:
        return (f"custom loss {name!r}: the lower bound is −f*(Y) from the conjugate supplied with the loss, "
                f"trusted as given (checked only by Fenchel–Young at the points evaluated){rounding}")
    why = {"stall": f"the primal value fell by less than the tolerance in {STALL_ITERS} iterations",
           "max_iter": "max_iter reached"}.get(stopped, stopped)
    return (f"custom loss {name!r}: {NO_CONJUGATE_NOTE}; stopped: {why}; last prox-gradient residual "
            f"(an element of ∂F, 0 at an optimum) {residual:.3e}{rounding}")


# ----- the cvxpy cross-check ------------------------------------------------------------------------------
CVXPY_SOLVER = "CLARABEL"  # the open-source conic solver shipped with cvxpy
CVXPY_OPTIONS = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500}


def solve_cvxpy(prog: NuclearProgram) -> Solution:
    """The same program as a conic program (cvxpy + Clarabel), K×K, every class its own group; for
    cross-checking `solve` at small K. The program is rescaled so that the optimum is O(1) in value and
    in X (units from `initial_point`): with absolute tolerances of ~1e-10, the unscaled program at
    λ = 1e-8 lets the solver stop 2e-3 away from the optimum. Its end point is certified by the same
    dual bound as every other point: the solver's status is not trusted.
    >>> sol = solve_cvxpy(NuclearProgram.from_counts([6, 4, 2], "ce", 1e-2, 1e-2, grouped=False))
    >>> abs(sol.certificate.upper / solve(sol.program).certificate.upper - 1) < 1e-8
    True
    """
    if prog.kind == CUSTOM:
        raise ValueError(f"solve_cvxpy takes the built-in losses only: custom loss {prog.custom.name!r} is a torch "
                         "function with no cvxpy form (use solver='fista')")
    import cvxpy as cp  # late: cvxpy takes a second to import

    if prog.G != prog.K:
        raise ValueError("solve_cvxpy takes the general program (grouped=False)")
    begin = time.perf_counter()
    K = prog.K
    x0 = initial_point(prog)
    X_scale = max(float(x0.M.abs().max()), 1e-300)
    F_scale = max(prog.objective(x0), 1e-300)
    q_own = prog.own_target.cpu().numpy()
    T = prog.group_target.cpu().numpy().copy()
    np.fill_diagonal(T, q_own)
    w, sqrt_n = prog.w.cpu().numpy(), prog.sqrt_n.cpu().numpy()
    Xs = cp.Variable((K, K))
    bs = cp.Variable(K) if prog.bias else None
    b_unit = X_scale / math.sqrt(prog.N)  # the bias in units comparable to a logit of X_scale/√n
    L = np.diag(X_scale / sqrt_n) @ Xs
    if bs is not None:
        L = L + np.ones((K, 1)) @ cp.reshape(b_unit * bs, (1, K), order="C")
    if prog.kind == "mse":
        data = 0.5 * cp.sum(w @ cp.square(L - T))
    else:
        # lse(z) − q·z = lse(z − (q·z)1) (q sums to 1): the cone sees the small numbers log(1 + ε) directly
        # instead of the difference of two logits of ~20
        shift = cp.reshape(cp.sum(cp.multiply(T, L), axis=1), (K, 1), order="C") @ np.ones((1, K))
        data = w @ cp.log_sum_exp(L - shift, axis=1)
    objective = data + prog.rho * X_scale * cp.normNuc(Xs)
    if bs is not None and prog.wd_b > 0:
        objective = objective + prog.wd_b / 2 * b_unit**2 * cp.sum_squares(bs)
    problem = cp.Problem(cp.Minimize(objective / F_scale))
    try:
        problem.solve(solver=CVXPY_SOLVER, **CVXPY_OPTIONS)
    except cp.error.SolverError as e:
        raise RuntimeError(f"cvxpy/{CVXPY_SOLVER} failed: {e}") from None
    if Xs.value is None:
        raise RuntimeError(f"cvxpy/{CVXPY_SOLVER} ended with status {problem.status} and no point")
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64, device=prog.device)  # noqa: E731
    beta = t(bs.value * b_unit / prog.bias_scale) if bs is not None else torch.zeros(K, dtype=torch.float64,
                                                                                   device=prog.device)
    point = Point(t(Xs.value * X_scale), torch.zeros_like(beta), beta)
    cert = Certificate(prog.objective(point), prog.dual_bound(point), f"cvxpy/{CVXPY_SOLVER}",
                       int(problem.solver_stats.num_iters or 0), time.perf_counter() - begin)
    return Solution(prog, point, cert)


# ----- the optimum as a UFM: the factorization and its predictions ----------------------------------------
@dataclass
class ConvexOptimum:
    """The certified optimum of the UFM for a loss convex in the logits, factorized into W and H.

    Every optimum has its count-group form `groups` (`analysis.theory.GroupFactorized`: rank, predictions,
    the within-group singular values |d_g| and which groups collapse, the Grams as `GroupMatrix`es), whose cost
    grows with the number of distinct counts G. The dense K×K and K×r arrays (class_logits, W, features,
    grams) exist for K <= GRAMS_MAX_K only; beyond it they are None / empty and `grams_note` says so."""

    value: float  # the primal value at the point found (upper bound on F*; a lower bound on the UFM's when d < rank)
    lower: float  # the dual bound: F* >= lower
    class_logits: np.ndarray | None  # (K, K): row k = logits z + b of every class-k sample (None: K too large)
    b: np.ndarray  # (K,)
    W: np.ndarray | None  # (K, r) balanced factor, r = numerical rank of Z (None: K too large)
    features: np.ndarray | None  # (K, r) the feature of every class-k sample (None: K too large)
    rank: int
    certificate: Certificate
    predicted: dict[str, float] = field(default_factory=dict)
    grams: dict[str, np.ndarray] = field(default_factory=dict)  # "W" and "means" (centered), K×K (small K)
    groups: GroupFactorized | None = None  # the count-group form (any K)
    group_counts: np.ndarray | None = None  # (G,) n_g, the count of a class of group g
    group_sizes: np.ndarray | None = None  # (G,) m_g, the classes of group g
    class_group: np.ndarray | None = None  # (K,) the group of every class
    grams_note: str = ""  # why the dense arrays are absent ("" when present)

    @property
    def Z(self) -> np.ndarray:
        """(K, K): row k = H Wᵀ for a class-k sample (the logits without the bias); Z_N×K = Z[y]."""
        return self._dense(self.class_logits, "class_logits") - self.b

    @property
    def seconds(self) -> float:
        return self.certificate.seconds

    def H(self, y: np.ndarray) -> np.ndarray:
        """The N×r features of samples with labels y (rows of `features`)."""
        return self._dense(self.features, "features")[np.asarray(y)]

    def _dense(self, a: np.ndarray | None, what: str) -> np.ndarray:
        if a is None:
            raise ValueError(f"{what} is not built: {self.grams_note} (use .groups, the count-group form)")
        return a

    def group_collapsed(self) -> dict[float, bool]:
        """{count: whether the classes of that count have identical classifiers and features at this optimum}
        for every count shared by at least two classes: group g collapses iff its within-group singular value
        |d_g| is 0 (below 1e-8 of the largest singular value, the rank cut).
        >>> nuclear_norm_certificate([1000] * 7 + [10] * 3, "ce", 5e-4, 5e-4).group_collapsed()
        {10.0: True, 1000.0: False}
        """
        grouped = self.group_sizes > 1
        return {float(c): bool(x) for c, x in zip(self.group_counts[grouped], self.groups.collapsed[grouped],
                                                    strict=True)}


def factorize(sol: Solution, counts: Sequence[float], wd_W: float, wd_H: float) -> ConvexOptimum:
    """W, H and the predictions of the certified point: its count-group form (`analysis.theory.factorize_groups`,
    any K) and, for K <= GRAMS_MAX_K, the dense factorization (`analysis.theory.factorize_logits`), whose
    predictions are reported (they agree with the count-group ones to rounding).
    >>> sol = solve(NuclearProgram.from_counts([5] * 3, "mse", 1e-2, 1e-2))
    >>> opt = factorize(sol, [5] * 3, 1e-2, 1e-2); opt.rank, opt.W.shape   # orthogonal rows: rank K
    (3, (3, 3))
    """
    prog, cert = sol.program, sol.certificate
    m = prog.m.cpu().numpy()
    n = prog.n.cpu().numpy()
    b_groups = prog.group_bias(sol.point)
    if prog.shift_invariant and prog.bias and prog.wd_b == 0:
        # CE (and a shift-invariant custom loss) ignores a constant shift of the logits: an unregularized
        # bias is determined up to a constant, which gradient descent from b = 0 keeps at mean 0 (the CE
        # gradient sums to 0)
        b_groups = b_groups - float(m @ b_groups) / prog.K
    X = GroupMatrix(sol.point.M.cpu().numpy(), sol.point.d.cpu().numpy(), m)
    groups = factorize_groups(X, b_groups, n, wd_W, wd_H, cert.upper)
    cg = prog.class_group
    parts = dict(groups=groups, group_counts=n, group_sizes=m.astype(int), class_group=cg)
    if prog.K > GRAMS_MAX_K:
        note = (f"K = {prog.K} > {GRAMS_MAX_K}: the K×K logits and Grams and the K×r factors are not built "
                f"(the count-group form has {prog.G} groups)")
        return ConvexOptimum(cert.upper, cert.lower, None, b_groups[cg], None, None, groups.rank, cert,
                             dict(groups.predicted), {}, grams_note=note, **parts)
    X_dense, b = prog.dense(sol.point)
    if prog.shift_invariant and prog.bias and prog.wd_b == 0:
        b = b - b.mean()
    fac = factorize_logits(X_dense, b, counts, wd_W, wd_H, cert.upper)
    return ConvexOptimum(cert.upper, cert.lower, fac.class_logits, b, fac.W, fac.features, fac.rank, cert,
                         fac.predicted, fac.grams, **parts)


SOLVERS = ("fista", "cvxpy")


def nuclear_norm_certificate(counts: Sequence[float], loss: str | CustomLoss, wd_W: float, wd_H: float,
                             wd_b: float = 0.0, bias: bool = False, *, smoothing: float = 0.0,
                             target_scale: float = 1.0, soft_targets: np.ndarray | None = None,
                             solver: str = "fista", grouped: bool = True, tol: float = SOLVER_RTOL,
                             max_iter: int = MAX_ITER,
                             callback: Callable[[int, float, float], None] | None = None) -> ConvexOptimum:
    """The certified optimum of min_{Z,b} (1/N)Σ ℓ(z_i + b, y_i) + √(λ_Wλ_H)‖Z‖_* + λ_b/2‖b‖², factorized.

    `loss`: "mse" (½‖z − s·e_y‖²), "ce", "ls" (label smoothing α), "soft" (CE against `soft_targets`), or
    a `CustomLoss` (a torch function of the logits, the general K×K program, "fista" only; certified only
    with a conjugate: see `CustomLoss`).
    `solver`: "fista" (`solve`, any K; `grouped` solves the count-group program) or "cvxpy" (Clarabel, the
    general K×K program; a cross-check at small K). Either way `.certificate` holds the primal value and
    the dual bound. Example:
    >>> opt = nuclear_norm_certificate([100, 100, 10], "ce", 5e-4, 5e-4)
    >>> opt.certificate.certified, opt.rank   # CE without a bias: rank K − 1 (logits shift-invariant)
    (True, 2)

    A custom loss, the squared hinge Σ_{j≠y} max(0, 1 + z_j − z_y)², without and with its conjugate
    Σ_{j≠y} (u_j²/4 − u_j) where u_j ≥ 0 for j ≠ y (and Σ_j u_j = 0, which the program ensures for a
    loss declared shift-invariant), +inf elsewhere:
    >>> def sq_hinge(Z, y):
    ...     margins = (1 + Z - Z.gather(1, y[:, None])).clamp(min=0).scatter(1, y[:, None], 0.0)  # j ≠ y
    ...     return (margins**2).sum(1)
    >>> def sq_hinge_conjugate(U, y):
    ...     off = U.scatter(1, y[:, None], 0.0)
    ...     value = (off**2 / 4 - off).sum(1)
    ...     return torch.where((off >= 0).all(1), value, torch.full_like(value, torch.inf))
    >>> opt = nuclear_norm_certificate([5, 5, 2], CustomLoss("sq-hinge", sq_hinge), 1e-2, 1e-2)
    >>> opt.certificate.certified, opt.certificate.lower, opt.certificate.note[:38]
    (False, -inf, "custom loss 'sq-hinge': no conjugate g")
    >>> cert = nuclear_norm_certificate([5, 5, 2], CustomLoss("sq-hinge", sq_hinge, sq_hinge_conjugate,
    ...                                 shift_invariant=True), 1e-2, 1e-2).certificate
    >>> cert.certified, abs(cert.upper / opt.value - 1) < 1e-9
    (True, True)
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    prog = NuclearProgram.from_counts(counts, loss, wd_W, wd_H, wd_b, bias, smoothing=smoothing,
                                      target_scale=target_scale, soft_targets=soft_targets,
                                      grouped=grouped and solver == "fista")
    sol = solve(prog, tol=tol, max_iter=max_iter, callback=callback) if solver == "fista" else solve_cvxpy(prog)
    return factorize(sol, counts, wd_W, wd_H)
