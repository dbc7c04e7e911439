"""`python -m ufm.simulate`: one UFM run from the command line (a thin layer over SimConfig/simulate)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ufm.cli.common import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    TENSORBOARD_HELP,
    HelpFormatter,
    OneLineParser,
    add_version_flag,
    check_out_dir,
    check_tensorboard_dir,
    interrupt_on_sigterm,
    memory_size,
    number,
    report_to_stderr,
)
from ufm.cli.loss_flags import add_loss_flags, loss_config
from ufm.config import (
    DEFAULT_LR,
    DEFAULT_STEPS,
    DEVICES,
    DTYPES,
    FEATURES,
    NORMALIZE,
    OPTIMIZERS,
    ConfigError,
    SimConfig,
)
from ufm.counts import ZipfSpec, is_zipf, read_counts_file
from ufm.devices import DeviceUnavailable
from ufm.errors import cli_text

PROG = "python -m ufm.simulate"


def _counts(text: str) -> tuple[int, ...] | ZipfSpec:
    """--counts: comma-separated integers, or zipf:S:NMAX (resolved with K in `config_from_args`)."""
    if is_zipf(text):
        try:
            return ZipfSpec.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parts = [p.strip() for p in text.split(",")]
    try:
        counts = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 50,50,10, got {text!r}") from None
    if len(counts) < 2:
        raise argparse.ArgumentTypeError(f"needs at least 2 classes, got {text!r}")
    if min(counts) < 1:
        raise argparse.ArgumentTypeError(f"every class needs at least 1 sample, got {text!r}")
    return counts


def _counts_file(path: str) -> tuple[int, ...]:
    """--counts-file: one positive integer per line (ufm.counts.read_counts_file)."""
    try:
        return read_counts_file(path)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


LEGEND = """\
reading the end-of-run table:
  loss        the objective F (the loss plus every weight-decay term), not the loss alone
  NC1         within-class variability: tr(Σ_W Σ_B⁺)/K, 0 once every sample sits on its class mean
  NC2         distance of the centered class means' Gram from a simplex ETF's (0: an ETF)
  NC3         distance between the classifier W and the centered class means (0: self-dual)
  NC4         disagreement of the classifier with the nearest-class-mean rule (0: they agree)
  predicted   the theory target's value (the line "theory:" names it, e.g. ce_etf, mse_bias_free)
  gap         |measured − predicted|/|predicted| ("rel"), or |measured − predicted| where 0 is predicted ("abs")
  certificate the convex program's optimum, proven by a dual lower bound ("certified"): the global optimum
              where d >= its rank, else only a lower bound on this UFM's F* (the line says so first)
  SQI, GNC, milestones, minority …  the end-of-run checks that apply to this run (see the README)

