"""The library refuses bad input at the door (issue 25): every input a user tried from a script or a notebook, each
a test asserting the exact exception type and that the message names the offending argument in Python terms
(`overwrite=True`, `wd_W`, `cfgs[1]`), never a command-line flag and never an error from deep inside numpy or
torch. The command lines keep their flags (tests/ufm/cli)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing

import numpy as np
import pytest
import torch

import ufm
from analysis.metrics import nc_metrics
from analysis.tracking import NCAccumulator, NCTracker
from ufm.backbone.config import TrainConfig
from ufm.errors import ConfigError, python_names
from ufm.output.rundir import RunDirInUse

TINY = dict(K=3, n=2, d=4, steps=2, certificate=False)


def raises(kind: type[BaseException], name: str, call, /, *args, **kwargs) -> BaseException:
    """`call(*args, **kwargs)` raises exactly `kind` (or a subclass) and the message names `name` as a word, with no
    command-line flag in it."""
    with pytest.raises(kind) as info:
        call(*args, **kwargs)
    text = str(info.value)
    assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w])", text), f"{name!r} not named in: {text}"
    assert not re.search(r"(?<![\w-])--[a-zA-Z]", text), f"a command-line flag in a library message: {text}"
    return info.value


# -- the configurations: types checked when they are made ---------------------------------------------------

@pytest.mark.parametrize("field, value", [("K", 10.5), ("d", 8.5), ("steps", 10.7), ("K", "10"), ("wd", "5e-4"),
                                          ("n", 2.0), ("seed", 1.5), ("lr", "0.1"), ("counts", [3, 2.5]),
                                          ("K", True), ("depth", None)])
def test_simconfig_wrong_types_are_type_errors(field, value):
    raises(TypeError, field.split("[")[0], ufm.SimConfig, **{**TINY, field: value})


@pytest.mark.parametrize("field, value", [("bias", "no"), ("certificate", "False"), ("bias", 1), ("certificate", 0)])
def test_simconfig_bools_are_bools(field, value):
    """bias="no" used to learn a bias (a non-empty string is truthy); certificate="False" ran the certificate."""
    raises(TypeError, field, ufm.SimConfig, **{**TINY, field: value})


def test_simconfig_numpy_scalars_are_their_python_values():
    cfg = ufm.SimConfig(K=np.int64(3), n=np.int32(2), d=4, wd=np.float32(1e-3), bias=np.bool_(True), steps=2)
    assert (type(cfg.K), type(cfg.n), type(cfg.wd_W), cfg.bias) == (int, int, float, True)
    assert ufm.SimConfig(counts=np.array([3, 2, 1]), d=4).counts == (3, 2, 1)


def test_numpy_integers_in_float_fields_are_python_ints_and_the_config_is_json():
    cfg = ufm.SimConfig(K=3, n=2, d=4, wd=np.int64(0), lr=np.int64(1), init_scale=np.int32(1), steps=2)
    assert (type(cfg.wd_W), type(cfg.lr), type(cfg.init_scale)) == (int, int, int)
    assert json.loads(json.dumps(cfg.to_dict()))["lr"] == 1


def _wrong_values(hint) -> list:
    """A value of the wrong type for each kind of field: a string for a number, a float for an int, a string for a
    bool, an int for a string."""
    options = set(typing.get_args(hint)) or {hint}
    if str in options:
        return [3] if options <= {str, type(None)} else []
    if bool in options:
        return ["yes"]
    if int in options:
        return [2.5, "2"]
    if float in options:
        return ["0.5"]
    return []


@pytest.mark.parametrize("cls", [ufm.SimConfig, ufm.LossConfig, TrainConfig])
def test_every_field_of_every_configuration_checks_its_type(cls):
    """The systematic probe: each field of SimConfig, LossConfig and TrainConfig given a value of the wrong type is
    a TypeError naming that field (the loss field takes a name or a LossConfig, tested below)."""
    hints = typing.get_type_hints(cls)
    probed = 0
    for f in dataclasses.fields(cls):
        if f.name == "loss":
            continue
        for value in _wrong_values(hints[f.name]):
            raises(TypeError, f.name, cls, **{f.name: value})
            probed += 1
    assert probed >= 20 if cls is not ufm.LossConfig else probed >= 15


def test_loss_must_be_a_name_or_a_lossconfig():
    raises(TypeError, "loss", ufm.SimConfig, loss=3)
    raises(TypeError, "loss", TrainConfig, loss=["ce"])


def test_library_messages_use_python_names():
    """ConfigError messages are written once with the flags; the library reads them in Python names."""
    e = raises(ConfigError, "wd_W", ufm.SimConfig, K=3, wd_W=-1.0)
    assert e.cli.startswith("--wd-W")  # the command lines print this form
    e = raises(ConfigError, "momentum", ufm.SimConfig, K=3, momentum=1.5)
    assert python_names("pass --overwrite, or --no-bias; --wd-M") == "pass overwrite=True, or bias=False; wd_M"


def test_a_run_directory_in_use_says_overwrite_true(tmp_path):
    cfg = ufm.SimConfig(**TINY)
    ufm.run(cfg, tmp_path / "r", progress=False)
    e = raises(RunDirInUse, "overwrite=True", ufm.run, cfg, tmp_path / "r", progress=False)
    assert "--overwrite" in e.cli


def test_a_weight_decay_that_underflows_is_refused():
    """wd = 1e-40 is 0 in float32 (below its smallest normal number, 1.2e-38): refused, not silently no decay."""
    raises(ConfigError, "wd", ufm.SimConfig, **TINY, wd=1e-40)
    raises(ConfigError, "wd_H", ufm.SimConfig, **TINY, wd_H=1e-40)
    assert ufm.SimConfig(**TINY, wd=1e-40, dtype="float64").wd_W == 1e-40  # representable in float64
    raises(ConfigError, "wd", TrainConfig, wd=1e-40)


# -- the calls ------------------------------------------------------------------------------------------------

def test_run_takes_a_config_not_a_string_or_a_dict():
    raises(TypeError, "cfg", ufm.run, "x")
    e = raises(TypeError, "cfg", ufm.run, {"K": 4})
    assert "SimConfig(**" in str(e)
    raises(TypeError, "out", ufm.run, ufm.SimConfig(**TINY), out=3)
    raises(TypeError, "progress", ufm.run, ufm.SimConfig(**TINY), progress="no")
    raises(ValueError, "threads", ufm.run, ufm.SimConfig(**TINY), progress=False, threads=0)


def test_run_batch_names_the_bad_item():
    cfg = ufm.SimConfig(**TINY)
    raises(TypeError, "cfgs[1]", ufm.run_batch, [cfg, None])
    raises(TypeError, "cfgs", ufm.run_batch, cfg)
    raises(TypeError, "outs[0]", ufm.run_batch, [cfg], [1])


def test_train_takes_a_trainconfig():
    raises(TypeError, "cfg", ufm.train, ufm.SimConfig(**TINY))
    raises(TypeError, "resume", ufm.train, TrainConfig(), resume="yes")


def test_register_loss_checks_its_name_and_probes_the_loss():
    """The loss is called once on 4 samples × 3 classes when it is registered: a detached result (torch's error, 11
    frames deep, at the first step) or a wrong shape is one line naming the loss."""
    raises(ValueError, "name", ufm.register_loss, "", lambda z, y: z.square().sum(1))
    raises(TypeError, "name", ufm.register_loss, None, lambda z, y: z.square().sum(1))
    raises(TypeError, "loss", ufm.register_loss, "probe_x", 3)
    raises(TypeError, "convex", ufm.register_loss, "probe_x", lambda z, y: z.square().sum(1), convex="yes")
    e = raises(ValueError, "probe_detached", ufm.register_loss, "probe_detached",
               lambda z, y: z.detach().square().sum(1))
    assert "detached" in str(e)
    raises(ValueError, "probe_shape", ufm.register_loss, "probe_shape", lambda z, y: z.square().sum())
    raises(ValueError, "probe_nan", ufm.register_loss, "probe_nan", lambda z, y: z.sum(1) * math.nan)
    raises(TypeError, "probe_np", ufm.register_loss, "probe_np", lambda z, y: z.detach().numpy().sum(1))
    assert not {"probe_x", "probe_detached", "probe_shape", "probe_nan", "probe_np"} & set(ufm.LOSSES)


def test_register_check_names_what_is_missing():
    from types import SimpleNamespace

    raises(TypeError, "compute", ufm.register_check, SimpleNamespace(NAME="c", ORDER=1, applies=len, lines=len))
    bad = SimpleNamespace(NAME="", ORDER=1, applies=len, compute=len, lines=len)
    raises(ValueError, "NAME", ufm.register_check, bad)
    raises(TypeError, "ORDER", ufm.register_check, SimpleNamespace(NAME="c", ORDER="1", applies=len, compute=len,
                                                                   lines=len))


# -- the accumulator and the tracker --------------------------------------------------------------------------

def test_accumulator_arguments():
    raises(TypeError, "K", NCAccumulator, 3.0)
    raises(ValueError, "K", NCAccumulator, 1)
    raises(TypeError, "dtype", NCAccumulator, 3, dtype="float32")
    raises(TypeError, "rtol", NCAccumulator, 3, rtol="0")
    if not torch.cuda.is_available():  # used to be an AssertionError from torch
        raises(ValueError, "store_device", NCAccumulator, 3, store_device="cuda")
        raises(ValueError, "device", NCAccumulator, 3, device="cuda:0")
    raises(TypeError, "store_device", NCAccumulator, 3, store_device=0.5)
    raises(TypeError, "model", NCTracker, "not a model", None, 3)


def test_accumulator_refuses_non_finite_inputs():
    """An all-NaN W used to give accuracy 0.333 and nc4 0.889; NaN features, a NaN nc1."""
    acc = NCAccumulator(3)
    y = torch.arange(6) % 3
    acc.update(torch.randn(6, 4), y)
    raises(ValueError, "W", acc.compute, torch.full((3, 4), math.nan))
    raises(ValueError, "b", acc.compute, torch.zeros(3, 4), torch.tensor([0.0, math.inf, 0.0]))
    H = torch.randn(6, 4)
    H[2, 1] = math.nan
    raises(ValueError, "features", acc.update, H, y)
    assert acc.num_samples == 6  # the bad batch was not added


@pytest.mark.parametrize("keep_features", [True, False])
def test_float32_features_near_1e20_give_the_float64_answer(keep_features):
    """Squares of 1e20 overflow float32 (3.4e38): the accumulator sums in float64, so the float32-stored features get
    the metrics of the same (rounded) features in float64, where they used to get nc1 = NaN without a word."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    H = (torch.randn(60, 5, generator=g, dtype=torch.float64) + 3 * torch.eye(3, 5, dtype=torch.float64)[y]) * 1e20
    H32 = H.float()
    W = torch.randn(3, 5, generator=g)
    acc = NCAccumulator(3, keep_features=keep_features)
    for i in range(0, 60, 25):
        acc.update(H32[i:i + 25], y[i:i + 25])
    out, ref = acc.compute(W), nc_metrics(H32.double(), y, W.double())
    for key in ("nc1", "nc2", "nc3"):
        assert math.isfinite(out[key]) and out[key] == pytest.approx(ref[key], rel=1e-10), key
    assert nc_metrics(H32, y, W)["nc1"] == pytest.approx(ref["nc1"], rel=1e-10)  # nc_metrics upcasts such features


