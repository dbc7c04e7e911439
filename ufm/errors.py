"""The errors every configuration raises for bad input, in two languages: the command lines print them with their
flags (one line, exit 2), the library reads them in Python names.

A message is written once, in the command line's words ("--wd-W must be >= 0", "pass --overwrite"); `str(e)` reads
it in the library's (``wd_W must be >= 0``, ``pass overwrite=True``), and `e.cli` keeps the flag form, which
`cli_text` hands to the command lines."""

from __future__ import annotations

import re

# flags that are switches: in Python they are keyword arguments set to True (or False, for --no-X)
SWITCHES = frozenset({"overwrite", "resume", "resume_or_start", "bias", "certificate", "quiet", "batch_norm",
                      "download", "compare_ufm"})
# flags whose Python name is not the flag's own: a sweep's --set is the call's `fixed`
RENAMED = {"set": "fixed"}

_FLAG = re.compile(r"(?<![\w-])--([A-Za-z][\w-]*)")


def python_names(text: str) -> str:
    """`text` with every command-line flag read as its Python name: --wd-W → wd_W, --overwrite → overwrite=True,
    --no-bias → bias=False.
    >>> python_names("--wd-W must be >= 0; pass --overwrite, or --no-bias")
    'wd_W must be >= 0; pass overwrite=True, or bias=False'
    """
    def name(m: re.Match) -> str:
        flag = m.group(1).replace("-", "_")
        if flag.startswith("no_") and flag[3:] in SWITCHES:
            return f"{flag[3:]}=False"
        if flag in SWITCHES:
            return f"{flag}=True"
        return RENAMED.get(flag, flag)

    return _FLAG.sub(name, text)


class FlagWords(Exception):
    """An error whose message is written with the command-line flags: `str(e)` reads it in Python names, `e.cli`
    keeps the flags (mixed into the project's errors: ConfigError, DeviceUnavailable)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.cli = message

    def __str__(self) -> str:
        return python_names(self.cli)


class ConfigError(FlagWords, ValueError):
    """A configuration or call that cannot run. The message is written with the command-line flags; `str(e)`
    gives it in Python names, `e.cli` in flags.
    >>> e = ConfigError("--wd-H must be a finite number >= 0, got -1")
    >>> str(e), e.cli
    ('wd_H must be a finite number >= 0, got -1', '--wd-H must be a finite number >= 0, got -1')
    """


class ConfigTypeError(ConfigError, TypeError):
    """A value of the wrong type (a float where an int belongs, a string where a number does): a TypeError, and a
    ConfigError for the command lines that print it.
    >>> isinstance(ConfigTypeError("K must be an int"), TypeError)
    True
    """


def cli_text(e: BaseException) -> str:
    """The command line's words for an error: the flag form of a ConfigError, the message of any other.
    >>> cli_text(ConfigError("pass --overwrite")), str(ConfigError("pass --overwrite"))
    ('pass --overwrite', 'pass overwrite=True')
    """
    return getattr(e, "cli", None) or str(e)


class UFMWarning(UserWarning):
    """The category of the library's warnings (warnings.warn): a result that is there but incomplete or doubtful,
    such as a comparison figure that could not be drawn. Filter them like any warning; the command lines show
    them as their own "python -m ufm.X: warning: …" lines (ufm.cli.common.report_to_stderr).
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("comparison.png not drawn", UFMWarning)
    >>> [(w.category.__name__, str(w.message)) for w in seen]
    [('UFMWarning', 'comparison.png not drawn')]
    """
