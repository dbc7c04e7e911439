"""TensorBoard output of a run (optional: needs the tensorboard package, `pip install 'ufm[tensorboard]'`).

A `ScalarLog` writes one run's event file through `torch.utils.tensorboard.SummaryWriter`: every history row as it
is measured (each numeric column one scalar, tagged with the column's name, at the row's step — `step` for a UFM
run, `epoch` for a backbone), then at the end the summary's numbers (final/*, gap/*, rel_gap/*, test/*, at the last
row's step), and it flushes and closes the file, on an interrupt as well. The package is imported only when a log
is asked for; `require_tensorboard` says in one line how to install it where it is missing."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INSTALL = "pip install 'ufm[tensorboard]'"
SUMMARY_SECTIONS = ("final", "gap", "rel_gap", "test")


class TensorBoardUnavailable(ImportError):
    """The tensorboard package is not installed (the message names the argument or flag and the install line)."""


def require_tensorboard(name: str = "tensorboard=") -> type:
    """torch.utils.tensorboard.SummaryWriter, or TensorBoardUnavailable naming `name` (the library's argument,
    or the command line's flag) and how to install the package.
    >>> require_tensorboard().__name__
    'SummaryWriter'
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise TensorBoardUnavailable(f"{name} needs the tensorboard package, which is not installed ({e}): "
                                     f"{INSTALL}") from None
    return SummaryWriter


def check_logdir(value: Any, name: str = "tensorboard") -> Path | None:
    """The `tensorboard=` argument of a library call: None, or a directory (str or Path) → Path; TypeError or
    ValueError naming `name`. Also checks, where a directory is given, that the package is installed.
    >>> check_logdir(None), check_logdir("tb").name
    (None, 'tb')
    >>> check_logdir(3)
    Traceback (most recent call last):
    ...
    TypeError: tensorboard must be None or a directory (str or Path), got int
    """
    if value is None:
        return None
    if not isinstance(value, (str, Path)):
        raise TypeError(f"{name} must be None or a directory (str or Path), got {type(value).__name__}")
    if not str(value).strip():
        raise ValueError(f"{name} must name a directory, got an empty string")
    require_tensorboard(f"{name}=")
    return Path(value).expanduser()


def numeric(value: Any) -> float | None:
    """`value` as a float where it is a number (bools and everything else: None). NaN and inf stay."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


class ScalarLog:
    """One run's TensorBoard event file in `logdir` (created on the first write: a process that never writes, such as
    a non-main process under torchrun, leaves nothing). `step_key`: the history column that is the step.
    >>> import tempfile
    >>> log = ScalarLog(tempfile.mkdtemp(), "step")
    >>> log.row({"step": 0, "loss": 1.5, "loss_name": "ce"}); log.row({"step": 10, "loss": 0.5})
    >>> log.finish({"final": {"loss": 0.5}, "gap": {}})
    >>> log.written, log.closed   # loss twice, then final/loss
    (3, True)
    """

    def __init__(self, logdir: Path | str, step_key: str) -> None:
        self.logdir, self.step_key = Path(logdir), step_key
        self.writer: Any = None
        self.step = 0
        self.written = 0  # scalars written so far
        self.closed = False

    def _add(self, tag: str, value: float, step: int) -> None:
        if self.closed:
            return
        if self.writer is None:
            self.writer = require_tensorboard()(log_dir=str(self.logdir))
        self.writer.add_scalar(tag, value, step)
        self.written += 1

    def row(self, row: Mapping[str, Any]) -> None:
        """Every numeric column of one history row but the step itself, at the row's step."""
        step = numeric(row.get(self.step_key))
        if step is None or not math.isfinite(step):
            return
        self.step = int(step)
        for key, value in row.items():
            number = numeric(value)
            if key != self.step_key and number is not None:
                self._add(key, number, self.step)

    def summary(self, summary: Mapping[str, Any]) -> None:
        """The numbers of the summary's sections final, gap, rel_gap and test, tagged section/key, at the last
        row's step."""
        for section in SUMMARY_SECTIONS:
            values = summary.get(section)
            if not isinstance(values, Mapping):
                continue
            for key, value in values.items():
                number = numeric(value)
                if number is not None:
                    self._add(f"{section}/{key}", number, self.step)

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        self.closed = True
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.flush()
            writer.close()

    def finish(self, summary: Mapping[str, Any] | None) -> None:
        """The summary's scalars (when there is a summary), then close, whatever happens in between."""
        try:
            if summary is not None:
                self.summary(summary)
        finally:
            self.close()
