"""The error every configuration raises for bad input (the command lines turn it into one line, exit 2)."""


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the flag and the offending value."""
