"""The wire contract in types: what an event looks like, and the JSON values it carries.

Nothing heavy is imported here, so every layer can depend on this module.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeAlias, TypedDict

JSON: TypeAlias = dict[str, Any] | list[Any] | str | int | float | bool | None
JSONObject: TypeAlias = dict[str, Any]


DEFAULT_WORKSPACE: Final = "default"
WORKSPACE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A workspace name (use ``fullmatch``), as the envelope schema's ``workspace`` pattern says."""


class Envelope(TypedDict):
    """One event as it travels on the log (see ``schemas/events/v1/envelope.json``)."""

    event_id: str
    type: str
    schema_version: int
    workspace: str
    experiment: str
    run_id: str
    ts: int
    seq: int
    payload: JSONObject


RUN_CREATED: Final = "run.created"
RUN_QUEUED: Final = "run.queued"
RUN_STARTED: Final = "run.started"
RUN_COMPLETED: Final = "run.completed"
RUN_FAILED: Final = "run.failed"
RUN_CANCELED: Final = "run.canceled"
METRICS_LOGGED: Final = "metrics.logged"

LIFECYCLE_TYPES: Final = (
    RUN_CREATED,
    RUN_QUEUED,
    RUN_STARTED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_CANCELED,
)
TERMINAL_TYPES: Final = (RUN_COMPLETED, RUN_FAILED, RUN_CANCELED)
