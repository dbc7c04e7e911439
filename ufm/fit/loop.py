"""The one run loop: B >= 1 configurations stepped together (a single run is a batch of one), measured on a
log-spaced schedule, stopped at divergence, at an interrupt, at --tol or when the optimizer stalls."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ufm.fit.divergence import DivergenceWatch
from ufm.fit.measure import measure
from ufm.fit.schedule import log_schedule
from ufm.problem import Problem


@dataclass
class Fit:
    """What the loop leaves: each configuration's history, the loop's status ("ok" or "interrupted"), the last
    step reached, the wall time, and the divergence watch (per configuration: where it diverged)."""

    histories: list[list[dict]]
    status: str
    steps: int
    seconds: float
    watch: DivergenceWatch

    def status_of(self, i: int) -> str:
        return "diverged" if self.watch.diverged[i] else self.status

    def steps_of(self, i: int) -> int:
        report = self.watch.report(i)
        return report["step"] if report else self.steps


def fit(problems: Sequence[Problem], stepper, y: torch.Tensor, *, progress: bool = False,
        on_row: Callable[[int, list[dict]], None] | None = None,
        measure_row: Callable[..., dict] | None = None, resume: dict | None = None,
        on_measured: Callable[[int, list[list[dict]], float, DivergenceWatch], None] | None = None) -> Fit:
    """Step `stepper` (ufm.fit.steppers) for the configurations `problems` (one step count and schedule: the
    first's), measuring each live configuration at the scheduled steps; `on_row(i, history_i)` after each new
    row (e.g. to write history.csv). A configuration that diverges stops being measured and never touches the
    others; the loop ends when all have diverged. `measure_row(params, y, problem)`: a row's measurements instead of
    ufm.fit.measure.measure (a data-parallel run's, from reduced statistics: ufm.fit.sharded_measure).
    `resume`: a checkpoint's state (ufm.fit.checkpoint; one configuration, its parameters already in the stepper):
    the loop goes on from its step, history, elapsed seconds and first loss. `on_measured(step, histories, seconds,
    watch)` after each measurement step (e.g. to write the checkpoint)."""
    first, B = problems[0].cfg, len(problems)
    evaluate_at = set(log_schedule(first.steps, first.evals_per_decade))
    histories: list[list[dict]] = [[] for _ in problems]
    watch = DivergenceWatch(B)
    start, status, step = time.perf_counter(), "ok", 0
    first_step = 0
    if resume is not None:
        first_step, start = resume["step"], start - resume["seconds"]
        histories[0] = [dict(r) for r in resume["history"]]
        watch.first[0], watch.next_step = resume["first_loss"], first_step
    bar = tqdm(total=first.steps, disable=not progress, file=sys.stderr, desc="ufm" if B == 1 else f"ufm ×{B}",
               unit="step", dynamic_ncols=True, mininterval=0.5)
    try:
        bar.update(first_step)
        for step in range(first_step, first.steps + 1):
            stop = step == first.steps or stepper.stalled()
            if step == first_step and resume is not None:  # measured (and saved) before the checkpoint was written
                if stop:
                    break
            elif step in evaluate_at or stop:
                if watch.check():
                    break
                for i, problem in enumerate(problems):
                    if watch.diverged[i]:
                        continue
                    # a stepper that knows its objective in closed form hands it over (ufm.fit.fixed_frame.LogitGD)
                    known = stepper.objective(i) if hasattr(stepper, "objective") else None
                    values = (measure(stepper.params(i), y, problem, known) if measure_row is None
                              else measure_row(stepper.params(i), y, problem))
                    row = {"step": step, "seconds": time.perf_counter() - start, **values}
                    if watch.is_bad(row["loss"], i):  # non-finite parameters, or a loss grown by orders
                        watch.flag(step, row["loss"], i)
                        continue
                    histories[i].append(row)
                    if on_row is not None:
                        on_row(i, histories[i])
                if all(watch.diverged):
                    break
                if on_measured is not None:
                    on_measured(step, histories, time.perf_counter() - start, watch)
                if B == 1:
                    last = histories[0][-1]
                    bar.set_postfix(loss=f"{last['loss']:.6g}", nc1=f"{last['nc1']:.2e}", refresh=False)
                    if first.tol > 0 and last["grad_norm"] <= first.tol:
                        break
                if stop:
                    break
            if watch.push(stepper.step()):
                break
            bar.update()
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        stepper.sync()
        bar.close()
    watch.check()
    return Fit(histories, status, step, time.perf_counter() - start, watch)
