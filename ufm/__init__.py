"""ufm: the unconstrained-features model of neural collapse, simulated and held against theory.

The library in five lines:
>>> import ufm
>>> r = ufm.run(ufm.SimConfig(K=4, n=5, d=6, loss=ufm.LossConfig("mse"), wd=5e-3, steps=200), progress=False)
>>> r.summary["theory"]["name"], r.params["W"].shape
('mse_bias_free', torch.Size([4, 6]))

`run` / `run_batch` simulate (files only with `out=`), `train` trains a real backbone, `sweep` runs a grid;
`register_loss` adds your own loss, `register_check` your own end-of-run check; NC tracking for your own
network lives in `analysis` (NCAccumulator, NCTracker).

The library prints nothing (only the command lines print, and the progress bars draw on stderr). It reports
through `logging` and `warnings`:

- the logger "ufm" and its children, one per module (`logging.getLogger(__name__)`: "ufm.sweeps.runner" for a
  sweep's notices, "ufm.backbone.compare" for the UFM twin's estimate); `analysis` logs under "ufm.analysis". So
  `logging.getLogger("ufm")` configures them all: WARNING records (a sweep finding another sweep in its folder, a
  run whose summary is unusable and is run again) reach stderr through Python's last-resort handler when nothing is
  configured; INFO records (the twin's size and time estimate) appear once you ask for them, e.g.
  `logging.basicConfig(level=logging.INFO)`; `logging.getLogger("ufm").setLevel(logging.ERROR)` silences them.
- `warnings.warn` with the category `ufm.UFMWarning` (a UserWarning) for a result that is there but incomplete or
  doubtful (a comparison figure that could not be drawn): filter it like any warning.

The command lines (python -m ufm.simulate, ufm.sweep, ufm.train, ufm.atlas) show both as their own lines on
stderr, "python -m ufm.sweep: warning: …" (ufm.cli.common.report_to_stderr).
"""

from ufm.api import RunResult, TrainResult, run, run_batch, sweep, train
from ufm.backbone.config import TrainConfig
from ufm.checks import EndOfRun, register_check, unregister_check
from ufm.config import SimConfig
from ufm.errors import ConfigError, UFMWarning
from ufm.losses import LOSSES, LossConfig, register_loss, unregister_loss
from ufm.problem import Problem, resolve

__version__ = "0.1.0"


__all__ = ["LOSSES", "ConfigError", "EndOfRun", "LossConfig", "Problem", "RunResult", "SimConfig", "TrainConfig",
           "TrainResult", "UFMWarning", "register_check", "register_loss", "resolve", "run", "run_batch", "sweep",
           "train", "unregister_check", "unregister_loss"]
