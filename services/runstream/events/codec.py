"""Encoding of events and metric values.

JSON has no NaN or infinity, and orjson writes them as ``null``. A metric value
that is not finite travels as one of the strings ``"NaN"``, ``"Infinity"`` or
``"-Infinity"`` and is turned back into the float when read, so every value
round-trips exactly.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from runstream.types import Envelope

_NON_FINITE_TO_WIRE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_WIRE_TO_FLOAT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def to_wire_float(value: float) -> float | str:
    """A float as it is written in JSON: itself, or its non-finite name."""
    if math.isfinite(value):
        return value
    return _NON_FINITE_TO_WIRE[repr(float(value))]


def from_wire_float(value: float | int | str) -> float:
    """The float a JSON metric value stands for."""
    if isinstance(value, str):
        return _WIRE_TO_FLOAT[value]
    return float(value)


def encode_event(event: Envelope | dict[str, Any]) -> bytes:
    """Bytes of one event as stored on the log."""
    return orjson.dumps(event)


def decode_event_bytes(data: bytes) -> Any:
    """Parse the bytes of one event; raises ``orjson.JSONDecodeError``."""
    return orjson.loads(data)
