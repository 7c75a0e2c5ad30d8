"""Configuration checks that run in Python, before anything is traced or compiled.

Every error names the offending field, the value it got and what is allowed.
"""

import difflib
import math
import numbers
from collections.abc import Iterable


def is_positive_int(value) -> bool:
    return _is_integer(value) and value > 0


def positive_int(name: str, value) -> int:
    """A positive integer (Python or NumPy), returned as a Python int."""
    if not is_positive_int(value):
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def nonnegative_int(name: str, value) -> int:
    """An integer >= 0 (Python or NumPy), returned as a Python int."""
    if not _is_integer(value) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0, got {value!r}.")
    return int(value)


def seed(name: str, value) -> int:
    """A random seed: an integer in [0, 2⁶³) (what a JAX key takes without overflow)."""
    if not _is_integer(value) or not 0 <= value < 2**63:
        raise ValueError(f"`{name}` must be an integer in [0, 2**63), got {value!r}.")
    return int(value)


def whole_record_blocks(fields: str, steps, n_records: int, records_field: str) -> int:
    """A schedule that runs exactly: `steps` (e.g. horizon / dt) is a whole number of steps, at
    least one and a whole number per record. Returns the step count; never rounds silently."""
    if not _is_real(steps) or not math.isfinite(steps) or steps >= 2**31:
        # the compiled program counts steps in int32
        raise ValueError(
            f"{fields} must give fewer than 2**31 steps (a finite number); got {steps:g} steps."
        )
    count = round(steps)
    if abs(steps - count) > 1e-6 or count < n_records or count % n_records:
        raise ValueError(
            f"{fields} must be a whole number of steps divisible by {records_field} "
            f"({n_records}); got {steps:g} steps. Choose values that divide."
        )
    return count


def distinct(name: str, values) -> tuple:
    """A sequence with no repeated value: two equal points would be one result counted twice."""
    values = tuple(values)
    repeated = sorted({repr(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"`{name}` repeats {', '.join(repeated)}; list each value once.")
    return values


def finite_nonnegative(name: str, value) -> float:
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return float(value)


def finite_positive(name: str, value) -> float:
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return float(value)


def in_open_interval(name: str, value, low: float, high: float) -> float:
    if not _is_real(value) or not (low < value < high):
        raise ValueError(f"`{name}` must lie strictly between {low} and {high}, got {value!r}.")
    return float(value)


def one_of(name: str, value, allowed: Iterable):
    allowed = tuple(allowed)
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(
            f"`{name}` must be one of {choices}; got {value!r}.{did_you_mean(value, allowed)}"
        )
    return value


def did_you_mean(value, allowed) -> str:
    """ " Did you mean 'x'?" for a misspelt name close to one allowed, else ""."""
    names = [a for a in allowed if isinstance(a, str)]
    close = difflib.get_close_matches(value, names, n=1) if isinstance(value, str) else []
    return f" Did you mean {close[0]!r}?" if close else ""


def variant(name: str, value, base, names: Iterable[str]):
    """A variant setting: a Module of kind `base` (the command line and sweep files name the
    built-in ones `names`)."""
    if not isinstance(value, base):
        choices = ", ".join(repr(n) for n in names)
        kind = getattr(base, "__name__", str(base))  # a class or a union of classes
        raise ValueError(f"`{name}` must be a {kind} (by name: {choices}); got {value!r}.")
    return value


def blocks_cover(name: str, blocks, d: int) -> tuple[tuple[int, int], ...]:
    """Check a block layout: each block a non-empty [start, stop) inside [0, d), union = [0, d)."""
    try:
        blocks = tuple((int(start), int(stop)) for start, stop in blocks)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a sequence of (start, stop) pairs, got {blocks!r}."
        ) from None
    if len(blocks) == 0:
        raise ValueError(f"`{name}` must contain at least one (start, stop) block.")
    covered = set()
    for start, stop in blocks:
        if not 0 <= start < stop <= d:
            raise ValueError(
                f"`{name}` block ({start}, {stop}) must satisfy 0 <= start < stop <= d={d}."
            )
        covered.update(range(start, stop))
    missing = sorted(set(range(d)) - covered)
    if missing:
        raise ValueError(
            f"`{name}` must cover every coordinate 0..{d - 1}; "
            f"coordinates {missing} are in no block."
        )
    return blocks


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
