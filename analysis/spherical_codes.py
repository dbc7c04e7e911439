"""Spherical codes: K unit vectors in R^d spread as uniformly as found — the targets of generalized neural collapse
beyond the simplex ETF (HUG, Liu et al. 2023): minimal Riesz s-energy (the Thomson problem for s = 1, d = 3) or
maximal minimum angle (the Tammes problem).

For K <= d + 1 the simplex ETF is optimal for both (every Riesz energy and the minimum angle; `exact`). Beyond, a
numerical search:

- **Energy** E_s = Σ_{i<j} ‖u_i − u_j‖^{−s} (s = 0: −Σ log): Riemannian L-BFGS on the product of spheres (the
  Euclidean gradient projected on the tangent spaces, steps retracted by normalizing the rows, Armijo backtracking;
  the curvature pairs in the embedding space), the energy and its gradient from the tiled pass
  `analysis.uniformity.pair_potential` (K×K tiles within the memory budget; one pass costs about 3·K²·d/2 flops).
  A restart stops when the energy falls by less than FTOL (relative) over WINDOW iterations, or its Riemannian
  gradient vanishes, or ENERGY_ITERATIONS.
- **Max-min angle**: from the energy optimum, continuation in the exponent — minimize (1/t)·log Σ_{i<j} r_ij^{−t}
  (→ −log min r_ij as t → ∞) for t = 4, 16, 64 (and 256, 1024, 4096 where no polish follows), each stage warm-started
  from the last (restarts after the first skip the energy stage and start at t = 16: other basins) — then, for small
  problems (K·d <= POLISH_MAX_VARS), the exact max-min problem on every restart:
  min z subject to ⟨u_i, u_j⟩ <= z for the nearly active pairs and ‖u_i‖ = 1 (SLSQP, dense).
- **Restarts** from random points (Gaussian rows normalized; restart r of seed σ uses the generator seeded σ·1000003 +
  r, on the CPU, so every device starts from the same points), the best kept: `restarts`, fewer for large problems
  (`planned_restarts`: K²·d·restarts <= RESTART_WORK, at least one), within a time `budget` (seconds): a
  search whose first restart is estimated (`code_seconds`: the measured cost of one tiled pass × the iterations
  expected) to exceed the budget is refused with CodeBudgetError, which names the estimate; a restart starts only
  while the time left exceeds the mean time of the ones done, and a restart still running at the deadline stops
  there (the code then says timed_out=True). The result is deterministic given the seed and the number of restarts
  done (recorded in the code).
- **Precision and device**: float64 throughout (an H100's float64 rate is that of its float32 without tensor cores,
  so nothing is gained by a float32 phase that the float64 polish would have to repeat). device "auto": CUDA when
  available and the problem is large enough to gain from it (K²·d >= GPU_MIN_WORK), else the CPU.
- **Cache**: a search that took CACHE_MIN_SECONDS or more is stored (atomically: a temporary file renamed) under
  $UFM_CACHE/spherical_codes (default ~/.cache/ufm; UFM_CACHE=off disables it) and read back by a later call with
  the same K, d, kind, s, seed and restarts, whatever its budget; every call is also cached in the process.

>>> code = spherical_code(4, 3)                      # K <= d + 1: the regular simplex (tetrahedron)
>>> code.exact, round(code.energy, 9), round(math.degrees(code.min_angle), 7)
(True, 3.674234614, 109.4712206)
>>> round(spherical_code(6, 3).energy, 9)             # the octahedron (Thomson problem, N = 6)
9.985281374
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

CODE_VERSION = 2  # of the search: a stored code of another version is not read
DEFAULT_BUDGET = 120.0  # seconds: K = 1000, d = 64 takes tens of seconds per restart on 2 CPU cores
FTOL = 1e-8  # a restart has converged when its objective fell by less than FTOL·|objective| over WINDOW iterations
WINDOW = 100
GTOL = 1e-12  # ... or when ‖Riemannian gradient‖ <= GTOL·‖Euclidean gradient‖
ENERGY_ITERATIONS = 20_000
STAGE_ITERATIONS = 5_000  # per stage of the max-min continuation
MEMORY = 10  # L-BFGS curvature pairs
RESTART_WORK = 4e6  # K²·d·restarts planned (`planned_restarts`): 8 restarts up to K²·d = 5e5, one from 4e6 on
MAX_STEP = 0.5  # the largest move of one point in one step (radians, about): keeps the retraction sane
SMALL_STAGES = (4.0, 16.0, 64.0)  # continuation before the SLSQP polish (from the energy optimum)
DIRECT_SMALL = (16.0, 256.0)  # ... from random points (the restarts after the first)
LARGE_STAGES = (4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0)  # without a polish: sharper (K = 200, d = 8: 59.97°)
POLISH_MAX_VARS = 400  # K·d of the dense SLSQP polish (about 1 s at K = 30, d = 3; K <= 133 in d = 3)
GPU_MIN_WORK = 1e8  # K²·d below which "auto" stays on the CPU (launch latency would dominate)
SMALL_K = 64  # up to this K no time is measured: a search takes well under a second
CACHE_ENV = "UFM_CACHE"
CACHE_MIN_SECONDS = 5.0
PROGRESS_DELAY = 2.0  # seconds before the progress bar appears (short searches draw nothing)


class CodeBudgetError(ValueError):
    """The search is estimated to take longer than its budget: `seconds` (the estimate of one restart), `budget`."""

    def __init__(self, K: int, d: int, seconds: float, budget: float, device: str) -> None:
        self.K, self.d, self.seconds, self.budget, self.device = K, d, seconds, budget, device
        super().__init__(f"the spherical code of K = {K} directions in R^{d} would take about {duration(seconds)} "
                         f"(estimated on {device}), over the budget of {duration(budget)}: raise budget= "
                         "(or use a GPU)")


def duration(seconds: float) -> str:
    """"45 s", "12 min", "8.4 h": a time for a message.
    >>> duration(45), duration(720), duration(30240)
    ('45 s', '12 min', '8.4 h')
    """
    if seconds < 100:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.2g} h" if seconds < 360_000 else f"{seconds / 86400:.0f} days"


@dataclass(frozen=True, eq=False)
class SphericalCode:
    """K unit vectors in R^d spread as uniformly as found: `points` (K×d, read-only), their Riesz s-energy and
    minimum angle (radians); `kind` "energy" (minimal Riesz s-energy: the Thomson problem for s = 1, d = 3) or
    "maxmin" (maximal minimum angle: the Tammes problem). `exact`: the simplex ETF (K <= d + 1), known optimal. The
    search's record: `restarts` done, `iterations` (all restarts), `seconds`, `device`, `converged` (every restart and
    stage stopped by its tolerance, none by its iteration cap or the deadline), `timed_out` (one was stopped by the
    deadline of the time budget), `cached` (read from the disk cache)."""

    points: np.ndarray
    energy: float
    min_angle: float
    kind: str
    s: float
    exact: bool
    restarts: int = 0
    iterations: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    converged: bool = True
    timed_out: bool = False
    cached: bool = False

    def quality(self) -> dict:
        """Energy and minimum angle against the bounds and the tables (`analysis.code_bounds.code_quality`)."""
        from analysis.code_bounds import code_quality

        K, d = self.points.shape
        return code_quality(K, d, self.s, self.energy, self.min_angle)


def simplex_etf_points(K: int, d: int) -> np.ndarray:
    """K unit vectors in R^d (d >= K − 1) with pairwise cosines −1/(K−1): the centered standard basis of
    R^K, normalized and rotated into its (K−1)-dimensional span.
    >>> P = simplex_etf_points(3, 2); np.round(P @ P.T, 12).tolist()
    [[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]]
    """
    if d < K - 1:
        from analysis.frames import FrameError  # here, not above: frames imports this module

        raise FrameError(f"a simplex ETF of {K} points needs d >= {K - 1}, got d = {d}")
    E = np.eye(K) - 1.0 / K
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    # coordinates in an orthonormal basis of the span (K − 1 dimensions), padded with zeros to d
    U, sing, Vt = np.linalg.svd(E, full_matrices=False)
    coords = U[:, : K - 1] * sing[: K - 1]
    out = np.zeros((K, d))
    out[:, : K - 1] = coords
    return out


# ------------------------------------------------------------------------------------------------------------------
# the time of a search
# ------------------------------------------------------------------------------------------------------------------

def resolve_device(device: str | torch.device, K: int, d: int) -> torch.device:
    """"auto": CUDA when available and K²·d >= GPU_MIN_WORK, else the CPU; anything else as torch reads it.
    >>> resolve_device("auto", 10, 3).type
    'cpu'
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and K * K * d >= GPU_MIN_WORK else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but CUDA is not available here (use 'auto' or 'cpu')")
    return dev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@lru_cache(maxsize=64)
