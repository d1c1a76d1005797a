"""``POST /api/v1/events``: a JSON array of events in, every good one appended to the log.

Answers 200 when every event was accepted, 207 when some were rejected, 422
when all were, 400 for a body that is not a JSON array, 413 for a body over the
limit (refused before it is buffered) and 503 when the log cannot take the
events (nothing of the request was acknowledged; the client retries, and event
ids make the retry harmless). Each rejection names the event's index, its
``event_id`` when it has one, the field, the rule it broke and what was received.
Events this process appended lately (a request sent again after its answer was
lost, or after an append that gave up waiting) get the positions they already
have and are not appended twice (``ingest.recent``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runstream.auth.grants import Principal
from runstream.auth.middleware import principal_of
from runstream.errors import EventLogError, EventValidationError
from runstream.eventlog.port import AppendUnconfirmedError, EventLog, LogPosition
from runstream.events.codec import encode_event
from runstream.events.validation import EventValidator, check_size
from runstream.http import BodyTooLargeError, JSONResponse, error_response, read_capped_body
from runstream.ingest.recent import RecentEvents

MAX_EVENTS_PER_REQUEST = 10_000
UNCONFIRMED_WAIT = 10.0
"""Seconds a request waits for an earlier, unconfirmed append of its events before answering 503."""


class IngestService:
    def __init__(
        self,
        log: EventLog,
        *,
        events_topic: str,
        max_body_bytes: int,
        max_event_bytes: int,
        validator: EventValidator | None = None,
    ) -> None:
        self.log = log
        self.events_topic = events_topic
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.validator = validator or EventValidator()
        self.recent = RecentEvents()
        """Positions of the events appended lately: a request sent again gets them, not a second copy."""

    def routes(self) -> list[Route]:
        return [Route("/api/v1/events", self.post_events, methods=["POST"])]

    async def post_events(self, request: Request) -> Response:
        try:
            body = await read_capped_body(request, self.max_body_bytes)
        except BodyTooLargeError as exc:
            return error_response(413, "body too large", str(exc), limit=exc.limit)
        except ValueError as exc:
            return error_response(400, "invalid body", str(exc))
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error_response(400, "invalid JSON", f"{exc.msg} at byte {exc.pos}", position=exc.pos)
        if not isinstance(data, list):
            return error_response(
                400,
                "invalid body",
                f"the body must be a JSON array of events; got {type(data).__name__}",
            )
        if len(data) > MAX_EVENTS_PER_REQUEST:
            return error_response(
                413,
                "too many events",
                f"a request holds at most {MAX_EVENTS_PER_REQUEST} events; got {len(data)}",
            )
        accepted, rejected = self.validate_all(data, principal_of(request.scope))
        if not await self._earlier_appends_settled(accepted):
            detail = "an earlier append of these events is not confirmed yet; send them again later"
            return error_response(503, "event log unavailable", detail, retriable=True, rejected=rejected)
        fresh, known = self._not_appended_yet(accepted)
        # In flight until the log answers: a retry arriving meanwhile (its client gave up
        # waiting for this answer) waits for this append instead of appending again.
        loop = asyncio.get_running_loop()
        in_flight: list[asyncio.Future[LogPosition]] = [loop.create_future() for _ in fresh]
        for (_, event_id, _, value), future in zip(fresh, in_flight, strict=True):
            self.recent.hold(event_id, value, future)
        try:
            positions = await self.log.append(self.events_topic, [(key, value) for _, _, key, value in fresh])
        except AppendUnconfirmedError as exc:
            for (_, event_id, _, value), pending, future in zip(fresh, exc.pending, in_flight, strict=False):
                self.recent.hold(event_id, value, pending)
                _settle_with(future, pending)
            _forget(in_flight[len(exc.pending) :])  # never handed to the log
            return error_response(503, "event log unavailable", str(exc), retriable=True, rejected=rejected)
        except EventLogError as exc:
            _forget(in_flight)
            return error_response(503, "event log unavailable", str(exc), retriable=True, rejected=rejected)
        except BaseException:
            _forget(in_flight)
            raise
        for (_, event_id, _, value), p, future in zip(fresh, positions, in_flight, strict=True):
            future.set_result(p)
            self.recent.add(event_id, value, p.partition, p.offset)
            known[event_id] = (p.partition, p.offset)
        result = {
            "accepted": [
                {"index": index, "event_id": event_id, "partition": at[0], "offset": at[1]}
                for index, event_id, at in ((i, e, known[e]) for i, e, _, _ in accepted)
            ],
            "rejected": rejected,
        }
        status = 200 if not rejected else (207 if accepted else 422)
        return JSONResponse(result, status_code=status)

    async def _earlier_appends_settled(self, accepted: list[tuple[int, str, bytes, bytes]]) -> bool:
        """Wait (a while) for the fate of earlier appends of these events that gave up waiting."""
        waiting = [p for _, e, _, v in accepted if (p := self.recent.pending(e, v)) is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=UNCONFIRMED_WAIT)
        return all(p.done() for p in waiting)

    def _not_appended_yet(
        self, accepted: list[tuple[int, str, bytes, bytes]]
    ) -> tuple[list[tuple[int, str, bytes, bytes]], dict[str, tuple[int, int]]]:
        """The events to append (each event_id once), and the positions of those appended lately."""
        fresh: list[tuple[int, str, bytes, bytes]] = []
        known: dict[str, tuple[int, int]] = {}
        ids: set[str] = set()
        for item in accepted:
            _, event_id, _, value = item
            if event_id in ids or event_id in known:
                continue
            position = self.recent.get(event_id, value)
            if position is None:
                ids.add(event_id)
                fresh.append(item)
            else:
                known[event_id] = position
        return fresh, known

    def validate_all(
        self, data: list[Any], principal: Principal
    ) -> tuple[list[tuple[int, str, bytes, bytes]], list[dict[str, Any]]]:
        """Split ``data`` into the events to append and the rejections; an event of a
        workspace the token may not write to is rejected like a schema error."""
        accepted: list[tuple[int, str, bytes, bytes]] = []
        rejected: list[dict[str, Any]] = []
        for index, item in enumerate(data):
            try:
                event = self.validator.validate(item)
                check_scope(principal, event["workspace"])
                value = encode_event(event)
                check_size("event", len(value), self.max_event_bytes)
            except EventValidationError as exc:
                event_id = item.get("event_id") if isinstance(item, dict) else None
                rejected.append(
                    {
                        "index": index,
                        "event_id": event_id if isinstance(event_id, str) else None,
                        **exc.as_dict(),
                    }
                )
                continue
            accepted.append((index, event["event_id"], event["run_id"].encode(), value))
        return accepted, rejected


def check_scope(principal: Principal, workspace: str) -> None:
    """Refuse an event of a workspace the token may not write to, naming both."""
    if not principal.may_access(workspace):
        raise EventValidationError(
            "workspace",
            "token-scope",
            f"workspace: this token writes to workspace {principal.workspace!r} only; got {workspace[:80]!r}",
            workspace,
        )


def _settle_with(future: asyncio.Future[LogPosition], pending: asyncio.Future[LogPosition]) -> None:
    """End ``future`` as ``pending`` ends (the fate of an append that gave up waiting)."""

    def copy(done: asyncio.Future[LogPosition]) -> None:
        if future.done():
            return
        if done.cancelled() or done.exception() is not None:
            future.cancel()
        else:
            future.set_result(done.result())

    pending.add_done_callback(copy)


def _forget(in_flight: list[asyncio.Future[LogPosition]]) -> None:
    """These events were not appended: a retry appends them."""
    for future in in_flight:
        future.cancel()
