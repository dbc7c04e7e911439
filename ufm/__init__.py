"""ufm: the unconstrained-features model of neural collapse, simulated and held against theory.

The library in five lines:
>>> import ufm
>>> r = ufm.run(ufm.SimConfig(K=4, n=5, d=6, loss=ufm.LossConfig("mse"), wd=5e-3, steps=200), progress=False)
>>> r.summary["theory"]["name"], r.params["W"].shape
('mse_bias_free', torch.Size([4, 6]))

`run` / `run_batch` simulate (files only with `out=`), `train` trains a real backbone, `sweep` runs a grid;
`register_loss` adds your own loss, `register_check` your own end-of-run check; NC tracking for your own
network lives in `analysis` (NCAccumulator, NCTracker).
"""

from ufm.api import RunResult, TrainResult, run, run_batch, sweep, train
from ufm.backbone.config import TrainConfig
from ufm.checks import EndOfRun, register_check, unregister_check
from ufm.config import SimConfig
from ufm.errors import ConfigError
from ufm.losses import LOSSES, LossConfig, register_loss, unregister_loss
from ufm.problem import Problem, resolve

__version__ = "0.1.0"


__all__ = ["LOSSES", "ConfigError", "EndOfRun", "LossConfig", "Problem", "RunResult", "SimConfig", "TrainConfig",
           "TrainResult", "register_check", "register_loss", "resolve", "run", "run_batch", "sweep", "train",
           "unregister_check", "unregister_loss"]