def test_merging_accumulators_of_different_dtypes_converts_to_the_receivers():
    """A float64 accumulator merged into a float32 one: its features are stored as float32 (memory: N·d·4 bytes
    plus the int64 labels) and the metrics are those of the float32-rounded features."""
    g = torch.Generator().manual_seed(1)
    y = torch.arange(12) % 3
    H = torch.randn(12, 4, generator=g, dtype=torch.float64) + 1 / 3
    a, b = NCAccumulator(3, dtype=torch.float32), NCAccumulator(3, dtype=torch.float64)
    a.update(H[:6], y[:6])
    b.update(H[6:], y[6:])
    a.merge(b)
    assert a.nbytes == 12 * 4 * 4 + 12 * 8
    assert a.compute()["nc1"] == pytest.approx(nc_metrics(H.float().double(), y)["nc1"], rel=1e-12)
    assert a.compute()["nc1"] != nc_metrics(H, y)["nc1"]  # the float32 rounding is visible: the dtype was converted


# -- sweeps, overwrites and resumes (the behaviour behind them: tests/ufm/sweeps/test_sweep_safety.py) ----------

@pytest.mark.parametrize("kwargs, kind, name", [
    (dict(workers=0), ValueError, "workers"),              # was ZeroDivisionError
    (dict(batch_size=0), ValueError, "batch_size"),        # was an error inside range()
    (dict(workers=1.5), TypeError, "workers"),
    (dict(grid={"wd": "1e-3"}), TypeError, "grid['wd']"),  # was iterated character by character
    (dict(fixed=["K", 3]), TypeError, "fixed"),
])
def test_sweep_arguments(tmp_path, kwargs, kind, name):
    call = {"grid": {"wd": [1e-3]}, "out": tmp_path / "s", "fixed": dict(TINY), "workers": 1, "progress": False,
            **kwargs}
    grid = call.pop("grid")
    raises(kind, name, ufm.sweep, grid, **call)
    assert not (tmp_path / "s" / "results.csv").exists()


def test_run_batch_refuses_one_directory_for_two_runs(tmp_path):
    """outs=["same", "same"] used to let the second run overwrite the first silently."""
    cfg = ufm.SimConfig(**TINY)
    raises(ValueError, "outs[0]", ufm.run_batch, [cfg, cfg], [tmp_path / "same", tmp_path / "same"])
    assert not (tmp_path / "same").exists()


def test_the_command_line_refuses_a_weight_decay_that_underflows(capsys):
    """--wd 1e-400 reads as 0.0: refused with the flag's name (exit 2), not silently no weight decay."""
    from ufm.cli.simulate import main

    with pytest.raises(SystemExit) as e:
        main(["--K", "3", "--wd", "1e-400", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--wd" in err and "underflows to 0" in err


def test_resume_with_nothing_to_resume_is_refused_in_python_terms(tmp_path):
    e = raises(RunDirInUse, "resume_or_start=True", ufm.train, TrainConfig(dataset="synthetic", epochs=1),
               tmp_path / "empty", progress=False, resume=True)
    assert "holds no checkpoint.pt" in str(e) and not (tmp_path / "empty" / "config.json").exists()
