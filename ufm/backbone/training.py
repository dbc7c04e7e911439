"""The backbone training loop: mini-batch SGD/Adam with weight decay, NC measured on a log-spaced set of
epochs, a checkpoint every epoch (resumable, bit for bit on CPU), DDP under torchrun, bfloat16
autocast on CUDA, and a stop with a clear report at the first non-finite loss."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ufm.backbone import distributed, layers
from ufm.backbone.checkpoint import (
    CHECKPOINT,
    CheckpointError,
    check_config,
    check_epoch,
    load_checkpoint,
    load_model_state,
    load_optimizer_state,
    save_checkpoint,
)
from ufm.backbone.config import TrainConfig
from ufm.backbone.data import Dataset, load_dataset
from ufm.backbone.interrupts import interrupts_deferred
from ufm.backbone.layers import track_layer_names
from ufm.backbone.measure import TEST_KEYS, measure_split
from ufm.backbone.networks import Network, build_network
from ufm.backbone.twin import twin_config
from ufm.checks.milestones import milestones
from ufm.config import ConfigError, SimConfig
from ufm.fit.schedule import log_schedule
from ufm.output.rundir import (
    RunDirInUse,
    claim_run_dir,
    environment,
    new_run_dir,
    os_error_line,
    run_files,
    write_csv,
    write_json,
)
from ufm.output.tensorboard import ScalarLog
from ufm.problem import Problem, resolve

MEASURE_BATCH = 1024


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of epoch `epoch` (0-based): cosine from lr to 0, step (÷10 at 1/3 and 2/3 of
    the epochs, as Papyan et al. 2020), or constant. A function of the epoch alone, so a resumed run
    needs no scheduler state."""
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / max(cfg.epochs, 1)))
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** sum(epoch >= math.ceil(cfg.epochs * f) for f in (1 / 3, 2 / 3))
    return cfg.lr


