"""End-of-run checks as plug-ins: each check is one module (or any object) with

    NAME                      the summary.json key of its block
    ORDER                     where its lines appear in the table (and when it runs)
    applies(run) -> bool      whether this run gets the block
    compute(run) -> dict      the block, from the run's end state (`EndOfRun`)
    lines(block) -> [str]     what the end-of-run table prints for it

Every module of this package that defines all five is a built-in check, so adding a check is adding one
file; `register_check` adds one from anywhere else (a notebook, a plug-in package). The theory target and
the gaps to it are the summary's core (keys theory, gap, rel_gap), built before the checks run.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import torch

from analysis.theory import Target
from ufm.problem import Problem


class Check(Protocol):
    NAME: str
    ORDER: int

    def applies(self, run: EndOfRun) -> bool: ...

    def compute(self, run: EndOfRun) -> dict: ...

    def lines(self, block: dict) -> list[str]: ...


@dataclass
class EndOfRun:
    """What a check reads: the problem, the final parameters (float, on the run's device) and labels, the
    history, the status, the summary built so far (final, theory, …) and the theory target. `convex` (the
    convex program's optimum, or None and why it was skipped) is solved once, on first use; where it raised
    (a registered loss declared convex that is not, say), `convex_failure` says why."""

    problem: Problem
    params: dict[str, torch.Tensor]
    y: torch.Tensor
    history: list[dict]
    status: str
    progress: bool = False
    summary: dict = field(default_factory=dict)
    target: Target | None = None
    convex_failure: str = ""  # why the convex program failed ("" where it was solved or skipped)

    @property
    def cfg(self):
        return self.problem.cfg

    @property
    def final(self) -> dict:
        return self.summary.get("final", {})

    @property
    def measured(self) -> bool:
        """The run ended with a finite measurement and did not diverge."""
        return self.status != "diverged" and bool(self.final)

    @cached_property
    def convex(self) -> tuple[Any, str]:
        from ufm.checks.certificate import convex_optimum

        if not self.cfg.certificate:
            return None, "--no-certificate"
        try:
            return convex_optimum(self.problem, self.progress)
        except Exception as e:  # noqa: BLE001 - a user's loss (or the solver) failing costs the certificate only
            self.convex_failure = f"{type(e).__name__}: {e}"
            return None, f"the convex program failed ({self.convex_failure})"

    @property
    def certified_convex(self):
        """The convex optimum when its certificate holds, else None."""
        convex = self.convex[0]
        return convex if convex is not None and convex.certificate.certified else None


_REGISTERED: dict[str, Check] = {}


def builtin_checks() -> list[Check]:
    """The modules of this package that define NAME, ORDER, applies, compute and lines."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if all(hasattr(module, a) for a in ("NAME", "ORDER", "applies", "compute", "lines")):
            found.append(module)
    return found


def checks() -> list[Check]:
    """Every check, built-in and registered, in ORDER."""
    return sorted([*builtin_checks(), *_REGISTERED.values()], key=lambda c: (c.ORDER, c.NAME))


def register_check(check: Check) -> Check:
    """Add a check (an object with NAME, ORDER, applies, compute, lines); it runs at the end of every later
    run and its lines appear in the table. Example:
    >>> from types import SimpleNamespace
    >>> toy = SimpleNamespace(NAME="toy", ORDER=99, applies=lambda run: True,
    ...                       compute=lambda run: {"K": run.cfg.K}, lines=lambda block: [f"toy: K = {block['K']}"])
    >>> register_check(toy).NAME, [c.NAME for c in checks()][-1]
    ('toy', 'toy')
    >>> unregister_check("toy")
    """
    missing = [a for a in ("NAME", "ORDER", "applies", "compute", "lines") if not hasattr(check, a)]
    if missing:
        raise TypeError(f"check needs the attributes NAME, ORDER, applies, compute and lines; it lacks "
                        f"{', '.join(missing)}")
    if not isinstance(check.NAME, str) or not check.NAME.isidentifier():
        raise ValueError(f"check.NAME must be a non-empty identifier (its key in summary.json), got {check.NAME!r}")
    if isinstance(check.ORDER, bool) or not isinstance(check.ORDER, (int, float)):
        raise TypeError(f"check.ORDER must be a number (checks run in ascending ORDER), got {check.ORDER!r}")
    not_callable = [a for a in ("applies", "compute", "lines") if not callable(getattr(check, a))]
    if not_callable:
        raise TypeError(f"check.{not_callable[0]} must be a function")
    if any(c.NAME == check.NAME for c in builtin_checks()):
        raise ValueError(f"{check.NAME!r} is a built-in check")
    _REGISTERED[check.NAME] = check
    return check


def unregister_check(name: str) -> None:
    """Remove a registered check."""
    _REGISTERED.pop(name, None)


def run_checks(run: EndOfRun) -> dict[str, dict]:
    """The blocks of the checks that apply, in ORDER (each also stored in run.summary, so later checks see it).
    A check that raises gets the block {"failed": "<error>"}: one failing check (a plug-in, say) must not cost
    the run its summary or the other checks."""
    blocks = {}
    for check in checks():
        try:
            if not check.applies(run):
                continue
            block = check.compute(run)
        except Exception as e:  # noqa: BLE001 - reported in the summary and the table
            block = {"failed": f"{type(e).__name__}: {e}"}
        blocks[check.NAME] = run.summary[check.NAME] = block
    return blocks


def check_lines(summary: dict) -> list[str]:
    """The table lines of every check whose block is in `summary` (a failed check: one line saying so)."""
    lines = []
    for check in checks():
        block = summary.get(check.NAME)
        if block and set(block) == {"failed"}:
            lines.append(f"{check.NAME}: the check failed ({block['failed']})")
        elif block:
            lines.extend(check.lines(block))
    return lines
