"""Checking names and values at the logging call, in the caller's thread. Pure: no I/O.

Names: 1 to 256 characters, starting with a letter or digit, then letters, digits
and ``_ . - / space`` (the rule of ``schemas/events/v1/metrics.logged.json``).
Names are case-sensitive: ``loss`` and ``Loss`` are two metrics.

Values: int, float, Decimal, Fraction, and numpy or torch scalars (anything with ``.item()`` giving a
number, such as a 0-d tensor or array). ``bool``, ``None``, strings and
containers are refused. NaN and ±inf are kept: they travel as the strings
"NaN", "Infinity" and "-Infinity" and come back as the same floats.
"""

from __future__ import annotations

import math
import numbers
import re
from decimal import Decimal
from typing import Any

from runstream.errors import RunstreamError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./ -]{0,255}\Z")
COLUMN_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_. -]{0,127}\Z")
TAG_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}\Z")
MAX_STEP = 2**53 - 1


class LoggingError(RunstreamError, ValueError):
    """A logging call got a bad name, value or step; raised at the call, nothing is sent."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_name(name: object, what: str = "metric name") -> str:
    if not isinstance(name, str):
        raise LoggingError(f"{what} must be a string; got {type(name).__name__} {_show(name)}")
    if not NAME_PATTERN.match(name):
        raise LoggingError(
            f"{what} {_show(name)} breaks the naming rule: 1-256 characters, starting with a letter "
            "or digit, then letters, digits, '_', '.', '-', '/' or space"
        )
    return name


def check_column(name: object) -> str:
    if not isinstance(name, str) or not COLUMN_PATTERN.match(name):
        raise LoggingError(
            f"column name {_show(name)} breaks the rule: 1-128 characters of letters, digits, "
            "'_', '.', '-' or space, starting with a letter, digit or '_'"
        )
    return name


def to_float(value: Any, what: str = "value") -> float:
    """A loggable value as a float, or LoggingError naming what was wrong."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return _int_to_float(value, what)
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes | dict | list | tuple):
        raise LoggingError(f"{what} must be a number; got {type(value).__name__} {_show(value)}")
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return _int_to_float(int(value), what)
    item = getattr(value, "item", None)
    if callable(item):
        size = getattr(value, "size", None)
        numel = getattr(value, "numel", None)
        count = numel() if callable(numel) else size
        if count is not None and count != 1:
            raise LoggingError(f"{what} must be a single number; got an array of {count} values")
        try:
            scalar = item()
        except (ValueError, RuntimeError) as exc:
            raise LoggingError(f"{what} must be a single number; {exc}") from None
        if isinstance(scalar, bool) or not isinstance(scalar, int | float):
            raise LoggingError(f"{what} must be a number; got {type(scalar).__name__} {_show(scalar)}")
        return float(scalar)
    if isinstance(value, numbers.Real | Decimal):
        return float(value)
    raise LoggingError(f"{what} must be a number; got {type(value).__name__} {_show(value)}")


def _int_to_float(value: int, what: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise LoggingError(f"{what} {value} is too large for a 64-bit float") from None


def check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, int):
        index = getattr(step, "__index__", None)
        if isinstance(step, bool) or not callable(index):
            raise LoggingError(f"step must be a whole number; got {type(step).__name__} {_show(step)}")
        step = index()
    assert isinstance(step, int)
    if step < 0 or step > MAX_STEP:
        raise LoggingError(f"step must be between 0 and {MAX_STEP}; got {step}")
    return step


def wire(value: float) -> float | str:
    """The JSON form of a float: itself when finite, else its name."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def check_tags(tags: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not TAG_KEY_PATTERN.match(key):
            raise LoggingError(f"tag key {_show(key)} must be 1-128 of letters, digits and _ . : / -")
        if not isinstance(value, str):
            value = str(value)
        if len(value) > 4096:
            raise LoggingError(f"tag {key!r} is {len(value)} characters; at most 4096")
        out[key] = value
    return out


def check_properties(props: dict[str, Any]) -> dict[str, str | float | int | bool]:
    out: dict[str, str | float | int | bool] = {}
    for key, value in props.items():
        if not isinstance(key, str) or not TAG_KEY_PATTERN.match(key):
            raise LoggingError(f"property key {_show(key)} must be 1-128 of letters, digits and _ . : / -")
        if isinstance(value, bool | str) or (isinstance(value, int | float) and math.isfinite(value)):
            out[key] = value
        else:
            raise LoggingError(
                f"property {key!r} must be a string, a finite number or a boolean; got {_show(value)}"
            )
        if isinstance(value, str) and len(value) > 4096:
            raise LoggingError(f"property {key!r} is {len(value)} characters; at most 4096")
    return out