def epoch_permutation(cfg: TrainConfig, epoch: int, n: int) -> torch.Tensor:
    """The sample order of an epoch, seeded by (seed, epoch): a resumed run shuffles as an uninterrupted one."""
    seed = int(np.random.SeedSequence([cfg.seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


@dataclass
class Run:
    """What the loop works with: the network (and its DDP wrapper), optimizer, data, loss."""

    cfg: TrainConfig
    sim: SimConfig
    ctx: distributed.Context
    data: Dataset
    net: Network
    model: torch.nn.Module  # net, or DDP(net)
    opt: torch.optim.Optimizer
    amp: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    problem: Problem  # the UFM twin's problem: the loss, its options, the tree and frame (built once)
    layer_names: list[str] = field(default_factory=list)  # --track-layers: modules of net.body, in forward order

    def loss(self, h: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.problem.loss(z, y, self.problem.options, features=h, classifier=self.net.W)


def train_epoch(run: Run, epoch: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One pass over the training set in shuffled global batches of --batch-size (each process takes
    every world-th sample of a batch; an incomplete last batch is dropped unless it is the only one).
    Returns the per-batch losses (on the device: no synchronization per step)."""
    cfg, ctx = run.cfg, run.ctx
    for group in run.opt.param_groups:
        group["lr"] = lr_at(cfg, epoch)
    order = epoch_permutation(cfg, epoch, len(x))
    n_batches = max(1, len(x) // cfg.batch_size)
    run.model.train()
    losses = []
    for i in range(n_batches):
        rows = order[i * cfg.batch_size:(i + 1) * cfg.batch_size][ctx.rank::ctx.world].to(x.device)
        autocast = torch.autocast("cuda", dtype=run.amp) if run.amp is not None else nullcontext()
        with autocast:
            h, z = run.model(x[rows])
        loss = run.loss(h.float(), z.float(), y[rows])  # the loss itself in float32
        run.opt.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
            run.scaler.step(run.opt)
            run.scaler.update()
        else:
            loss.backward()
            run.opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def evaluate(run: Run, epoch: int) -> dict[str, float]:
    """One history row: NC of the training set (and, prefixed test_, of the test set), norms, objective."""
    cfg, ctx, data = run.cfg, run.ctx, run.data
    lca = S = None
    if run.problem.tree is not None:
        lca = torch.tensor(run.problem.tree.lca_heights)  # copies: the cached arrays are read-only
        S = torch.tensor(run.problem.frame_gram)
    common = dict(batch_size=MEASURE_BATCH, device=ctx.device, reduce=ctx.reduce(),
                  normalized=cfg.loss.name == "hug", lca=lca, frame_gram=S)
    opts, loss_fn = run.problem.options, run.problem.loss
    distributed.sync_buffers(ctx, run.net)
    part = ctx.shard
    train = measure_split(run.net, data.x_train[part], data.y_train[part], data.K, loss_fn, opts, **common)
    test = measure_split(run.net, data.x_test[part], data.y_test[part], data.K, loss_fn, opts, **common)
    penalty = sum(0.5 * g["weight_decay"] * float(p.detach().double().square().sum())
                  for g in run.opt.param_groups for p in g["params"])
    param_sq = sum(float(p.detach().double().square().sum()) for p in run.net.parameters() if p.requires_grad)
    row = {"epoch": epoch, "lr": lr_at(cfg, max(epoch - 1, 0)),  # the rate of the epoch just trained
           "loss": train["loss"] + penalty, "data_loss": train.pop("loss"),
           "W_norm_sq": float(run.net.W.detach().double().square().sum()), "param_norm_sq": param_sq}
    if run.net.b is not None:
        row["b_norm_sq"] = float(run.net.b.detach().double().square().sum())
    row.update(train)
    row.update({f"test_{k}": test[k] for k in TEST_KEYS if k in test})
    if run.layer_names:
        row.update(layers.measure(run.net.body, data.x_train[part], data.y_train[part], data.K, run.layer_names,
                                  batch_size=MEASURE_BATCH, device=ctx.device, reduce=ctx.reduce()))
    return row


def _load_data(cfg: TrainConfig, ctx: distributed.Context) -> Dataset:
    """The dataset; with --download under torchrun, rank 0 fetches it before the others read it."""
    if cfg.download and ctx.world > 1 and not ctx.main:
        distributed.barrier(ctx)
    data = load_dataset(cfg)
    if cfg.download and ctx.world > 1 and ctx.main:
        distributed.barrier(ctx)
    return data


def _check_batches(cfg: TrainConfig, ctx: distributed.Context, data: Dataset, net: Network) -> None:
    """Batches every process can train on: equal shares of each global batch (so the average of the
    processes' means is the batch mean), at least 2 samples per process where BatchNorm normalizes over
    the batch, and at least one sample of each split per process."""
    per_process = min(cfg.batch_size, len(data.y_train)) / ctx.world
    if cfg.batch_size % ctx.world:
        raise ConfigError(f"--batch-size {cfg.batch_size} must be a multiple of the {ctx.world} processes")
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()) and per_process < 2:
        raise ConfigError(f"--batch-size {cfg.batch_size}: BatchNorm needs at least 2 samples per batch and "
                          f"process (this network has BatchNorm layers; {ctx.world} process(es))")
    if min(len(data.y_train), len(data.y_test)) < ctx.world:
        raise ConfigError(f"--dataset {cfg.dataset}: a split has fewer samples than the {ctx.world} processes")


# parameter-sized float32 buffers while training: weights, gradients, the optimizer's state (momentum; Adam's two
# moments) and the float64 copy the penalty and the checkpoint take
NETWORK_COPIES = {"sgd": 3 + 2, "adam": 4 + 2}


def check_network_memory(cfg: TrainConfig, shape: tuple[int, int, int], K: int, fixed, device: torch.device) -> None:
    """ConfigError (one line) when the network's parameters and their training state cannot fit in the memory
    available on `device` (--mlp-width 1000000000 used to end in an out-of-memory traceback). The network is built
    on the meta device: shapes only, nothing allocated."""
    from ufm.fit.memory import HEADROOM, available_bytes

    with torch.device("meta"):
        count = sum(p.numel() for p in build_network(cfg, shape, K, fixed).parameters())
    need, have = 4 * count * NETWORK_COPIES.get(cfg.optimizer, 5), available_bytes(str(device))
    if have is not None and need > HEADROOM * have:
        raise ConfigError(f"--arch {cfg.arch}: {count:.3g} parameters need about {need / 2**30:.3g} GiB to train, "
                          f"more than the {have / 2**30:.3g} GiB available on {device}: reduce the width or depth")


def setup_run(cfg: TrainConfig, ctx: distributed.Context) -> Run:
    if cfg.amp == "on" and ctx.device.type != "cuda":
        raise ConfigError(f"--amp on needs CUDA; this run is on {ctx.device.type}")
    data = _load_data(cfg, ctx)
    sim = twin_config(cfg, data.counts)
    problem = resolve(sim)
    fixed = torch.as_tensor(problem.frame.W) if cfg.loss.name == "haframe" else None
    check_network_memory(cfg, data.shape, data.K, fixed, ctx.device)
    torch.manual_seed(cfg.seed)  # the same initial network in every process (DDP also broadcasts it)
    net = build_network(cfg, data.shape, data.K, fixed).to(ctx.device)
    _check_batches(cfg, ctx, data, net)
    # weight_decay = λ adds λθ to the gradient: the gradient of λ/2‖θ‖² (the UFM's convention). HUG's
    # loss does not see the proxies' scale, so decay would only shrink them: W gets none (as in the UFM)
    decay_W = cfg.wd if cfg.loss.name != "hug" else 0.0
    groups = [{"params": [p for p in net.parameters() if p.requires_grad and p is not net.W], "weight_decay": cfg.wd}]
    if net.W.requires_grad:
        groups.append({"params": [net.W], "weight_decay": decay_W})
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    else:
        opt = torch.optim.Adam(groups, lr=cfg.lr)
    amp = None
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    if ctx.device.type == "cuda" and cfg.amp != "off":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None  # bfloat16 needs no loss scaling
    model: torch.nn.Module = net
    if ctx.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    names = track_layer_names(cfg.track_layers, cfg.arch, net.body) if cfg.track_layers else []
    return Run(cfg, sim, ctx, data, net, model, opt, amp, scaler, problem, names)


def _divergence(run: Run, losses: torch.Tensor, epoch: int, history: list[dict]) -> dict | None:
    """None if the epoch's batch losses and the updated parameters are all finite (in every process: the
    processes must stop together); else where it diverged and the last finite loss."""
    params_ok = all(bool(torch.isfinite(p).all()) for p in run.net.parameters())
    flag = torch.tensor([float(bool(torch.isfinite(losses).all()) and params_ok)], device=run.ctx.device)
    reduce = run.ctx.reduce()
    if float((reduce(flag) if reduce else flag)[0]) == run.ctx.world:
        return None
    values = losses.double().cpu().tolist()
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    earlier = [v for v in values[:bad] if math.isfinite(v)]
    measured = [r["data_loss"] for r in history if math.isfinite(r["data_loss"])]
    last = earlier[-1] if earlier else (measured[-1] if measured else None)
    return {"epoch": epoch + 1, "batch": bad if bad is not None else "after the last update",
            "loss": values[bad] if bad is not None else "finite, but the update left non-finite parameters",
            "last_finite_loss": last}


def _resume(run: Run, ckpt: Path) -> tuple[int, list[dict], float]:
    """Load model, optimizer and loss-scaler state from the checkpoint (CheckpointError on a damaged file, an
    epoch outside 0..--epochs, another configuration or tensors of other shapes); return (epochs done, history,
    training seconds so far)."""
    state = load_checkpoint(ckpt)
    check_config(state["config"], run.cfg.to_dict(), ckpt)  # another --epochs is named as such, before the range
    check_epoch(state["epoch"], run.cfg.epochs, ckpt)
    load_model_state(run.net, state["model"], ckpt)
    load_optimizer_state(run.opt, state["optimizer"], ckpt)
    if run.scaler is not None and state.get("scaler"):
        try:
            run.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(f"--resume: the checkpoint {ckpt} has a damaged loss-scaler state "
                                  f"({' '.join(str(e).split())[:200]})") from None
    return state["epoch"], list(state["history"]), float(state["train_seconds"])


def train(cfg: TrainConfig, out: Path | str | None = None, *, progress: bool = True, resume: bool = False,
          overwrite: bool = False, start_if_none: bool = False, tensorboard: Path | str | None = None) -> dict:
    """Train the backbone of `cfg`; write config.json, history.csv, checkpoint.pt (every epoch) and
    summary.json under `out` (a fresh directory under runs/ when None); return the summary. With
    `resume`, continue from out/checkpoint.pt (CheckpointError if it does not match; RunDirInUse when there is
    none, unless `start_if_none`); a directory holding a run is refused (RunDirInUse) unless `resume` or
    `overwrite`. `tensorboard`: a directory for the TensorBoard scalars (train_backbone)."""
    return train_backbone(cfg, out, progress=progress, resume=resume, overwrite=overwrite, fresh_dir=True,
                          start_if_none=start_if_none, tensorboard=tensorboard)[0]


def _is_backbone_run(out: Path) -> bool:
    """Whether out/config.json is that of a ufm.train run (a --resume without a checkpoint may start it afresh)."""
    try:
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "arch" in config and not (out / "params.pt").exists()


def _claim_verdict(out: Path, resume: bool, overwrite: bool, start_if_none: bool = False) -> str | None:
    """None when the run may use `out` as asked, else the one-line refusal. Without --resume or --overwrite a
    directory holding a run (finished or started) is refused. --resume with no checkpoint to continue is refused
    (a typo in --out must not silently start a fresh run); --resume-or-start then starts afresh, where the folder
    is empty or holds a ufm.train run that never checkpointed (killed or interrupted in its first epoch)."""
    if overwrite:
        return None
    if not resume:
        try:
            claim_run_dir(out, overwrite=False, resume_flag="--resume")
        except RunDirInUse as e:
            return e.cli
        return None
    present = run_files(out)
    if (out / CHECKPOINT).exists():
        return None
    if not start_if_none:
        return (f"--resume: --out {out} holds no {CHECKPOINT} to continue: check --out, or pass --resume-or-start "
                "to start a fresh run where there is nothing to resume")
    if not present or _is_backbone_run(out):
        return None
    return (f"--resume: --out {out} holds no {CHECKPOINT} to continue, and its run ({', '.join(present)}) is not a "
            f"ufm.train run: choose another --out, or pass --overwrite instead of --resume to replace it")


def _claim(out: Path, ctx: distributed.Context, resume: bool, overwrite: bool, start_if_none: bool) -> None:
    """Refuse `out` (RunDirInUse) in every process alike: the main process judges, the others take its verdict,
    so no process starts while another refuses."""
    verdict = [_claim_verdict(out, resume, overwrite, start_if_none) if ctx.main else None]
    if ctx.world > 1:
        torch.distributed.broadcast_object_list(verdict, src=0)
    if verdict[0] is not None:
        distributed.teardown(ctx)
        raise RunDirInUse(verdict[0])


def _clear_old_run(out: Path, ctx: distributed.Context) -> None:
    """--overwrite: the main process removes the old run's files (only those: the run files, the comparison plot
    and the UFM twin's run files; other files in the folder are the user's) before the new run writes any."""
    if ctx.main:
        claim_run_dir(out, overwrite=True)
        (out / "comparison.png").unlink(missing_ok=True)
        if (out / "ufm").is_dir():
            claim_run_dir(out / "ufm", overwrite=True)
    distributed.barrier(ctx)


def _early_interrupt(cfg: TrainConfig, out: Path | None, ctx: distributed.Context) -> None:
    """An interrupt while the data loads or the network is built: a summary saying so, where the directory holds
    no summary yet (an earlier run's, kept on --resume or until --overwrite clears it, stays as it was)."""
    if ctx.main and out is not None and not (out / "summary.json").exists():
        with interrupts_deferred():
            write_json(out / "summary.json", {
                "status": "interrupted", "mode": "backbone", "config": cfg.to_dict(), "final": {}, "test": {},
                "steps": 0, "epochs": 0, "checkpoint_epoch": None, "converged": None, "run_dir": str(out),
                "note": "interrupted before training started (loading the data, building the network)"})
    distributed.teardown(ctx)


@dataclass
class OnDisk:
    """The epoch that checkpoint.pt holds (None: there is none), updated by save_checkpoint's `then` under its
    interrupt shield, so it is right whenever an interrupt lands."""

    epoch: int | None

    def saved(self, epoch: int) -> Callable[[], None]:
        def record() -> None:
            self.epoch = epoch
        return record


def _checkpoint_state(run: Run, epoch: int, history: list[dict], train_seconds: float) -> dict:
    return {"config": run.cfg.to_dict(), "epoch": epoch, "model": run.net.state_dict(),
            "optimizer": run.opt.state_dict(), "history": history,
            "scaler": run.scaler.state_dict() if run.scaler else {}, "train_seconds": train_seconds}


def train_backbone(cfg: TrainConfig, out: Path | str | None = None, *, progress: bool = True, resume: bool = False,
                   overwrite: bool = False, fresh_dir: bool = False, start_if_none: bool = False,
                   on_row: Callable[[list[dict]], None] | None = None,
                   tensorboard: Path | str | None = None) -> tuple[dict, list[dict], Network]:
    """`train`, returning (summary, history, network); with out None, files only when `fresh_dir` (a new
    directory under runs/), else nothing is written (no checkpoint either).

    `out` holding a run (any of config.json, summary.json, history.csv, checkpoint.pt, params.pt) is refused with
    RunDirInUse unless `resume` (continue it from its checkpoint; refused where there is none, unless
    `start_if_none`) or `overwrite` (remove its files, after the data and network are set up, then start afresh);
    both at once is a ValueError.

    Endings: the loop saves a checkpoint after every epoch but the last; the run then writes summary.json first
    (small, signals held back while it is written), then history.csv, then the last checkpoint, so a full disk or
    a late interrupt loses the large file, not the record. An interrupt (KeyboardInterrupt: Ctrl-C, or SIGTERM
    under the command line) anywhere ends with status "interrupted" and `checkpoint_epoch`, the epoch the
    checkpoint on disk holds (an interrupted save leaves the previous one whole). An OSError while writing
    (ENOSPC, EACCES) writes a summary with status "error" where it can, then is raised again, naming the file.

    `on_row(history)` after each new history row (the main process only); `tensorboard`: a directory where the main
    process writes each row's numeric columns as TensorBoard scalars at its epoch (a resumed run: the epochs it runs
    now), then the summary's final/* and test/*, and closes the file however the run ends
    (ufm.output.tensorboard)."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run in `out`, overwrite "
                         "replaces it")
    ctx = distributed.setup(cfg.device)
    out = _run_dir(cfg, out, ctx) if out is not None or fresh_dir else None
    if out is not None:
        _claim(out, ctx, resume, overwrite, start_if_none)
    ckpt = out / CHECKPOINT if out is not None else None
    resumable = resume and ckpt is not None and ckpt.exists()
    write = ctx.main and out is not None
    log = ScalarLog(tensorboard, "epoch") if tensorboard is not None and ctx.main else None

    def added() -> None:  # a new history row
        if on_row is not None and ctx.main:
            on_row(history)
        if log is not None:
            log.row(history[-1])

    try:
        run = setup_run(cfg, ctx)
        start_epoch, history, train_seconds = _resume(run, ckpt) if resumable else (0, [], 0.0)
        if overwrite and out is not None:
            _clear_old_run(out, ctx)
        if write:
            write_json(out / "config.json", {**cfg.to_dict(), "K": run.data.K, "counts": list(run.data.counts),
                                             "feature_dim": run.net.feature_dim, "world_size": ctx.world,
                                             "device_used": str(ctx.device), "environment": environment()})
    except KeyboardInterrupt:
        _early_interrupt(cfg, out, ctx)
        raise
    status, divergence, done, error = "ok", None, start_epoch, None
    disk = OnDisk(start_epoch if resumable else None)
    bar = tqdm(total=cfg.epochs, initial=start_epoch, disable=not (progress and ctx.main), file=sys.stderr,
               desc=f"train {cfg.arch}", unit="epoch", dynamic_ncols=True, mininterval=0.5)
    try:
        # every process holds the training set and takes its share of each global batch
        x_all, y_all = run.data.x_train.to(ctx.device), run.data.y_train.to(ctx.device)
        measure_at = set(log_schedule(cfg.epochs, cfg.evals_per_decade))
        if start_epoch == 0 and not history:
            history.append(_timed_row(run, 0, train_seconds))
            added()
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            divergence = _divergence(run, train_epoch(run, epoch, x_all, y_all), epoch, history)
            if divergence is not None:  # nothing of this epoch is measured or saved
                status = "diverged"
                break
            train_seconds += time.perf_counter() - t0
            measured = epoch + 1 in measure_at
            if measured:
                history.append(_timed_row(run, epoch + 1, train_seconds))
                added()
                bar.set_postfix(loss=f"{history[-1]['data_loss']:.4g}", nc1=f"{history[-1]['nc1']:.2e}", refresh=False)
            done = epoch + 1  # the network now holds whole epochs: a checkpoint of it is a resumable state
            if write and done < cfg.epochs:  # the last epoch's checkpoint comes after the summary
                save_checkpoint(ckpt, _checkpoint_state(run, done, history, train_seconds), then=disk.saved(done))
                if measured:  # history.csv changes only with a new row
                    write_csv(out / "history.csv", history)
            bar.update()
    except KeyboardInterrupt:
        status = "interrupted"
    except OSError as e:  # a full disk or a lost permission while saving: keep the record where possible
        status, error = "error", e
    except BaseException:
        if log is not None:
            log.close()
        raise
    finally:
        bar.close()
    summary = build_summary(run, history, status, divergence, done, train_seconds, out)
    if write:
        error = _write_ending(run, summary, history, out, ckpt, disk, done, error)
    if log is not None:
        log.finish(summary)
    if error is not None:
        distributed.teardown(ctx)
        raise error
    distributed.barrier(ctx)
    distributed.teardown(ctx)
    summary["rank"] = ctx.rank
    return summary, history, run.net


def _write_ending(run: Run, summary: dict, history: list[dict], out: Path, ckpt: Path, disk: OnDisk, done: int,
                  error: OSError | None) -> OSError | None:
    """summary.json, history.csv, then (a run that ended "ok" with its last epoch not saved yet) the checkpoint.
    An interrupt or an OSError on the way rewrites the summary to say so (status "interrupted" or "error", and
    the epoch the checkpoint on disk holds). Updates `summary` in place; returns the OSError to raise, if any."""
    final_save = summary["status"] == "ok" and disk.epoch != done  # interrupted mid-epoch or diverged: keep the last
    summary["checkpoint_epoch"] = done if final_save else disk.epoch
    if error is not None:
        summary["error"] = os_error_line(error)
    try:
        with interrupts_deferred():
            write_json(out / "summary.json", summary)
            write_csv(out / "history.csv", history)
        if final_save:
            save_checkpoint(ckpt, _checkpoint_state(run, done, history, summary["timing"]["train_seconds"]),
                            then=disk.saved(done))
        return error
    except KeyboardInterrupt:
        summary.update(status="interrupted", checkpoint_epoch=disk.epoch)
    except OSError as e:
        error = error or e
        summary.update(status="error", error=os_error_line(error), checkpoint_epoch=disk.epoch)
    try:
        with interrupts_deferred():
            write_json(out / "summary.json", summary)
    except OSError:
        pass  # the disk refuses even the small record: the error raised names the first file that failed
    except KeyboardInterrupt:
        summary["status"] = "interrupted"
    return error


def _timed_row(run: Run, epoch: int, train_seconds: float) -> dict:
    t0 = time.perf_counter()
    row = evaluate(run, epoch)
    row["train_seconds"], row["measure_seconds"] = train_seconds, time.perf_counter() - t0
    return row


def _run_dir(cfg: TrainConfig, out: Path | str | None, ctx: distributed.Context) -> Path:
    """`out`, or a fresh directory under runs/ (created by the main process and shared with the others)."""
    if out is None:
        name = [str(new_run_dir("runs", f"{cfg.arch}-{cfg.dataset}-{cfg.loss.name}"))] if ctx.main else [None]
        if ctx.world > 1:
            torch.distributed.broadcast_object_list(name, src=0)
        out = name[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def build_summary(run: Run, history: list[dict], status: str, divergence: dict | None, epochs_done: int,
                  train_seconds: float, out: Path | None) -> dict:
    """summary.json: the final training-set measurements (`final`), the test set's (`test`), timing and
    milestones; `theory`/`gap` are filled by the UFM comparison (--compare-ufm)."""
    last = dict(history[-1]) if history else {}
    final = {k: v for k, v in last.items() if not k.startswith("test_")}
    test = {k[len("test_"):]: v for k, v in last.items() if k.startswith("test_")}
    measure_times = [r["measure_seconds"] for r in history]
    return {
        "status": status, "mode": "backbone",
        "config": {**run.cfg.to_dict(), "K": run.data.K, "counts": list(run.data.counts),
                   "d": run.net.feature_dim, "loss": run.cfg.loss.name,
                   "wd_W": run.opt.param_groups[-1]["weight_decay"] if run.net.W.requires_grad else 0.0, "wd_H": None,
                   "wd_b": run.cfg.wd if run.cfg.bias else None,
                   "wd_note": "λ = --wd on every trained parameter (network, W, b; HUG: not on W, whose scale its "
                              "loss does not see); the features are not free (no λ_H)"},
        "final": final, "test": test, "final_epoch": last.get("epoch"),
        "theory": {"name": "none", "applies": False, "note": "run with --compare-ufm for the UFM twin and its "
                                                             "theory target"},
        "gap": {}, "steps": epochs_done, "epochs": epochs_done, "seconds": train_seconds + sum(measure_times),
        "converged": None, "converged_criterion": "a backbone has no optimality certificate",
        "checkpoint_epoch": None,  # set where the run writes its directory: the epoch checkpoint.pt holds
        "divergence": divergence, "device": str(run.ctx.device), "world_size": run.ctx.world,
        "amp": str(run.amp).replace("torch.", "") if run.amp else "off",
        "timing": {"train_seconds": train_seconds, "epochs_per_second": epochs_done / train_seconds
                   if train_seconds > 0 else None, "measurements": len(measure_times),
                   "mean_measure_seconds": sum(measure_times) / len(measure_times) if measure_times else None},
        "milestones": milestones(history, unit="epoch"),
        "run_dir": None if out is None else str(out),
        **({"layers": layers.summary_block(history, run.layer_names, run.data.K, run.cfg.arch, run.net.feature_dim)}
           if run.layer_names and history else {}),
    }
