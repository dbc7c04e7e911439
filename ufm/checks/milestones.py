"""When a run interpolates (training loss → 0 with accuracy 1) and when NC1 falls below 1e-3."""

from __future__ import annotations

import math

NAME, ORDER = "milestones", 80

# a run interpolates once its mean training loss is below INTERPOLATION_LOSS (absolute: ½‖f − y‖² of
# 1e-5 is an RMS residual of ~4e-3 under MSE; weight decay 5e-4 keeps the MSE loss near 1e-4, so it never
# counts as interpolating) with every sample classified correctly; NC is reached once NC1 <= NC1_REACHED
INTERPOLATION_LOSS = 1e-5
NC1_REACHED = 1e-3


def milestones(history: list[dict], unit: str = "step") -> dict:
    """The first evaluation `unit` (step, or epoch for a backbone) at which the run interpolates (data
    loss <= INTERPOLATION_LOSS with accuracy 1) and at which NC1 <= NC1_REACHED; None where never reached.
    >>> milestones([{"step": 0, "data_loss": 1.0, "nc1": 1.0}, {"step": 9, "data_loss": 0.0, "accuracy": 1, "nc1": 0}])
    {'interpolation_step': 9, 'nc1_reached_step': 9, 'criteria': 'data_loss <= 1e-05 with accuracy 1; nc1 <= 0.001'}
    """
    finite = [r for r in history if math.isfinite(r.get("data_loss", math.nan))]
    interp = next((r[unit] for r in finite if r["data_loss"] <= INTERPOLATION_LOSS
                   and r.get("accuracy", 0) == 1), None)
    nc = next((r[unit] for r in finite if r.get("nc1", math.inf) <= NC1_REACHED), None)
    return {f"interpolation_{unit}": interp, f"nc1_reached_{unit}": nc,
            "criteria": f"data_loss <= {INTERPOLATION_LOSS:g} with accuracy 1; nc1 <= {NC1_REACHED:g}"}


def applies(run) -> bool:
    return True


def compute(run) -> dict:
    return milestones(run.history)


def lines(m: dict) -> list[str]:
    unit = "epoch" if "interpolation_epoch" in m else "step"
    when = lambda v: f"{unit} {v}" if v is not None else "never"  # noqa: E731
    return [f"interpolates (training loss → 0): {when(m[f'interpolation_{unit}'])}; NC1 <= 1e-3: "
            f"{when(m[f'nc1_reached_{unit}'])}"]