one problem on P processes or GPUs (H split by rows, W replicated; docs/distributed.md):
  torchrun --nproc-per-node P -m ufm.simulate -- --K 5 --d 8 …
  (the "--" keeps torchrun's own parser from reading ufm's flags: without it, --d is an ambiguous prefix of
  torchrun's --duplicate-stdout-filters)
  verdict     the last line: did the run reach the predicted optimum, and why not
exit status: 0 done, 1 an OS error writing results (the file is named), 2 bad input, 3 diverged, 130
interrupted (Ctrl-C or SIGTERM: the summary is written with status "interrupted")"""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Simulate the unconstrained-features model (free features H, classifier W, optional "
                    "bias b) under a loss plus weight decay, measure neural collapse as it trains, and "
                    "compare the end point with the closed-form optimum. Objective: "
                    "F = (1/N) Σ_i loss(W h_i + b, y_i) + wd_W/2 ||W||² + wd_H/2 ||H||² + wd_b/2 ||b||².",
        epilog=LEGEND,
        formatter_class=HelpFormatter,
    )
    g = p.add_argument_group("problem")
    g.add_argument("--K", type=number(int, 2), default=None, help="number of classes (default 10)")
    g.add_argument("--n", type=number(int, 1), default=100, help="samples per class (balanced)")
    g.add_argument("--counts", type=_counts, default=None,
                   help="per-class sample counts, e.g. 50,50,10 (sets K, overrides --n); or zipf:S:NMAX, long-tailed: "
                        "n_k = max(1, round(NMAX·k^(−S))) for k = 1…K (round half up; needs --K)")
    g.add_argument("--counts-file", type=_counts_file, default=None, metavar="FILE",
                   help="per-class sample counts, one positive integer per line (blank lines and # comments are "
                        "ignored); sets K, overrides --n")
    g.add_argument("--d", type=number(int, 1), default=512, help="feature dimension")
    g.add_argument("--imbalance", type=number(float, 1), default=None,
                   help="step imbalance R: the last --minority classes get max(1, round(n/R)) samples, the others n")
    g.add_argument("--minority", type=number(int, 1), default=None, help="K_B, the number of minority classes")
    g = p.add_argument_group("deep UFM (free features H, then depth − 1 hidden layers, then W)")
    g.add_argument("--depth", type=number(int, 1), default=1,
                   help="L: number of layers after H, the classifier included (1: the plain UFM)")
    g.add_argument("--act", choices=("linear", "relu"), default="linear", help="activation after each hidden layer")
    g.add_argument("--width", type=number(int, 1), default=None, help="hidden-layer width (default: --d)")
    g.add_argument("--features", choices=FEATURES, default="free",
                   help="free: the features H; nonneg: ReLU(H), non-negative as after a real network's last "
                        "activation (Tirer & Bruna 2022); the weight decay stays on H")
    g.add_argument("--normalize", choices=NORMALIZE, default="none",
                   help="on the sphere (ce, ls, focal): logits X̂Ŵᵀ/τ with the features, the classifier rows or "
                        "both normalized; a normalized block gets no weight decay (supcon: features, its only mode)")
    g.add_argument("--temperature", type=number(float, 0, lo_open=True), default=1.0,
                   help="τ of the normalized logits (--normalize) and of SupCon's similarities ĥ_i·ĥ_j/τ "
                        "(--loss supcon)")
    g.add_argument("--wd-M", type=number(float, 0), default=None,
                   help="weight decay of the hidden layers (default: --wd)")
    add_loss_flags(p, default_loss="mse", hierarchy_note="; sets K when --K is not given")
    g = p.add_argument_group("regularization (λ/2·||·||², per block)")
    g.add_argument("--wd", type=number(float, 0), default=None,
                   help="weight decay of W, H and b (default 5e-4; 0 under --loss hug, which is scale-invariant)")
    g.add_argument("--wd-W", type=number(float, 0), default=None, help="weight decay of W (default: --wd)")
    g.add_argument("--wd-H", type=number(float, 0), default=None, help="weight decay of H (default: --wd)")
    g.add_argument("--wd-b", type=number(float, 0), default=None,
                   help="weight decay of b (default: --wd; 0 gives a free bias)")
    g.add_argument("--bias", action=argparse.BooleanOptionalAction, default=False, help="learn a bias b")
    g = p.add_argument_group("optimization")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="gd",
                   help="gd: full-batch gradient descent; sgd: heavy-ball momentum; adam; lbfgs: L-BFGS "
                        "with line search (float64: reaches the optimum to ~1e-14)")
    g.add_argument("--steps", type=number(int, 0), default=None,
                   help=f"optimizer steps (default by optimizer: {DEFAULT_STEPS})")
    g.add_argument("--lr", type=number(float, 0, lo_open=True), default=None,
                   help=f"learning rate (default by optimizer: {DEFAULT_LR}; plain GD needs lr < 2 "
                        "with a bias under MSE, whose curvature is 1)")
    g.add_argument("--momentum", type=number(float, 0, 1), default=0.9, help="momentum (--optimizer sgd)")
    g.add_argument("--batch-size", type=number(int, 1), default=None,
                   help="mini-batch of samples per step (sgd/adam; default: all N)")
    g.add_argument("--init-scale", type=number(float, 0, lo_open=True), default=None,
                   help="rows of H and W start as N(0, s²/d·I), i.e. with norm ≈ s (default 0.1; 1 under hug)")
    g.add_argument("--tol", type=number(float, 0), default=0.0,
                   help="stop once the gradient norm is <= tol (checked at each evaluation; 0: never)")
    g.add_argument("--seed", type=number(int, 0), default=0, help="random seed of the initialization")
    g = p.add_argument_group("runtime and output")
    g.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda, then mps, then cpu")
    g.add_argument("--dtype", choices=DTYPES, default="float32", help="floating-point precision")
    g.add_argument("--evals-per-decade", type=number(int, 1), default=10,
                   help="metric evaluations per factor of 10 in steps (log-spaced schedule)")
    g.add_argument("--certificate", action=argparse.BooleanOptionalAction, default=True,
                   help="solve the convex nuclear-norm program (cvxpy) and print the run's gap to the "
                        "certified global optimum")
    g.add_argument("--out", default=None, help="run directory (default: a fresh folder under runs/); one that "
                                               "already holds a run is refused unless --overwrite")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --out (its files only)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt (written at each measurement step: the "
                        "parameters, the optimizer's state, the history), with the same flags; --steps may be larger "
                        "than the step it reached, to go on further. The trajectory equals the uninterrupted run's. "
                        "Another configuration, or no checkpoint, is refused; under torchrun any process count "
                        "(another P than the checkpoint's re-shards H)")
    g.add_argument("--tensorboard", default=None, metavar="DIR", help=TENSORBOARD_HELP)
    g.add_argument("--threads", type=number(int, 1), default=None,
                   help="CPU threads (default: 1 for small problems, N·d·K < 2e7, else the cores no other "
                        "process is using, sampled over 0.1 s)")
    g.add_argument("--memory-budget", type=memory_size, default=None, metavar="SIZE",
                   help="memory for the N×K logits' blocks and the K×K tiles of one computation, e.g. 512MiB or 2GB "
                        "(default: a quarter of the free memory of the device, at most 512 MiB on a CPU and 8 GiB on "
                        "a GPU; or the environment variable UFM_MEMORY_BUDGET)")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    add_version_flag(p)
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    counts = args.counts_file if getattr(args, "counts_file", None) is not None else args.counts
    K = None if isinstance(counts, ZipfSpec) else len(counts) if counts else args.K
    K = args.K if K is None else K
    if K is None and args.hierarchy is not None:
        from analysis.hierarchy import HierarchyError
        from ufm.problem import class_tree

        try:
            K = class_tree(args.hierarchy).K
        except HierarchyError as e:
            raise ConfigError(f"--hierarchy: {e}") from None
    if isinstance(counts, ZipfSpec):
        if K is None:
            raise ConfigError(f"--counts {counts.text} needs --K, the number of classes")
        counts = counts.counts(K)
    return SimConfig(
        K=K or 10, n=args.n, counts=counts, d=args.d,
        loss=loss_config(args), wd=args.wd, wd_W=args.wd_W, wd_H=args.wd_H, wd_b=args.wd_b, bias=args.bias,
        steps=args.steps, lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
        batch_size=args.batch_size, init_scale=args.init_scale, device=args.device, dtype=args.dtype,
        seed=args.seed, tol=args.tol, evals_per_decade=args.evals_per_decade, certificate=args.certificate,
        imbalance=args.imbalance, minority=args.minority, depth=args.depth, act=args.act, width=args.width,
        features=args.features, normalize=args.normalize, temperature=args.temperature,
        wd_M=args.wd_M,
    )


def announce_memory(cfg: SimConfig, quiet: bool) -> None:
    """Large runs say up front what memory they will take (ufm.fit.memory's estimate; a run that cannot fit is
    refused by ufm.run itself)."""
    from ufm.devices import resolve_device
    from ufm.fit.memory import available_bytes, describe, estimate_bytes

    if quiet or estimate_bytes(cfg) < 2**30:
        return
    try:
        device = str(resolve_device(cfg.device))
    except DeviceUnavailable:
        return
    have = available_bytes(device)
    free = f" (of the {have / 2**30:.1f} GiB available on {device})" if have else ""
    print(f"{PROG}: N = {cfg.N}, d = {cfg.d}, K = {cfg.K}: {describe(cfg, device)}{free}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ufm.simulate`; the library's log records and warnings show as its own lines on stderr."""
    with report_to_stderr(PROG):
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.counts is not None and args.counts_file is not None:
        parser.error("give --counts or --counts-file, not both")
    listed = args.counts_file if args.counts_file is not None else args.counts
    flag = "--counts-file" if args.counts_file is not None else "--counts"
    if isinstance(listed, tuple) and args.K is not None and args.K != len(listed):
        parser.error(f"--K {args.K} disagrees with {flag}, which lists {len(listed)} classes")
    if listed is not None and args.imbalance is not None:
        parser.error(f"--imbalance builds the class counts: do not combine it with {flag}")
    if (args.imbalance is None) != (args.minority is None):
        parser.error("--imbalance R and --minority K_B go together")
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        parser.error(cli_text(e))
    check_out_dir(parser, args.out)
    if args.resume and (args.out is None or args.overwrite):
        parser.error("--resume needs --out, the run directory to continue, and not --overwrite")
    check_tensorboard_dir(parser, args.tensorboard)
    if args.memory_budget is not None:
        from analysis.blocked import set_memory_budget

        set_memory_budget(args.memory_budget)
    from ufm.api import run
    from ufm.output.rundir import RunDirInUse, claim_run_dir, new_run_dir, os_error_line
    from ufm.problem import resolve

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun (or srun with its variables): one run, P processes
        return _main_distributed(parser, args, cfg)
    if args.out is not None and not args.resume:
        try:
            claim_run_dir(args.out, args.overwrite)
        except RunDirInUse as e:
            parser.error(cli_text(e))
    interrupt_on_sigterm()
    announce_memory(cfg, args.quiet)

    try:
        problem = resolve(cfg)  # the tree and the frame: bad input before any work
    except ConfigError as e:
        parser.error(cli_text(e))

    try:
        out = args.out if args.out is not None else new_run_dir("runs", f"{cfg.loss.name}-K{cfg.K}")
        result = run(problem, out, progress=not args.quiet, overwrite=not args.resume,  # claimed above
                     threads=args.threads, tensorboard=args.tensorboard, resume=args.resume)
        summary = result.summary
    except (DeviceUnavailable, ConfigError) as e:  # ConfigError: e.g. more memory than there is
        parser.error(cli_text(e))
    except OSError as e:
        print(f"{PROG}: error: {os_error_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the run started (nothing to keep yet)
        print(f"{PROG}: interrupted before the run started", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(result.table())
    print(f"run directory: {summary['run_dir']}", file=sys.stderr)
    if summary["status"] == "diverged":
        div = summary["divergence"]
        last = (f"last finite loss {div['last_finite_loss']:.6g} at step {div['last_finite_step']}"
                if div["last_finite_step"] is not None else "no finite loss before it")
        print(f"{PROG}: diverged at step {div['step']}: {div['reason']} ({last}); "
              f"try a smaller --lr. What was written is kept in {summary['run_dir']}", file=sys.stderr)
        return EXIT_DIVERGED
    if summary["status"] == "interrupted":
        print(f"{PROG}: interrupted; partial results kept in {summary['run_dir']}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _main_distributed(parser: argparse.ArgumentParser, args: argparse.Namespace, cfg: SimConfig) -> int:
    """One run on the WORLD_SIZE processes torchrun started (ufm.distributed): rank 0 claims the run directory, prints
    the table and any failure, as one line; the other ranks print nothing."""
    import torch.distributed as dist

    from ufm.api import run
    from ufm.backbone.distributed import setup, teardown
    from ufm.distributed import RankFailed
    from ufm.output.rundir import RunDirInUse, claim_run_dir, new_run_dir
    from ufm.problem import resolve

    ctx = setup(cfg.device)
    try:
        out = [None]
        if ctx.main:
            try:
                if args.out is not None and not args.resume:
                    claim_run_dir(args.out, args.overwrite)
                out = [str(args.out if args.out is not None else new_run_dir("runs", f"{cfg.loss.name}-K{cfg.K}"))]
            except (RunDirInUse, OSError) as e:
                out = [f"error: {cli_text(e) if isinstance(e, RunDirInUse) else e}"]
            announce_memory(cfg, args.quiet)
        dist.broadcast_object_list(out, src=0)
        if out[0].startswith("error: "):
            if ctx.main:
                parser.error(out[0][len("error: "):])
            return 2
        try:
            result = run(resolve(cfg), out[0], progress=ctx.main and not args.quiet, overwrite=not args.resume,
                         threads=args.threads, distributed=True, resume=args.resume)
        except (ConfigError, ValueError) as e:
            if ctx.main:
                parser.error(cli_text(e) if isinstance(e, ConfigError) else str(e))
            return 2
        except RankFailed as e:
            if ctx.main:
                print(f"{PROG}: error: {e}; the job ends", file=sys.stderr)
            return 1
        summary = result.summary
        if ctx.main:
            if not args.quiet:
                print(result.table())
            print(f"run directory: {summary['run_dir']}", file=sys.stderr)
        if summary["status"] == "diverged":
            if ctx.main:
                print(f"{PROG}: diverged at step {summary['divergence']['step']}: {summary['divergence']['reason']}; "
                      f"try a smaller --lr. What was written is kept in {summary['run_dir']}", file=sys.stderr)
            return EXIT_DIVERGED
        return EXIT_INTERRUPTED if summary["status"] == "interrupted" else 0
    finally:
        teardown(ctx)


if __name__ == "__main__":
    sys.exit(main())
