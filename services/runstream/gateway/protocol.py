"""The live protocol's wire contract: client requests, server frames, cursors, close codes.

Pure: no I/O, nothing heavier than orjson, so the gateway and the Python client
(``runstream.live``) share it. ``PROTOCOL.md`` beside this file is the reference.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson

from runstream.errors import RunstreamError
from runstream.types import DEFAULT_WORKSPACE, WORKSPACE_NAME

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
"""Largest client message; a larger one closes the socket with 1009."""
MAX_SUBSCRIPTIONS = 256
"""Subscriptions one socket may hold at once."""
MAX_RATE = 1000.0
"""Highest ``max_rate`` a subscription may ask for (updates per second)."""

RunCursor: TypeAlias = int
"""A run's cursor: the offset, in the run's partition, of the last event received (-1: none)."""
VectorCursor: TypeAlias = dict[int, int]
"""An experiment's or compute target's cursor: per partition, the last offset accounted for."""
Cursor: TypeAlias = RunCursor | VectorCursor


class Kind(enum.StrEnum):
    """What a subscription watches."""

    RUN = "run"
    EXPERIMENT = "experiment"
    COMPUTE = "compute"


TARGET_FIELD = {Kind.RUN: "run_id", Kind.EXPERIMENT: "experiment", Kind.COMPUTE: "compute"}


class CloseCode(enum.IntEnum):
    """Websocket close codes the gateway uses (RFC 6455 and the 4000 private range)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    IDLE_TIMEOUT = 4000


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` frame."""

    BAD_REQUEST = "bad_request"
    """The message is malformed; ``detail`` names the field. Nothing changed."""
    FORBIDDEN = "forbidden"
    """The connection's token may not read this workspace. Nothing changed."""
    LIMIT = "limit"
    """A per-socket limit was reached (subscriptions). Nothing changed."""
    CURSOR_UNAVAILABLE = "cursor_unavailable"
    """Events after the cursor are neither on the log nor in ClickHouse; the subscription ended."""
    UNAVAILABLE = "unavailable"
    """The gateway could not read what the subscription needs; it ended. Subscribe again later."""


class LiveRequestError(RunstreamError):
    """A client message broke the protocol; becomes an ``error`` frame, the socket stays open."""

    def __init__(self, detail: str, *, sub: str | None = None, code: ErrorCode = ErrorCode.BAD_REQUEST):
        super().__init__(detail)
        self.detail = detail
        self.sub = sub
        self.code = code


@dataclass(frozen=True)
class Subscribe:
    sub: str
    """The client's name for the subscription, echoed on every frame for it."""
    kind: Kind
    target: str
    """The run id, experiment name or compute target name."""
    workspace: str
    cursor: Cursor | None
    """Resume after this cursor; None: start from a snapshot (or from now)."""
    snapshot: bool
    """Without a cursor: send the current state first (default), else start live from now."""
    max_rate: float | None
    """At most this many frames per second for this subscription; None: every change at once."""
    types: tuple[str, ...] | None = None
    """Run subscriptions: only events of these types (``run.*`` names a prefix); None: all."""

    def wants(self, event_type: str) -> bool:
        if self.types is None:
            return True
        return any(event_type.startswith(t[:-1]) if t.endswith(".*") else event_type == t for t in self.types)


@dataclass(frozen=True)
class Unsubscribe:
    sub: str


@dataclass(frozen=True)
class Ping:
    id: str | int | None = None


@dataclass(frozen=True)
class Pong:
    """A keep-alive from the client (the answer to a heartbeat); nothing is sent back."""


Request: TypeAlias = Subscribe | Unsubscribe | Ping | Pong

_SUB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_EXPERIMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _./-]{0,255}\Z")
_TARGET_PATTERN = {Kind.RUN: _NAME, Kind.EXPERIMENT: _EXPERIMENT, Kind.COMPUTE: _NAME}
_SUBSCRIBE_FIELDS = frozenset(
    {"op", "sub", "run_id", "experiment", "compute", "workspace", "cursor", "snapshot", "max_rate", "types"}
)
_TYPE_FILTER = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+|\.\*)\Z")
MAX_PARTITIONS = 10_000
MAX_TYPES = 32


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request(text: str) -> Request:
    """The request in one client text frame; raises ``LiveRequestError`` naming what is wrong."""
    try:
        message: Any = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise LiveRequestError(f"message is not valid JSON: {exc.msg} at byte {exc.pos}") from None
    if not isinstance(message, dict):
        raise LiveRequestError("message must be a JSON object")
    op = message.get("op")
    if op == "subscribe":
        return _parse_subscribe(message)
    if op == "unsubscribe":
        sub = message.get("sub")
        if not isinstance(sub, str) or not _SUB_ID.match(sub):
            raise LiveRequestError(f"sub: must be 1-64 of A-Z a-z 0-9 _ . : -; got {sub!r}")
        return Unsubscribe(sub)
    if op == "ping":
        ping_id = message.get("id")
        short_text = isinstance(ping_id, str) and len(ping_id) <= 64
        if ping_id is not None and not (short_text or _is_int(ping_id)):
            raise LiveRequestError("id: must be a string of at most 64 characters or an integer")
        return Ping(ping_id)
    if op == "pong":
        return Pong()
    raise LiveRequestError(f"op: unknown operation {op!r}; expected subscribe, unsubscribe, ping or pong")


def _parse_subscribe(message: dict[str, Any]) -> Subscribe:
    sub = message.get("sub")
    if not isinstance(sub, str) or not _SUB_ID.match(sub):
        raise LiveRequestError(f"sub: must be 1-64 of A-Z a-z 0-9 _ . : -; got {sub!r}")
    unknown = sorted(set(message) - _SUBSCRIBE_FIELDS)
    if unknown:
        raise LiveRequestError(f"{unknown[0]}: not a field of subscribe", sub=sub)
    kinds = [kind for kind, name in TARGET_FIELD.items() if name in message]
    if len(kinds) != 1:
        raise LiveRequestError(
            "run_id: subscribe names exactly one of run_id, experiment or compute", sub=sub
        )
    kind = kinds[0]
    field = TARGET_FIELD[kind]
    target = message[field]
    if not isinstance(target, str) or not _TARGET_PATTERN[kind].match(target):
        raise LiveRequestError(f"{field}: must be a {field.replace('_', ' ')}; got {target!r}", sub=sub)
    workspace = message.get("workspace", DEFAULT_WORKSPACE)
    if not isinstance(workspace, str) or not WORKSPACE_NAME.fullmatch(workspace):
        raise LiveRequestError(f"workspace: must be a workspace name; got {workspace!r}", sub=sub)
    cursor = parse_cursor(kind, message.get("cursor"), sub)
    snapshot = message.get("snapshot", True)
    if not isinstance(snapshot, bool):
        raise LiveRequestError(f"snapshot: must be true or false; got {snapshot!r}", sub=sub)
    max_rate = message.get("max_rate")
    if max_rate is not None and (
        isinstance(max_rate, bool)
        or not isinstance(max_rate, int | float)
        or not math.isfinite(max_rate)
        or not 0 < max_rate <= MAX_RATE
    ):
        raise LiveRequestError(f"max_rate: must be a number above 0 and at most {MAX_RATE:g}", sub=sub)
    types = message.get("types")
    if types is not None:
        if kind is not Kind.RUN:
            raise LiveRequestError("types: only run subscriptions filter by event type", sub=sub)
        if (
            not isinstance(types, list)
            or not 0 < len(types) <= MAX_TYPES
            or not all(isinstance(t, str) and _TYPE_FILTER.match(t) for t in types)
        ):
            raise LiveRequestError(
                f'types: must be a list of 1 to {MAX_TYPES} event types ("logs.appended", "run.*")', sub=sub
            )
    return Subscribe(
        sub,
        kind,
        target,
        workspace,
        cursor,
        snapshot,
        None if max_rate is None else float(max_rate),
        None if types is None else tuple(types),
    )


def parse_cursor(kind: Kind, value: object, sub: str | None = None) -> Cursor | None:
    """A cursor as the client sent it: an integer for a run, an object of partitions otherwise."""
    if value is None:
        return None
    if kind is Kind.RUN:
        if not _is_int(value) or not isinstance(value, int) or value < -1:
            raise LiveRequestError(f"cursor: must be an integer >= -1; got {value!r}", sub=sub)
        return value
    if not isinstance(value, dict) or len(value) > MAX_PARTITIONS:
        raise LiveRequestError(
            f'cursor: must be an object of partition to offset ({{"0": 41, "1": -1}}); got {value!r}', sub=sub
        )
    out: VectorCursor = {}
    for key, offset in value.items():
        if not (isinstance(key, str) and key.isdigit()) or not _is_int(offset) or offset < -1:
            raise LiveRequestError(f"cursor: {key!r}: {offset!r} is not partition: offset >= -1", sub=sub)
        out[int(key)] = offset
    return out


def cursor_json(cursor: Cursor | None) -> Any:
    """A cursor as it is written in frames (partition keys as strings)."""
    if isinstance(cursor, dict):
        return {str(p): o for p, o in sorted(cursor.items())}
    return cursor


# -- server frames ----------------------------------------------------------------------------


def error_frame(detail: str, sub: str | None = None, code: ErrorCode = ErrorCode.BAD_REQUEST) -> bytes:
    return orjson.dumps({"type": "error", "sub": sub, "code": code.value, "detail": detail})


def event_frame(sub: bytes, partition: int, offset: int, value: bytes) -> bytes:
    """One event; ``sub`` is the JSON-encoded sub id, ``value`` the event's bytes as on the log."""
    return b"".join(
        (
            b'{"type":"event","sub":',
            sub,
            b',"partition":',
            str(partition).encode(),
            b',"cursor":',
            str(offset).encode(),
            b',"event":',
            value,
            b"}",
        )
    )


def events_frame(sub: bytes, partition: int, offsets: list[int], values: list[bytes]) -> bytes:
    """Several events of one run in one frame (a rate-limited subscription); cursor is the last one's."""
    return b"".join(
        (
            b'{"type":"events","sub":',
            sub,
            b',"partition":',
            str(partition).encode(),
            b',"cursor":',
            str(offsets[-1]).encode(),
            b',"cursors":',
            orjson.dumps(offsets),
            b',"events":[',
            b",".join(values),
            b"]}",
        )
    )


def heartbeat_frame(now_ms: int, idle_timeout: float) -> bytes:
    return orjson.dumps({"type": "heartbeat", "ts": now_ms, "idle_timeout": idle_timeout})


def pong_frame(ping_id: str | int | None) -> bytes:
    return b'{"type":"pong"}' if ping_id is None else orjson.dumps({"type": "pong", "id": ping_id})
