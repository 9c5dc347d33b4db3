"""Exceptions with messages that name the problem and the fix."""


class VaccineError(Exception):
    """Base class for every error raised by vaccine_lib."""


class MissingPackageError(VaccineError, ImportError):
    """An offline data/model package is not installed; the message has the pip command."""


class DataFormatError(VaccineError, ValueError):
    """A data file is malformed; the message names file:line and what is wrong."""


class ConfigError(VaccineError, ValueError):
    """A parameter is out of range or unknown; the message lists the allowed values."""


class OfflineError(VaccineError, OSError):
    """A Hub resource was requested while offline; the message lists embedded alternatives."""


def check_choice(name: str, value, allowed) -> None:
    """Raise ConfigError unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; allowed values: {', '.join(map(str, allowed))}")


def check_range(name: str, value, low, high, *, low_open: bool = False, high_open: bool = False) -> None:
    """Raise ConfigError unless low <= value <= high (bounds optionally open)."""
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ConfigError(f"{name}={value!r} is out of range; allowed range: {lb}{low}, {high}{hb}")
