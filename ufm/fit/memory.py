"""Memory, estimated before anything is allocated: a configuration that cannot fit is refused with one line naming
what takes the memory (--d 1000000000 used to end in an out-of-memory traceback).

The estimate counts what a run really holds (DESIGN §8): the parameters with their gradients, the optimizer's
state and the float64 copy each measurement makes; the N×K logits, their gradient and the probabilities only
one block of rows at a time (within the memory budget of analysis.blocked, whatever N·K); the states that are
N×K by nature (HAFrame's LogitGD steps the logits themselves, and only where they fit the budget); K×K tables of a
class tree; the K×d and min(K, d)² statistics of the metrics.
"""

from __future__ import annotations

from analysis.blocked import free_bytes, memory_budget
from ufm.config import SimConfig
from ufm.errors import ConfigError

# parameter-sized buffers a run holds: the parameters, their gradients, the optimizer's state (Adam: 2 more;
# L-BFGS: its history of 20 pairs), plus the float64 copy (and its gradients) each measurement makes
STATE_COPIES = {"gd": 3, "sgd": 3, "adam": 5, "lbfgs": 2 + 2 * 20}
HEADROOM = 0.9  # refuse beyond this fraction of the memory available
# N×K-shaped block temporaries at once, at most: a step's logits, probabilities and gradient, and a measurement's
# float64 copies of them (each sized by the budget on its own)
LOGIT_BLOCKS = 2
# K×d float64 arrays the metrics hold at once (means, centered means, W, the working copies, projections' directions)
METRIC_COPIES = 8


def memory_terms(cfg: SimConfig, device: str = "cpu") -> dict[str, int]:
    """What a run of `cfg` holds at its peak, in bytes, by what holds it (the keys name it for a reader).
    >>> terms = memory_terms(SimConfig(K=20000, n=2, d=64, loss="ce"))
    >>> max(terms, key=terms.get)[:34]
    'the logits, in blocks of rows with'
    """
    item = 4 if cfg.dtype == "float32" else 8
    N, K, d, w, fd = cfg.N, cfg.K, cfg.d, cfg.width, cfg.feature_dim
    budget = memory_budget(device)
    hidden = (w * d + (cfg.depth - 2) * w * w) if cfg.depth > 1 else 0
    params = N * d + K * fd + hidden + K
    terms = {f"the parameters with their gradients and optimizer state (H is N×d = {N}×{d})":
             params * (item * STATE_COPIES.get(cfg.optimizer, 3) + 16)}
    logits = N * K * (3 * item + 24)  # values, gradients and probabilities, and a measurement's float64 copies
    terms[f"the logits, in blocks of rows within the memory budget of {budget / 2**20:.0f} MiB (N×K = {N}×{K} in "
          "all)"] = min(logits, LOGIT_BLOCKS * budget)
    if cfg.depth > 1:
        terms[f"the hidden layers' activations (N×width = {N}×{w} per layer)"] = (
            N * w * (cfg.depth - 1) * (3 * item + 24))
    if cfg.loss.name == "haframe" and N * K * item <= budget:
        terms[f"HAFrame's logits, the state of its step (N×K = {N}×{K})"] = N * K * item
    if cfg.loss.entry.features_only:
        batch = min(N, cfg.batch_size or N)
        terms[f"SupCon's similarities (batch×batch = {batch}×{batch})"] = batch * batch * (3 * item + 24)
    if cfg.loss.hierarchy is not None:
        terms[f"the class tree's K×K tables (LCA distances, soft targets, frame Gram; K = {K})"] = 4 * K * K * 8
    side = min(K, fd)
    terms[f"the measurements' statistics (K×d = {K}×{fd} and {side}×{side}, float64)"] = (
        METRIC_COPIES * K * fd + 4 * side * side) * 8
    return terms


def estimate_bytes(cfg: SimConfig, device: str = "cpu") -> int:
    """About how many bytes a run of `cfg` needs at its peak (the sum of `memory_terms`).
    >>> estimate_bytes(SimConfig(K=10, n=100, d=512)) < 50 * 2**20
    True
    """
    return int(sum(memory_terms(cfg, device).values()))


def available_bytes(device: str = "cpu") -> int | None:
    """The memory free for a run on `device`: MemAvailable of /proc/meminfo (Linux) or the physical memory, or
    the GPU's free memory; None when unknown.
    >>> available_bytes("cpu") is None or available_bytes("cpu") > 0
    True
    """
    return free_bytes(device)


def describe(cfg: SimConfig, device: str = "cpu") -> str:
    """"about X GiB, mostly <the largest term> (Y GiB)": the estimate with what dominates it.
    >>> describe(SimConfig(K=10, n=100, d=512)).startswith("about 0.0")
    True
    """
    terms = memory_terms(cfg, device)
    need = sum(terms.values())
    top = max(terms, key=terms.get)
    return f"about {need / 2**30:.3g} GiB, mostly {top}: {terms[top] / 2**30:.3g} GiB"


def check_memory(cfg: SimConfig, device: str = "cpu") -> None:
    """ConfigError (one line) when the run of `cfg` cannot fit in the memory available on `device`, naming what
    takes the memory."""
    need, have = estimate_bytes(cfg, device), available_bytes(device)
    if have is not None and need > HEADROOM * have:
        where = "GPU" if device.startswith("cuda") else "memory"
        raise ConfigError(f"this run needs {describe(cfg, device)}; more than the {have / 2**30:.3g} GiB of {where} "
                          "available: reduce --n, --d, --K or --width")
