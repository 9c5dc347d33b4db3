"""Exceptions whose messages name the problem and the fix, the shared argument checks, and ``explain``."""

import math
import numbers


class VaccineError(Exception):
    """Base class for every error raised by vaccine_lib."""


class MissingPackageError(VaccineError, ImportError):
    """An offline data/model package is not installed; the message has the pip command."""


class DataFormatError(VaccineError, ValueError):
    """A data file is malformed; the message names file:line and what is wrong."""


class ConfigError(VaccineError, ValueError):
    """A parameter is out of range or unknown; the message lists the allowed values. ``param``: the parameter's
    name, for callers that map it to their own spelling (a command-line flag, a profile key)."""

    def __init__(self, message: str = "", param: str | None = None):
        super().__init__(message)
        self.param = param


class OfflineError(VaccineError, OSError):
    """A Hub resource was requested while offline; the message lists embedded alternatives."""


class DivergenceError(VaccineError, FloatingPointError):
    """Training produced a non-finite loss, gradient, perturbation or weight (raised by ``guards`` before the stage
    saves, so a diverged model is never cached); the message names the stage, step, value and what to lower."""


#: the seeds numpy / ``transformers.set_seed`` accept
SEED_MAX = 2**32 - 1


def check_choice(name: str, value, allowed) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; allowed values: {', '.join(map(str, allowed))}", param=name)


def check_range(name: str, value, low, high, *, high_open: bool = False) -> None:
    """ConfigError unless low <= value <= high (< high when ``high_open``); a non-number or NaN included."""
    hb = ")" if high_open else "]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name}={value!r} must be a number; allowed range: [{low}, {high}{hb}", param=name)
    if not (value >= low and (value < high if high_open else value <= high)):  # NaN fails every comparison
        raise ConfigError(f"{name}={value!r} is out of range; allowed range: [{low}, {high}{hb}", param=name)


def check_int(name: str, value, low: int, high: int | float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name}={value!r} must be an integer; allowed range: [{low}, {high}]", param=name)
    check_range(name, value, low, high)


def check_seed(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{name}={value!r} is not a valid seed; allowed range: [0, {SEED_MAX}] (2**32 - 1), "
                          "integers only; pick a seed in that range", param=name)


def explain(exc, model, section: str = "") -> str:
    """A pydantic ``ValidationError`` on ``model`` (YAML ``section``) as one line per error, e.g.
    ``align.lr=5.0 is out of range; allowed range (0, 1] (AdamW learning rate). Fix: ...``."""
    lines = []
    for err in exc.errors():
        loc = [str(x) for x in err["loc"] if not isinstance(x, int)]
        name = ".".join(([section] if section else []) + loc)
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:  # a check across fields: its message names the fields and the fix
            lines.append(msg)
            continue
        info = model.model_fields.get(loc[0]) if len(loc) == 1 else None
        what = f" ({info.description})" if info is not None and info.description else ""
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(model.section_fields() if section else model.model_fields)
            lines.append(f"unknown field {name!r}; allowed fields: {allowed}. Fix: remove or rename it.")
        elif err["type"] == "missing":
            lines.append(f"{name} is missing. Fix: give it a value{what}.")
        else:
            rng = _range_text(info) if info is not None else ""
            if err["type"] in ("literal_error", "enum"):
                msg = msg.replace("Input should be", "allowed values:")
            elif rng:
                msg = f"{msg}; allowed range {rng}" if err["type"] == "value_error" else f"allowed range {rng}"
            lines.append(f"{name}={err.get('input')!r} is out of range; {msg}{what}. "
                         f"Fix: set {name} to a value in that range.")
    return "\n".join(lines)


def _range_text(info) -> str:
    b = {k: getattr(m, k) for m in info.metadata for k in ("ge", "gt", "le", "lt") if getattr(m, k, None) is not None}
    if not b:
        return ""
    lo, hi = b.get("ge", b.get("gt", "-inf")), b.get("le", b.get("lt", "inf"))
    return f"{'(' if 'gt' in b else '['}{lo}, {hi}{')' if 'lt' in b else ']'}"
