"""Reading query parameters: each bad one raises ``BadParameterError`` naming it. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping

from runstream.errors import RunstreamError
from runstream.types import DEFAULT_WORKSPACE, WORKSPACE_NAME

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_METRIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./ -]{0,255}\Z")
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no", ""}


class BadParameterError(RunstreamError):
    """A query parameter is malformed or out of range; answered with 400 naming it."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(f"{parameter}: {detail}")
        self.parameter = parameter
        self.detail = detail


class NotFoundError(RunstreamError):
    """What the path names does not exist; answered with 404."""


def workspace(params: Mapping[str, str]) -> str:
    value = params.get("workspace", DEFAULT_WORKSPACE)
    if not WORKSPACE_NAME.fullmatch(value):
        raise BadParameterError("workspace", f"not a workspace name: {value[:80]!r}")
    return value


def run_id(value: str, parameter: str = "run_id") -> str:
    if not _RUN_ID.match(value):
        raise BadParameterError(parameter, f"not a run id: {value[:80]!r}")
    return value


def metric_name(value: str, parameter: str) -> str:
    if not _METRIC.match(value):
        raise BadParameterError(parameter, f"not a metric name: {value[:80]!r}")
    return value


def integer(params: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameterError(name, f"expected an integer; got {raw[:40]!r}") from None
    if value < minimum:
        raise BadParameterError(name, f"must be at least {minimum}; got {value}")
    if value > maximum:
        raise BadParameterError(name, f"must be at most {maximum}; got {value}")
    return value


def boolean(params: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise BadParameterError(name, f"expected true or false; got {raw[:40]!r}")


def csv(raw: str | None) -> list[str]:
    """Comma-separated values, blanks dropped (names never contain commas)."""
    return [part for part in (raw or "").split(",") if part.strip()]


def choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if raw not in allowed:
        raise BadParameterError(name, f"expected one of {', '.join(allowed)}; got {raw[:40]!r}")
    return raw
