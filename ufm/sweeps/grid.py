"""A sweep's grid: fixed settings and lists of values (a TOML file, or KEY=V1,V2 on the command line),
expanded into validated SimConfigs with stable ids."""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from ufm.config import ConfigError, SimConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FIELDS = {f.name for f in fields(SimConfig)}
ALIASES = {"wd": ("wd_W", "wd_H", "wd_b")}  # --wd sets all three blocks, as in ufm.simulate


class GridError(ValueError):
    """A grid that cannot be expanded; the message names the key or configuration."""


def parse_value(text: str) -> Any:
    """A command-line value: int, float, true/false/none, else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_assignments(items: list[str]) -> dict[str, list[Any]]:
    """["K=4,10", "loss=ce"] → {"K": [4, 10], "loss": ["ce"]}."""
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise GridError(f"expected KEY=V1,V2,…, got {item!r}")
        out[key.strip()] = [parse_value(v) for v in values.split(",")]
    return out


def read_spec(path: Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(fixed settings, grid) from a TOML file: top-level keys (or a [fixed] table) are fixed, the [grid]
    table maps keys to lists of values."""
    try:
        spec = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise GridError(f"cannot read {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise GridError(f"{path} is not valid TOML: {e}") from None
    grid = spec.pop("grid", {})
    fixed = {**spec.pop("fixed", {}), **spec}
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise GridError(f"{path}: [grid] must map each key to a non-empty list of values")
    return fixed, grid


def _settings(raw: dict[str, Any]) -> dict[str, Any]:
    """SimConfig keyword arguments: aliases expanded, explicit blocks (wd_W …) winning over them."""
    aliased, direct = {}, {}
    for key, value in raw.items():
        if key in ALIASES:
            aliased.update(dict.fromkeys(ALIASES[key], value))
        elif key in FIELDS:
            direct[key] = value
        else:
            raise GridError(f"unknown setting {key!r} (SimConfig fields and 'wd')")
    return {**aliased, **direct}


def expand(fixed: dict[str, Any], grid: dict[str, list[Any]]) -> list[SimConfig]:
    """The cartesian product of the grid over the fixed settings, in a stable order; every configuration is
    validated (GridError naming the first invalid one)."""
    keys = list(grid)
    configs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        settings = _settings({**fixed, **point})
        if "counts" in settings and settings["counts"] is not None:
            settings["counts"] = tuple(settings["counts"])
        try:
            configs.append(SimConfig(**settings))
        except (ConfigError, TypeError) as e:
            raise GridError(f"configuration {point}: {e}") from None
    if not configs:
        raise GridError("the grid is empty")
    return configs


def config_id(cfg: SimConfig) -> str:
    """A stable id of a configuration (its run directory's name): a hash of all its settings."""
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
