"""`python -m ufm.train`: train a real backbone with the UFM's losses and weight decay and measure NC
(a thin layer over TrainConfig/train). Under `torchrun --nproc_per_node G -m ufm.train …` it trains with DDP."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from ufm.backbone.config import (
    AMP_MODES,
    ARCHS,
    DATASETS,
    DEFAULT_LR,
    DEFAULT_SYNTHETIC_TREE,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
)
from ufm.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    TENSORBOARD_HELP,
    DefaultsHelpFormatter,
    OneLineParser,
    add_version_flag,
    check_out_dir,
    check_tensorboard_dir,
    interrupt_on_sigterm,
    number,
    report_to_stderr,
)
from ufm.cli.loss_flags import add_loss_flags, loss_config
from ufm.config import DEVICES, ConfigError
from ufm.errors import cli_text

PROG = "python -m ufm.train"


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected P, HxW or CxHxW (e.g. 32 or 3x32x32), got {text!r}") from None
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected P, HxW or CxHxW with positive sizes, got {text!r}")
    return shape


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Train a backbone (MLP, ResNet18, WRN) with a loss of the UFM registry plus weight decay, "
                    "measure neural collapse of its penultimate features on a log-spaced set of epochs (training "
                    "and test sets), checkpoint every epoch, and optionally run the matching UFM for comparison. "
                    "Objective: (1/N) Σ_i loss(W h_θ(x_i) + b, y_i) + wd/2 ||θ, W, b||².",
        formatter_class=DefaultsHelpFormatter,
    )
    g = p.add_argument_group("network")
    g.add_argument("--arch", choices=ARCHS, default="mlp",
                   help="mlp; resnet18 or wrn28 (CIFAR-style 3×3 stems, for images; vectors become 1×1×P images)")
    g.add_argument("--mlp-width", type=number(int, 1), default=512, help="MLP hidden width (= feature dimension)")
    g.add_argument("--mlp-depth", type=number(int, 1), default=3, help="MLP hidden layers")
    g.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=False,
                   help="MLP: BatchNorm after each hidden linear layer")
    g.add_argument("--resnet-width", type=number(int, 1), default=64,
                   help="ResNet18: channels of the first stage (features: 8×)")
    g.add_argument("--wrn-depth", type=number(int, 10), default=28, help="WRN depth, 6n + 4")
    g.add_argument("--wrn-widen", type=number(int, 1), default=10, help="WRN widening factor k (features: 64k)")
    g.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True,
                   help="the classifier's bias b (haframe and hug need --no-bias)")
    g = p.add_argument_group("data (offline: digits, mnist1d, synthetic, synthetic-hier)")
    g.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="digits: scikit-learn's 8×8 digits (80/20 split); mnist1d: generated locally; synthetic: "
                        "Gaussian mixture; synthetic-hier: class means along a tree; mnist, fashionmnist, cifar10, "
                        "cifar100: torchvision, from --data-root")
    g.add_argument("--data-root", default=None, help="where torchvision datasets lie (default ./data)")
    g.add_argument("--download", action="store_true", help="download torchvision datasets into --data-root")
    g.add_argument("--data-seed", type=number(int, 0), default=0,
                   help="seed of the digits split, the synthetic draws and mnist1d's generator (0: its default, 42)")
    g.add_argument("--train-per-class", type=number(int, 1), default=None,
                   help="keep only the first n training samples of each class")
    g.add_argument("--classes", type=number(int, 2), default=10,
                   help="synthetic: number of classes (synthetic-hier takes K from its tree)")
    g.add_argument("--per-class", type=number(int, 1), default=100, help="synthetic: training samples per class")
    g.add_argument("--test-per-class", type=number(int, 1), default=100, help="synthetic: test samples per class")
    g.add_argument("--input-shape", type=_shape, default=(32,),
                   help="synthetic: P (vectors), HxW (one channel) or CxHxW (images)")
    g.add_argument("--separation", type=number(float, 0), default=3.0,
                   help="synthetic: norm of the class means (synthetic-hier: of the top level's offsets)")
    g.add_argument("--noise", type=number(float, 0), default=1.0, help="synthetic: norm of the within-class noise")
    g.add_argument("--level-decay", type=number(float, 0), default=0.5,
                   help="synthetic-hier: ratio of each tree level's offsets to its parent level's")
    add_loss_flags(p, default_loss="ce", hierarchy_note=f"; cifar100 brings the CIFAR-100 tree and "
                   f"synthetic-hier {DEFAULT_SYNTHETIC_TREE} unless given")
    g = p.add_argument_group("optimization")
    g.add_argument("--wd", type=number(float, 0), default=5e-4,
                   help="weight decay λ on every trained parameter (λ/2||·||², PyTorch's weight_decay = λ)")
    g.add_argument("--epochs", type=number(int, 0), default=100, help="passes over the training set")
    g.add_argument("--batch-size", type=number(int, 1), default=128, help="global mini-batch (split over DDP ranks)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="sgd (heavy-ball momentum) or adam")
    g.add_argument("--lr", type=number(float, 0, lo_open=True), default=None,
                   help=f"initial learning rate (default by optimizer: {DEFAULT_LR})")
    g.add_argument("--momentum", type=number(float, 0, 1), default=0.9, help="SGD momentum")
    g.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                   help="cosine (to 0), step (÷10 at 1/3 and 2/3 of the epochs), constant")
    g.add_argument("--seed", type=number(int, 0), default=0, help="seed of the initialization and the shuffling")
    g = p.add_argument_group("runtime and output")
    g.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda, then mps, then cpu")
    g.add_argument("--amp", choices=AMP_MODES, default="auto",
                   help="mixed precision (bfloat16 autocast; float16 with loss scaling where bf16 is missing) on "
                        "CUDA; auto = on for CUDA, off elsewhere. NC is always measured in float32")
    g.add_argument("--evals-per-decade", type=number(int, 1), default=10,
                   help="NC measurements per factor of 10 in epochs (log-spaced, always epoch 0 and the last)")
    g.add_argument("--compare-ufm", action="store_true",
                   help="also run the UFM with the same K, class counts, feature dimension, loss and λ (in "
                        "OUT/ufm) and write the comparison into summary.json and comparison.png")
    g.add_argument("--track-layers", default=None, metavar="NAMES|all",
                   help="NC at every layer: 'all' (MLP: every ReLU's output; ResNet18/WRN: the stem and every residual "
                        "block) or module names inside the backbone (e.g. layers.2,layers.4), comma-separated. Each "
                        "measurement adds LAYER:nc1, :nc1_trace, :separation (D_l = tr(Σ_W Σ_B⁺)), :nc2, "
                        ":ncc_accuracy, :rank_means, :orthogonality and :sv1… to history.csv (two extra forward "
                        "passes over the training set); summary.json gets the law of data separation fitted over the "
                        "layers and, for the MLP, the comparison with deep neural collapse")
    g.add_argument("--ufm-steps", type=number(int, 0), default=None, help="steps of that UFM (default: its own)")
    g.add_argument("--out", default=None, help="run directory (default: a fresh folder under runs/)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt (same flags); refused where --out holds "
                        "no checkpoint. Without --resume or --overwrite, an --out that already holds a run is refused")
    g.add_argument("--resume-or-start", action="store_true",
                   help="like --resume, but start a fresh run where --out holds nothing to resume (a job script that "
                        "is requeued: the first attempt starts, the later ones continue)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (its run files, comparison.png and the twin's files in ufm/; "
                        "other files stay)")
    g.add_argument("--tensorboard", default=None, metavar="DIR",
                   help=TENSORBOARD_HELP.replace("at its step", "at its epoch").replace("gap/*", "test/*"))
    g.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    add_version_flag(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = set(TrainConfig.__dataclass_fields__) - {"loss"}
    return TrainConfig(loss=loss_config(args), **{k: v for k, v in vars(args).items() if k in names})


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done, 1 an OS error while writing (one line naming the file), 2 bad input (flags, an --out
    holding a run, a checkpoint that cannot be resumed), 3 diverged, 130 interrupted (Ctrl-C or SIGTERM, at any
    point: summary.json says "interrupted" and the epoch the checkpoint holds). SIGTERM raises KeyboardInterrupt
    while main runs (interrupt_on_sigterm); the handler in place before is restored when it returns, so a caller
    in the same process (a test, a notebook) keeps its own."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers exist in the main thread only
        with report_to_stderr(PROG):
            return _main(argv)
    previous = signal.getsignal(signal.SIGTERM)
    interrupt_on_sigterm()
    try:
        with report_to_stderr(PROG):
            return _main(argv)
    except KeyboardInterrupt:  # while parsing or importing, before anything was written
        print(f"{PROG}: interrupted before training started (nothing written)", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume and args.resume_or_start:
        parser.error("give --resume or --resume-or-start, not both")
    resume_flag = "--resume-or-start" if args.resume_or_start else "--resume"
    if (args.resume or args.resume_or_start) and args.out is None:
        parser.error(f"{resume_flag} needs --out, the run directory to continue")
    if (args.resume or args.resume_or_start) and args.overwrite:
        parser.error(f"{resume_flag} and --overwrite exclude each other: {resume_flag} continues the run in --out, "
                     "--overwrite replaces it")
    if args.amp == "on" and args.device not in ("auto", "cuda"):
        parser.error(f"--amp on needs CUDA (got --device {args.device})")
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        parser.error(cli_text(e))
    check_out_dir(parser, args.out)
    check_tensorboard_dir(parser, args.tensorboard)
    # imported late: --help and bad input stay fast
    from ufm.backbone.checkpoint import CheckpointError
    from ufm.backbone.data import DataError
    from ufm.backbone.report import format_backbone_table
    from ufm.backbone.training import train
    from ufm.devices import DeviceUnavailable
    from ufm.output.rundir import RunDirInUse, os_error_line

    summary = None
    try:
        summary = train(cfg, args.out, progress=not args.quiet, resume=args.resume or args.resume_or_start,
                        overwrite=args.overwrite, start_if_none=args.resume_or_start, tensorboard=args.tensorboard)
        if cfg.compare_ufm and summary["status"] == "ok" and summary["rank"] == 0:
            from ufm.backbone.compare import compare_with_ufm

            summary = compare_with_ufm(summary, progress=not args.quiet)
    except RunDirInUse as e:  # every process refuses (training._claim); under torchrun the main one says why
        if not _main_process():
            return EXIT_BAD_INPUT
        parser.error(cli_text(e))
    except (ConfigError, DataError, CheckpointError, DeviceUnavailable) as e:
        print(f"{PROG}: error: {cli_text(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"{PROG}: error: {os_error_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before training started, or (rarely) between training and its comparison
        when = "before training started (nothing trained)" if summary is None else \
            f"after training; summary.json in {summary['run_dir']} holds the training's results"
        print(f"{PROG}: interrupted {when}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if summary["rank"] != 0:
        return 0  # the main process reports for all
    try:
        return _report(summary, args.quiet, format_backbone_table)
    except KeyboardInterrupt:  # while printing: the run directory is complete
        return EXIT_INTERRUPTED


def _main_process() -> bool:
    """Rank 0 under torchrun (RANK), or a single process."""
    return os.environ.get("RANK", "0") == "0"


def _report(summary: dict, quiet: bool, format_table) -> int:
    """The table (unless --quiet), the run directory, and the line and exit status of how the run ended."""
    if not quiet:
        print(format_table(summary))
    print(f"run directory: {summary['run_dir']}", file=sys.stderr)
    if summary["status"] == "diverged":
        div = summary["divergence"]
        last = f"last finite loss {div['last_finite_loss']:.6g}" if div["last_finite_loss"] is not None else \
            "no finite loss before it"
        print(f"{PROG}: diverged in epoch {div['epoch']} (batch {div['batch']}): loss is {div['loss']} ({last}); "
              f"try a smaller --lr. The checkpoint of the last good epoch and the history are kept in "
              f"{summary['run_dir']}", file=sys.stderr)
        return EXIT_DIVERGED
    if summary["status"] == "interrupted":
        where = summary.get("interrupted_during")
        held = summary.get("checkpoint_epoch")
        kept = f"checkpoint of epoch {held}" if held is not None else "no checkpoint yet"
        print(f"{PROG}: interrupted{f' during {where}' if where else ''} after {summary['epochs']} epoch(s) "
              f"({kept}; summary.json written); resume with the same flags plus --resume --out "
              f"{summary['run_dir']}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
