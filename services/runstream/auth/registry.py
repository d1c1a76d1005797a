"""The token registry: every grant, kept on a compacted topic of the event log.

Issuing or revoking a token appends the grant (keyed by its id) to
``<prefix>.tokens``. Every service process reads that topic to its end before it
serves, then follows it, so a token issued or revoked through any process counts
in every other within moments, with no database call per request. Only digests
are on the topic; the server's own token is never written anywhere but its file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from runstream.auth.grants import (
    BOOTSTRAP_ID,
    EVERY_WORKSPACE,
    Grant,
    GrantError,
    Principal,
    Role,
    authenticate,
    digest,
    new_grant,
    token_id_of,
)
from runstream.errors import AuthError, EventLogError
from runstream.eventlog.port import EventLog, LogConsumer, LogRecord, stop_reading

log = logging.getLogger("runstream.auth")

RevocationListener = Callable[[str], None]
"""Called with the id of a grant that was just revoked (or expired early)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class TokenRegistry:
    """The grants this process knows, kept in step with the tokens topic."""

    def __init__(
        self,
        server_token: str,
        log: EventLog | None = None,
        topic: str = "runstream.tokens",
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        """Without a ``log`` only the server's own token is known (and none can be issued)."""
        self.log = log
        self.topic = topic
        self._server = Grant(BOOTSTRAP_ID, digest(server_token), EVERY_WORKSPACE, Role.ADMIN)
        self._grants: dict[str, Grant] = {}
        self._clock = clock
        self._consumer: LogConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[RevocationListener] = []

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Read every grant on the topic, then follow it."""
        if self.log is None:
            return
        await self.log.create_topic(self.topic, 1, compacted=True)
        ends = await self.log.end_offsets(self.topic)
        consumer = self.log.consumer([self.topic], start_at="beginning")
        await consumer.start()
        self._consumer = consumer
        behind = {partition: end for partition, end in ends.items() if end > 0}
        while behind:
            for record in await consumer.fetch(10_000, timeout=1.0):
                self._apply([record])
                if record.offset + 1 >= behind.get(record.partition, 0):
                    behind.pop(record.partition, None)
        self._task = asyncio.create_task(self._follow(), name="runstream-token-registry")

    async def close(self) -> None:
        task, self._task = self._task, None
        consumer, self._consumer = self._consumer, None
        await stop_reading(task, consumer)

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                self._apply(await self._consumer.fetch(1000, timeout=1.0))
            except EventLogError as exc:
                log.warning("tokens: cannot read %s (%s); retrying", self.topic, exc)
                await asyncio.sleep(1.0)

    def _apply(self, records: list[LogRecord]) -> None:
        for record in records:
            try:
                grant = Grant.decode(record.value)
            except (ValueError, KeyError, TypeError, GrantError) as exc:
                log.error("tokens: skipping a malformed grant at offset %s: %s", record.offset, exc)
                continue
            self._store(grant)

    def _store(self, grant: Grant) -> None:
        before = self._grants.get(grant.token_id)
        self._grants[grant.token_id] = grant
        if grant.revoked_ms is not None and (before is None or before.revoked_ms is None):
            for listener in self._listeners:
                listener(grant.token_id)

    def on_revoke(self, listener: RevocationListener) -> None:
        self._listeners.append(listener)

    # -- checks ---------------------------------------------------------------------------
    def authenticate(self, token: str | None) -> Principal:
        """The principal ``token`` acts as; AuthError (401) says why there is none."""
        if not token:
            raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
        token_id = token_id_of(token)
        grant = self._grants.get(token_id) if token_id is not None else self._server
        return authenticate(grant, token, self._clock())

    # -- administration ---------------------------------------------------------------------
    async def issue(
        self, workspace: str, role: Role, *, name: str = "", ttl_seconds: float | None = None
    ) -> tuple[Grant, str]:
        """A new token (returned once) and its grant, appended to the topic."""
        grant, token = new_grant(workspace, role, name=name, now_ms=self._clock(), ttl_seconds=ttl_seconds)
        await self._append(grant)
        return grant, token

    async def revoke(self, token_id: str) -> Grant:
        grant = self._grants.get(token_id)
        if grant is None:
            raise KeyError(token_id)
        if grant.revoked_ms is None:
            grant = Grant(
                grant.token_id, grant.digest, grant.workspace, grant.role, grant.name,
                grant.created_ms, grant.expires_ms, self._clock(),
            )  # fmt: skip
            await self._append(grant)
        return grant

    def grants(self) -> list[Grant]:
        return sorted(self._grants.values(), key=lambda g: (g.created_ms, g.token_id))

    def grant(self, token_id: str) -> Grant | None:
        return self._grants.get(token_id)

    async def _append(self, grant: Grant) -> None:
        if self.log is None:
            raise EventLogError("this process keeps no token registry; tokens are issued by a server")
        await self.log.append(self.topic, [(grant.token_id.encode(), grant.encode())])
        self._store(grant)  # in force here at once; other processes follow the topic
