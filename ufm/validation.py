"""Types checked at the door: every public configuration and call checks that ints are ints, bools are bools and
numbers are numbers when it is made, and raises a TypeError naming the argument (ConfigTypeError, which the command
lines print as one line). numpy scalars are taken as the Python values they stand for."""

from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np

from ufm.errors import ConfigTypeError

_NAMES = {int: "an int", float: "a number", bool: "True or False", str: "a string"}
_PLURALS = {int: "ints", float: "numbers", str: "strings"}


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}… ({type(value).__name__})" if len(text) > 60 else f"{text} ({type(value).__name__})"


def _scalar(value: Any, kind: type) -> tuple[bool, Any]:
    """(whether `value` is of the scalar `kind`, the value as that Python type). bool is not an int here (True is
    no class count), and an int is a number (wd=0)."""
    if kind is bool:
        ok = isinstance(value, (bool, np.bool_))
        return ok, bool(value) if ok else value
    if isinstance(value, (bool, np.bool_)):
        return False, value
    if kind is int:
        return (True, int(value)) if isinstance(value, numbers.Integral) else (False, value)
    if kind is float:
        if isinstance(value, numbers.Integral):
            return True, int(value)  # np.int64(0) as 0: config.json must serialize it
        return (True, float(value)) if isinstance(value, numbers.Real) else (False, value)
    if kind is str:
        return isinstance(value, str), value
    return isinstance(value, kind), value


def check_value(name: str, value: Any, hint: Any) -> Any:
    """`value` checked against the type `hint` (int, float, bool, str, X | None, tuple[int, ...], a class, or a
    union of these); returns it converted to the Python type (numpy scalars, a list for a tuple). Raises
    ConfigTypeError (a TypeError) naming `name` and what was expected.
    >>> check_value("K", 10, int), check_value("counts", [3, 2], tuple[int, ...] | None)
    (10, (3, 2))
    >>> check_value("K", 10.5, int)
    Traceback (most recent call last):
    ...
    ufm.errors.ConfigTypeError: K must be an int, got 10.5 (float)
    """
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None) or option is Any:
            if option is Any:
                return value
            continue
        if typing.get_origin(option) is tuple:
            item = typing.get_args(option)[0]
            if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str):
                out = []
                for i, v in enumerate(list(value)):
                    ok, v = _scalar(v, item)
                    if not ok:
                        raise ConfigTypeError(f"{name}[{i}] must be {_NAMES.get(item, item.__name__)}, got "
                                              f"{_shown(v)}")
                    out.append(v)
                return tuple(out)
            continue
        if isinstance(option, type):
            ok, converted = _scalar(value, option)
            if ok:
                return converted
    wanted = " or ".join(_expected(o) for o in options)
    raise ConfigTypeError(f"{name} must be {wanted}, got {_shown(value)}")


def _expected(option: Any) -> str:
    if option is type(None):
        return "None"
    if typing.get_origin(option) is tuple:
        return f"a sequence of {_PLURALS.get(typing.get_args(option)[0], 'values')}"
    return _NAMES.get(option, getattr(option, "__name__", str(option)))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(obj: Any, skip: tuple[str, ...] = ()) -> None:
    """Check (and convert in place: numpy scalars, lists for tuples) every field of the dataclass `obj` against its
    annotation; `skip` names fields checked elsewhere (a LossConfig given by name).
    >>> from ufm.config import SimConfig
    >>> SimConfig(K=3, d="8")
    Traceback (most recent call last):
    ...
    ufm.errors.ConfigTypeError: d must be an int, got '8' (str)
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        setattr(obj, f.name, check_value(f.name, getattr(obj, f.name), hints[f.name]))


def check_int(name: str, value: Any, lo: int | None = None) -> int:
    """An int argument of a call (not a bool, not a float), at least `lo`: TypeError or ValueError naming it.
    >>> check_int("workers", 2, lo=1)
    2
    >>> check_int("workers", 0, lo=1)
    Traceback (most recent call last):
    ...
    ValueError: workers must be at least 1, got 0
    """
    value = check_value(name, value, int)
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be at least {lo}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """A True/False argument of a call ("False" is a string, and truthy: refused).
    >>> check_bool("progress", False)
    False
    """
    return check_value(name, value, bool)