def _pair_seconds(d: int, device_str: str) -> float:
    """Seconds per pair (i, j) of one tiled energy-and-gradient pass in R^d on the device: the best of three passes
    over a sample of rows (measured once per process)."""
    from analysis.uniformity import pair_potential

    device = torch.device(device_str)
    t = 4096 if device.type == "cuda" else 512
    U = torch.randn(t, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(device)
    U /= U.norm(dim=1, keepdim=True)
    best = math.inf
    for _ in range(3):
        _sync(device)
        start = time.perf_counter()
        pair_potential(U, "riesz", 1.0, grad=True)  # tiled as a search is
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best / (t * t / 2)


def planned_restarts(K: int, d: int, restarts: int) -> int:
    """The restarts a search plans: `restarts`, fewer where K²·d·restarts exceeds RESTART_WORK (at least 1) — the
    gain of a restart shrinks as K grows (energies of local optima differ by ~1e-6 relative at K = 1000) while its
    cost grows as K²·d. A deterministic count (the time budget only cuts it short on a slow machine).
    >>> planned_restarts(12, 3, 8), planned_restarts(300, 16, 8), planned_restarts(1000, 64, 8)
    (8, 2, 1)
    """
    return max(1, min(restarts, int(RESTART_WORK // (K * K * d))))


def expected_iterations(K: int, kind: str = "energy") -> int:
    """The L-BFGS iterations a restart is expected to take (measured on random starts in d = 8…64: about 1 300 at
    K = 200, 2 300 at K = 500, 5 300 at K = 1 000 until the energy stalls at FTOL; capped at ENERGY_ITERATIONS), and
    for "maxmin" the continuation's stages on top.
    >>> expected_iterations(1000), expected_iterations(10**5)
    (5300, 20000)
    """
    energy = min(ENERGY_ITERATIONS, 300 + 5 * K)
    if kind == "maxmin":
        energy += len(LARGE_STAGES) * min(STAGE_ITERATIONS, 200 + 5 * K)
    return energy


def code_seconds(K: int, d: int, kind: str = "energy", device: str | torch.device = "auto") -> float:
    """The estimated seconds of one restart of the search: `expected_iterations` × (1.1 tiled energy-and-gradient
    passes, each the measured cost per pair on this device × K²/2, + the L-BFGS step's own work: 1 ms plus 5e-8 s per
    coordinate, measured on 2 CPU cores at K·d = 1 600 and 64 000). Up to SMALL_K points nothing is measured (a
    model: well under a second). The simplex (K <= d + 1) takes no search: 0.
    >>> code_seconds(5, 8), code_seconds(30, 3) < 1
    (0.0, True)
    """
    if K <= d + 1:
        return 0.0
    per_pass = (1e-10 * K * K * (d + 16) if K <= SMALL_K
                else _pair_seconds(d, str(resolve_device(device, K, d))) * K * K / 2)
    return expected_iterations(K, kind) * (1.1 * per_pass + 1e-3 + 5e-8 * K * d)


def code_feasible(K: int, d: int, kind: str = "energy", budget: float | None = None,
                  device: str | torch.device = "auto") -> bool:
    """Whether `spherical_code(K, d, kind)` fits its time budget (default DEFAULT_BUDGET seconds): the simplex
    (K <= d + 1), a code in the disk cache, or `code_seconds` <= budget.
    >>> code_feasible(1000, 999), code_feasible(100_000, 512, device="cpu"), code_feasible(50, 16)
    (True, False, True)
    """
    budget = DEFAULT_BUDGET if budget is None else budget
    return K <= d + 1 or code_seconds(K, d, kind, device) <= budget


# ------------------------------------------------------------------------------------------------------------------
# the search
# ------------------------------------------------------------------------------------------------------------------

def _tangent(U: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """The projection of G on the tangent spaces of the rows of U: G − ⟨G, u⟩u, row by row."""
    return G - (G * U).sum(1, keepdim=True) * U


def _unit(X: torch.Tensor) -> torch.Tensor:
    return X / X.norm(dim=1, keepdim=True)


class _Clock:
    """The deadline of a search and its progress bar (opened after PROGRESS_DELAY seconds, on stderr)."""

    def __init__(self, budget: float, progress: bool, label: str) -> None:
        self.start = time.perf_counter()
        self.deadline = self.start + budget
        self.progress, self.label, self.bar, self.count = progress, label, None, 0

    def tick(self, value: float, note: str) -> None:
        self.count += 1
        if not self.progress:
            return
        if self.bar is None:
            if time.perf_counter() - self.start < PROGRESS_DELAY:
                return
            from tqdm import tqdm

            self.bar = tqdm(desc=self.label, unit="it", file=sys.stderr, dynamic_ncols=True, initial=self.count,
                            mininterval=0.5)
        self.bar.update(1)
        if self.count % 50 == 0:
            self.bar.set_postfix_str(f"{note}, objective {value:.10g}")

    @property
    def late(self) -> bool:
        return time.perf_counter() > self.deadline

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _minimize(U: torch.Tensor, potential: str, p: float, iterations: int, clock: _Clock, note: str
              ) -> tuple[torch.Tensor, float, int, str]:
    """Riemannian L-BFGS of `pair_potential(U, potential, p)` over unit rows (module docstring): (U, value,
    iterations, how it stopped: "converged", "iterations" (the cap) or "deadline")."""
    from analysis.uniformity import pair_potential

    def evaluate(X: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        v, G = pair_potential(X, potential, p, grad=True)
        return float(v), G, _tangent(X, G)

    f, G, g = evaluate(U)
    # curvature pairs as flat views (dot products without temporaries; the scalars as Python floats: one host
    # synchronization each, negligible beside a tiled pass at the sizes where a GPU is used)
    S: list[torch.Tensor] = []
    Y: list[torch.Tensor] = []
    rho: list[float] = []
    history = [f]
    for it in range(1, iterations + 1):
        # two-loop recursion for the direction −H g
        q = g.reshape(-1).clone()
        alphas = []
        for s_, y_, r_ in zip(reversed(S), reversed(Y), reversed(rho), strict=True):
            a = r_ * float(torch.dot(s_, q))
            alphas.append(a)
            q.sub_(y_, alpha=a)
        if S:
            q.mul_(float(torch.dot(S[-1], Y[-1])) / float(torch.dot(Y[-1], Y[-1])))
        else:  # the first step moves no point by more than about 0.1
            q.mul_(0.1 / max(float(g.norm(dim=1).max()), 1e-300))
        for s_, y_, r_, a in zip(S, Y, rho, reversed(alphas), strict=True):
            q.add_(s_, alpha=a - r_ * float(torch.dot(y_, q)))
        direction = _tangent(U, q.view_as(U)).neg_()
        slope = float(torch.dot(direction.reshape(-1), g.reshape(-1)))
        if not slope < 0:  # not a descent direction (the memory misleads): steepest descent, memory cleared
            S, Y, rho = [], [], []
            direction = g * (-0.1 / max(float(g.norm(dim=1).max()), 1e-300))
            slope = float(torch.dot(direction.reshape(-1), g.reshape(-1)))
            if not slope < 0:
                return U, f, it - 1, "converged"  # the gradient vanished
        step = min(1.0, MAX_STEP / max(float(direction.norm(dim=1).max()), 1e-300))
        while True:  # Armijo backtracking on the retraction, quadratic interpolation of the step
            Un = _unit(U + step * direction)
            fn, Gn, gn = evaluate(Un)
            clock.tick(fn, note)
            if fn <= f + 1e-4 * step * slope:
                break
            guess = -slope * step * step / (2 * (fn - f - slope * step)) if math.isfinite(fn) else 0.1 * step
            step = min(0.5 * step, max(0.1 * step, guess))
            if step < 1e-16:
                return U, f, it - 1, "converged"  # no decrease is representable: converged to rounding
        s_, y_ = (Un - U).reshape(-1), (gn - g).reshape(-1)
        sy = float(torch.dot(s_, y_))
        if sy > 1e-12 * float(s_.norm()) * float(y_.norm()):
            S.append(s_)
            Y.append(y_)
            rho.append(1 / sy)
            if len(S) > MEMORY:
                S.pop(0), Y.pop(0), rho.pop(0)
        U, f, G, g = Un, fn, Gn, gn
        history.append(f)
        if float(g.norm()) <= GTOL * float(G.norm()):
            return U, f, it, "converged"
        if len(history) > WINDOW and history[-WINDOW - 1] - f <= FTOL * max(abs(f), 1.0):
            return U, f, it, "converged"
        if clock.late:
            return U, f, it, "deadline"
    return U, f, iterations, "iterations"


def _maxmin_polish(P: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Locally maximize the minimum angle: min z over (X, z) s.t. x_i·x_j <= z for the nearly active pairs (the
    closest ones: cosines within a margin of the largest, at least 3K pairs) and ‖x_i‖² = 1 (SLSQP). Pairs that the
    polish brings closer than the new minimum are added and the polish repeated (`rounds`); kept only where the
    minimum angle over all pairs improved (SLSQP can stop at an infeasible point)."""
    from scipy.optimize import minimize

    K, d = P.shape
    iu = np.triu_indices(K, 1)

    def worst(X: np.ndarray) -> float:
        return float((X @ X.T)[iu].max())

    best, best_worst = P, worst(P)
    cos = (P @ P.T)[iu]
    keep = max(min(len(cos), 3 * K), int((cos >= best_worst - 0.25 * (1 - best_worst)).sum()))
    chosen = np.argsort(-cos)[:keep]
    for _ in range(rounds):
        a, b = iu[0][chosen], iu[1][chosen]
        rows = np.arange(len(chosen))

        def unpack(v: np.ndarray) -> np.ndarray:
            return v[:-1].reshape(K, d)

        def pair_jac(v: np.ndarray, a=a, b=b, rows=rows) -> np.ndarray:
            X = unpack(v)
            J = np.zeros((len(rows), K, d))
            J[rows, a] = -X[b]
            J[rows, b] = -X[a]
            return np.concatenate([J.reshape(len(rows), K * d), np.ones((len(rows), 1))], axis=1)

        def norm_jac(v: np.ndarray) -> np.ndarray:
            X = unpack(v)
            J = np.zeros((K, K, d))
            J[np.arange(K), np.arange(K)] = 2 * X
            return np.concatenate([J.reshape(K, K * d), np.zeros((K, 1))], axis=1)

        def pair_gap(v: np.ndarray, a=a, b=b) -> np.ndarray:
            X = unpack(v)
            return v[-1] - (X[a] * X[b]).sum(1)

        v0 = np.append(best.ravel(), best_worst)
        res = minimize(lambda v: v[-1], v0, jac=lambda v: np.eye(len(v))[-1], method="SLSQP",
                       constraints=[{"type": "ineq", "fun": pair_gap, "jac": pair_jac},
                                    {"type": "eq", "fun": lambda v: (unpack(v) ** 2).sum(1) - 1, "jac": norm_jac}],
                       options={"maxiter": 500, "ftol": 1e-15})
        X = unpack(res.x)
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        cos = (X @ X.T)[iu]
        if cos.max() < best_worst:
            best, best_worst = X, float(cos.max())
        # pairs outside the set that came closer than the set's bound: add them and polish again
        outside = np.setdiff1d(np.nonzero(cos >= res.x[-1] - 1e-12)[0], chosen)
        if len(outside) == 0:
            break
        chosen = np.union1d(chosen, outside)
    return best


def _stats(P: torch.Tensor, s: float) -> tuple[float, float]:
    """(Riesz s-energy, minimum angle in radians) of the rows of P: one tiled pass (analysis.pairwise)."""
    from analysis.pairwise import cosine_pair_stats

    st = cosine_pair_stats(P, s)
    return st.energy, st.min_angle


def _start(K: int, d: int, seed: int, restart: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + restart)
    return _unit(torch.randn(K, d, dtype=torch.float64, generator=g)).to(device)


def _search(K: int, d: int, kind: str, s: float, restarts: int, seed: int, budget: float, device: torch.device,
            progress: bool) -> SphericalCode:
    estimate = code_seconds(K, d, kind, device)
    if estimate > budget:
        raise CodeBudgetError(K, d, estimate, budget, device.type)
    clock = _Clock(budget, progress, f"spherical code K={K} d={d}")
    potential, p = ("log", 0.0) if s == 0 else ("riesz", s)
    polish = kind == "maxmin" and K * d <= POLISH_MAX_VARS
    stages = SMALL_STAGES if polish else LARGE_STAGES
    best, times, iterations, stops = None, [], 0, set()
    try:
        for r in range(planned_restarts(K, d, restarts)):
            if r and (clock.late or np.mean(times) > clock.deadline - time.perf_counter()):
                break
            began = time.perf_counter()
            U = _start(K, d, seed, r, device)
            if kind == "energy" or r == 0:
                U, _, its, stop = _minimize(U, potential, p, ENERGY_ITERATIONS, clock, f"restart {r + 1}")
                iterations += its
                stops.add(stop)
            if kind == "maxmin":
                # the first restart continues from the energy optimum; the others start the continuation at once
                # from their random points and at a larger exponent: other basins (N = 14 in R³: every restart
                # through the energy optimum ends at 54.74°, the direct ones at Sloane's 55.67°)
                for t in stages if r == 0 else (DIRECT_SMALL if polish else LARGE_STAGES[1:]):
                    U, _, its, stop = _minimize(U, "lse_riesz", t, STAGE_ITERATIONS, clock, f"restart {r + 1}, t={t:g}")
                    iterations += its
                    stops.add(stop)
            if polish:  # the exact max-min step on every restart: the continuation's ranking is not the polish's
                U = torch.as_tensor(_maxmin_polish(U.cpu().numpy()), device=device)
            energy, angle = _stats(U, s)
            score = energy if kind == "energy" else -angle
            if best is None or score < best[0]:
                best = (score, U)
            times.append(time.perf_counter() - began)
    finally:
        clock.close()
    P = best[1]
    energy, angle = _stats(P, s)
    points = P.cpu().numpy()
    points.setflags(write=False)
    return SphericalCode(points, energy, angle, kind, s, False, len(times), iterations,
                         time.perf_counter() - clock.start, device.type, stops == {"converged"}, "deadline" in stops)


# ------------------------------------------------------------------------------------------------------------------
# the disk cache
# ------------------------------------------------------------------------------------------------------------------

def cache_dir() -> Path | None:
    """Where computed codes are stored: $UFM_CACHE/spherical_codes (default ~/.cache/ufm/spherical_codes, or
    $XDG_CACHE_HOME/ufm/…); None when UFM_CACHE is "off", "0" or "none".
    >>> os.environ.get(CACHE_ENV, "").lower() in ("off", "0", "none") or cache_dir().name == "spherical_codes"
    True
    """
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("off", "0", "none", ""):
        return None
    root = Path(value) if value else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ufm"
    return root / "spherical_codes"


def _cache_file(K: int, d: int, kind: str, s: float, seed: int, restarts: int) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"{kind}-K{K}-d{d}-s{s:g}-seed{seed}-r{restarts}-v{CODE_VERSION}.npz"


def _load(path: Path | None, K: int, d: int, kind: str, s: float) -> SphericalCode | None:
    """The stored code, or None when there is none or it does not hold what its name says (then it is recomputed and
    overwritten)."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            points = np.array(z["points"], dtype=np.float64)
            meta = {k: z[k].item() for k in ("energy", "min_angle", "kind", "s", "restarts", "iterations", "seconds",
                                              "device", "converged", "timed_out", "version")}
    except (OSError, ValueError, KeyError):
        return None
    if (points.shape != (K, d) or meta["kind"] != kind or meta["s"] != s or meta["version"] != CODE_VERSION
            or not np.isfinite(points).all() or np.abs(np.linalg.norm(points, axis=1) - 1).max() > 1e-9):
        return None
    points.setflags(write=False)
    return SphericalCode(points, float(meta["energy"]), float(meta["min_angle"]), kind, s, False, int(meta["restarts"]),
                         int(meta["iterations"]), float(meta["seconds"]), str(meta["device"]), bool(meta["converged"]),
                         bool(meta["timed_out"]), cached=True)


def _store(path: Path | None, code: SphericalCode) -> None:
    """Write the code atomically (a temporary file in the same folder, then renamed); a folder that cannot be
    written is skipped (the cache is an optimization)."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, points=code.points, energy=code.energy, min_angle=code.min_angle, kind=code.kind,
                         s=code.s, restarts=code.restarts, iterations=code.iterations, seconds=code.seconds,
                         device=code.device, converged=code.converged, timed_out=code.timed_out, version=CODE_VERSION)
                os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 is for secrets; a code is not one
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass


# ------------------------------------------------------------------------------------------------------------------
# the entry point
# ------------------------------------------------------------------------------------------------------------------

_MEMO: OrderedDict[tuple, SphericalCode] = OrderedDict()  # the codes of this process (most recent last)
MEMO_SIZE = 64


def _spherical_code(K: int, d: int, kind: str, s: float, restarts: int, seed: int, budget: float, device: str,
                    progress: bool) -> SphericalCode:
    key = (K, d, kind, s, restarts, seed, budget, device)  # not `progress`: it changes what is drawn, not the code
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    code = _compute(K, d, kind, s, restarts, seed, budget, device, progress)
    _MEMO[key] = code
    if len(_MEMO) > MEMO_SIZE:
        _MEMO.popitem(last=False)
    return code


def clear_memo() -> None:
    """Forget the codes of this process (the disk cache stays)."""
    _MEMO.clear()


def _compute(K: int, d: int, kind: str, s: float, restarts: int, seed: int, budget: float, device: str,
             progress: bool) -> SphericalCode:
    if K <= d + 1:
        P = simplex_etf_points(K, d)
        P.setflags(write=False)  # cached: callers share it
        energy, angle = _stats(torch.tensor(P), s)
        return SphericalCode(P, energy, angle, kind, s, True)
    path = _cache_file(K, d, kind, s, seed, restarts)
    stored = _load(path, K, d, kind, s)
    if stored is not None:
        return stored
    code = _search(K, d, kind, s, restarts, seed, budget, torch.device(device), progress)
    if code.seconds >= CACHE_MIN_SECONDS:
        _store(path, code)
    return code


def spherical_code(K: int, d: int, kind: str = "energy", s: float = 1.0, restarts: int = 8, seed: int = 0, *,
                   budget: float | None = None, device: str | torch.device = "auto",
                   progress: bool = True) -> SphericalCode:
    """The most uniform K directions in R^d found: for K <= d + 1 the simplex ETF (optimal for every Riesz energy and
    for the minimum angle); beyond, the best of up to `restarts` searches (module docstring) — minimal Riesz s-energy
    (`kind="energy"`, s = 0 the log energy) or maximal minimum angle (`kind="maxmin"`) — within `budget` seconds
    (default DEFAULT_BUDGET; CodeBudgetError, a ValueError, where one restart is estimated to take longer). A
    progress bar on stderr for searches longer than PROGRESS_DELAY (`progress=False`: none). Cached in the process
    and, for searches of CACHE_MIN_SECONDS or more, on disk.
    >>> code = spherical_code(8, 3, restarts=2)
    >>> round(code.energy, 6), code.restarts, code.exact                # the square antiprism (Thomson, N = 8)
    (19.675288, 2, False)
    """
    if kind not in ("energy", "maxmin"):
        raise ValueError(f"kind must be 'energy' or 'maxmin', got {kind!r}")
    if int(K) != K or int(d) != d or K < 2 or d < 1:
        raise ValueError(f"need integers K >= 2 and d >= 1, got K = {K}, d = {d}")
    if d == 1 and K > 2:
        raise ValueError(f"the sphere in R^1 has two points: no code of K = {K} directions in d = 1")
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"the Riesz exponent s must be a finite number >= 0, got {s}")
    if int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts}")
    budget = DEFAULT_BUDGET if budget is None else float(budget)
    if not budget > 0:
        raise ValueError(f"the time budget must be > 0 seconds, got {budget}")
    dev = str(resolve_device(device, int(K), int(d)))
    return _spherical_code(int(K), int(d), kind, float(s), int(restarts), int(seed), budget, dev, bool(progress))
