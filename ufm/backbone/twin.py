"""The UFM twin of a backbone run: the SimConfig with the backbone's training class counts, feature
dimension, loss (and its hierarchy parameters) and weight decay. Its loss options and frame are the
ones the backbone trains with, so both sides optimize the same loss. estimate_twin times a few of its steps
for the line --compare-ufm prints before the twin starts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ufm.backbone.config import TrainConfig
from ufm.backbone.networks import feature_dim
from ufm.config import SimConfig
from ufm.problem import Problem


def twin_config(cfg: TrainConfig, counts: Sequence[int]) -> SimConfig:
    """The UFM of `cfg` with these training class counts: free features of the backbone's dimension,
    one per training sample, with λ_W = λ_H = λ_b = --wd (HUG: 0, its loss is scale-invariant). Raises
    ConfigError (e.g. a --hierarchy whose leaf count is not the dataset's K)."""
    return SimConfig(counts=tuple(counts), d=feature_dim(cfg, len(counts)), loss=replace(cfg.loss),
                     wd=0.0 if cfg.loss.name == "hug" else cfg.wd, bias=cfg.bias, steps=cfg.ufm_steps, seed=cfg.seed,
                     device="cpu")


def deep_twin_config(cfg: TrainConfig, counts: Sequence[int]) -> SimConfig:
    """The deep UFM of an MLP's hidden layers (Súkeník et al.'s deep unconstrained features model): free features
    after a ReLU (features="nonneg": X_0 = ReLU(H), the first hidden layer's output), then mlp_depth − 1 ReLU layers
    of the MLP's width, then the classifier; the same loss and λ, bias-free (deep neural collapse is stated without
    one). Its layer inputs X_0 … X_{L−1} stand for the MLP's ReLU outputs, in order.
    >>> from ufm.backbone.config import TrainConfig
    >>> c = deep_twin_config(TrainConfig(mlp_width=16, mlp_depth=3, loss="mse"), [5, 5, 5])
    >>> c.depth, c.width, c.d, c.act, c.features, c.bias
    (3, 16, 16, 'relu', 'nonneg', False)
    """
    return SimConfig(counts=tuple(counts), d=cfg.mlp_width, depth=cfg.mlp_depth, width=cfg.mlp_width, act="relu",
                     features="nonneg", loss=replace(cfg.loss), wd=cfg.wd, bias=False, steps=cfg.ufm_steps,
                     seed=cfg.seed, device="cpu", certificate=False)


@dataclass(frozen=True)
class TwinEstimate:
    """The size of the twin and the time its steps and measurements should take (the end-of-run checks — theory
    target, certificate — come on top)."""

    K: int
    N: int
    d: int
    steps: int
    seconds: float

    def line(self) -> str:
        """One line for the user before the twin starts, labelled an estimate."""
        return (f"UFM twin: K={self.K}, N={self.N}, d={self.d}, {self.steps} steps, about {_duration(self.seconds)} "
                f"(estimate from timing a few steps; the end-of-run checks come on top)")


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def estimate_twin(problem: Problem, probe_seconds: float = 0.3, max_probe_steps: int = 100) -> TwinEstimate:
    """Time the twin's own stepper (ufm.fit.steppers.make_stepper on the parameters ufm.run would start from) for
    a few steps after one warm-up step, and one measurement; the estimate is

        seconds ≈ steps · (time per step) + (number of measurements on the log schedule) · (time per measurement).

    Timed rather than computed from sizes because the stepper (fused closed-form GD, autograd, L-BFGS with line
    searches) and the machine decide the cost per step. The probe works on its own copy of the parameters (drawn
    from the seed, as ufm.run draws them), so the twin's run is unchanged; it stops after `probe_seconds` or
    `max_probe_steps` steps, whichever comes first."""
    from ufm.devices import resolve_device, resolve_dtype
    from ufm.fit.measure import measure
    from ufm.fit.schedule import log_schedule
    from ufm.fit.steppers import make_stepper
    from ufm.model import init_params

    cfg = problem.cfg
    device, dtype = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
    y = problem.labels(device)
    stepper = make_stepper([problem], [init_params(problem, device, dtype)], y)
    per_step = 0.0
    if cfg.steps > 0:
        stepper.step()  # warm-up: first-call allocations and kernel selection
        stepper.sync()
        t0, n = time.perf_counter(), 0
        while n < max_probe_steps and (n == 0 or time.perf_counter() - t0 < probe_seconds):
            stepper.step()
            n += 1
        stepper.sync()
        per_step = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    measure(stepper.params(0), y, problem)
    per_measure = time.perf_counter() - t0
    evaluations = len(log_schedule(cfg.steps, cfg.evals_per_decade))
    return TwinEstimate(cfg.K, cfg.N, cfg.d, cfg.steps, cfg.steps * per_step + evaluations * per_measure)
