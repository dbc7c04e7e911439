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
from ufm.counts import is_zipf
from ufm.errors import cli_text
from ufm.losses import LossConfig
from ufm.problem import resolve

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# the flat keys of summary.json's config: SimConfig's fields with the loss's fields flat ("loss" its name);
# annotations are strings (postponed)
FIELD_TYPES = {**{f.name: str(f.type) for f in fields(SimConfig) if f.name not in ("loss", "wd")},
               "loss": "str", **{f.name: str(f.type) for f in fields(LossConfig) if f.name != "name"}}
FIELDS = set(FIELD_TYPES)
ALIASES = {"wd": ("wd_W", "wd_H", "wd_b")}  # --wd sets all three blocks, as in ufm.simulate


class GridError(ConfigError):
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
        if key.strip() in out:  # --grid K=4 --grid K=5 would silently keep only K=5
            raise GridError(f"--grid {key.strip()} is given twice: list every value once, e.g. "
                            f"--grid {key.strip()}=V1,V2")
        out[key.strip()] = [parse_value(v) for v in values.split(",")]
    return out


def parse_settings(items: list[str]) -> dict[str, Any]:
    """["steps=2000", "hierarchy=balanced:2,5"] → {"steps": 2000, "hierarchy": "balanced:2,5"}: one value
    each, not split at commas (a counts list "50,50,10" is split when it is typed)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise GridError(f"expected KEY=VALUE, got {item!r}")
        if key.strip() in out:
            raise GridError(f"--set {key.strip()} is given twice")
        out[key.strip()] = parse_value(value)
    return out


def check_disjoint(fixed: dict[str, Any], grid: dict[str, list[Any]]) -> None:
    """A key both fixed (--set, the file's top level) and varied (--grid, [grid]) is ambiguous: refused (one of
    them used to win silently)."""
    both = sorted(set(fixed) & set(grid))
    if both:
        raise GridError(f"{', '.join(both)} is both a fixed setting and a grid axis: give it once")


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
    table = spec.pop("fixed", {})
    if not isinstance(table, dict):
        raise GridError(f"{path}: 'fixed' must be a table of settings")
    fixed = {**table, **spec}
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise GridError(f"{path}: [grid] must map each key to a non-empty list of values")
    return fixed, grid


def coerce(name: str, value: Any) -> Any:
    """`value` as the type SimConfig declares for `name` (int, float, bool, str, the counts tuple or a "zipf:S:NMAX"
    specification, or None where allowed): 4.0 → 4 for an int, 1 → 1.0 for a float, so that equal settings get equal
    ids; anything else is a GridError (a string "false" is not a bool, 2.5 is not an int)."""
    declared = FIELD_TYPES[name]
    if value is None:
        if "None" not in declared:
            raise GridError(f"{name} cannot be none")
        return None
    base = declared.split("|")[0].strip()
    if base.startswith("tuple") and is_zipf(value):  # counts = "zipf:S:NMAX": expanded by SimConfig with its K
        return value.strip()
    if base.startswith("tuple"):  # counts: a list of integers (or "50,50,10" from the command line)
        items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
        return tuple(coerce_int(name, parse_value(v) if isinstance(v, str) else v) for v in items)
    if base == "int":
        return coerce_int(name, value)
    if base == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base == "bool" and isinstance(value, bool):
        return value
    if base == "str" and isinstance(value, str):
        return value
    raise GridError(f"{name} must be {'a ' + base if base != 'int' else 'an int'}, got {value!r}")


def coerce_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise GridError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _settings(raw: dict[str, Any]) -> dict[str, Any]:
    """SimConfig keyword arguments, typed: aliases expanded, explicit blocks (wd_W …) winning over them."""
    aliased, direct = {}, {}
    for key, value in raw.items():
        if key in ALIASES:
            aliased.update({name: coerce(name, value) for name in ALIASES[key]})
        elif key in FIELDS:
            direct[key] = coerce(key, value)
        else:
            raise GridError(f"unknown setting {key!r} (SimConfig fields and 'wd')")
    return {**aliased, **direct}


# settings added after the ids were fixed: hashed only where they differ from the default they were added with,
# so a configuration that does not use them keeps its id (a sweep restarted after an upgrade skips its runs)
ADDED_SETTINGS = {"focal_gamma": 2.0, "features": "free", "lca_distance": "auto", "normalize": "none",
                  "temperature": 1.0, "code_budget": 120.0}


def config_id(cfg: SimConfig) -> str:
    """A stable id of a configuration (its run directory's name): a hash of all its settings (those of
    ADDED_SETTINGS only where they differ from their default).
    >>> config_id(SimConfig())
    '1c95ad2f0158165f'
    """
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ADDED_SETTINGS or v != ADDED_SETTINGS[k]}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def expand(fixed: dict[str, Any], grid: dict[str, list[Any]]) -> list[SimConfig]:
    """The cartesian product of the grid over the fixed settings, in a stable order, without duplicates
    (equal configurations, e.g. lr = 1 and 1.0, run once); every configuration is typed, validated and
    resolved (GridError naming the first invalid one)."""
    keys = list(grid)
    configs: dict[str, SimConfig] = {}
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        try:
            cfg = SimConfig.from_dict(_settings({**fixed, **point}))
            resolve(cfg)  # its tree and frame load: a bad one is refused now, not when its run starts
        except GridError as e:
            raise GridError(f"configuration {point}: {cli_text(e)}") from None
        except (ConfigError, TypeError, ValueError, AttributeError) as e:
            raise GridError(f"configuration {point}: {cli_text(e)}") from None
        configs.setdefault(config_id(cfg), cfg)
    if not configs:
        raise GridError("the grid is empty")
    return list(configs.values())
