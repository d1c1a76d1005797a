"""One ASGI application running any set of Runstream's services.

``runstream up`` runs them all in one process on the embedded defaults; each
service can also run alone (``runstream ingest``, ``projector``, ``query``,
``gateway``) against a Kafka cluster and a ClickHouse server to scale out.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from runstream.auth.api import TokenAdmin
from runstream.auth.middleware import BearerAuthMiddleware
from runstream.auth.registry import TokenRegistry
from runstream.auth.tokens import load_or_create_token
from runstream.errors import RunstreamError
from runstream.eventlog.factory import open_event_log
from runstream.eventlog.port import EventLog
from runstream.gateway.hub import LiveHub
from runstream.gateway.snapshots import GatewayStore
from runstream.gateway.websocket import GatewayService
from runstream.http import JSONResponse
from runstream.ingest.api import IngestService
from runstream.projector.projector import Projector
from runstream.query.api import QueryService
from runstream.server.consistency import ConsistencyService
from runstream.settings import Settings
from runstream.store.clickhouse import ProjectionStore
from runstream.store.generations import GENERATION_CHECK_SECONDS
from runstream.studio import studio_routes

log = logging.getLogger("runstream.server")


class Service(enum.Enum):
    INGEST = "ingest"
    PROJECTOR = "projector"
    QUERY = "query"
    GATEWAY = "gateway"


ALL_SERVICES = frozenset(Service)


@dataclass
class Runtime:
    """What a running application holds: its settings, ports and background services."""

    settings: Settings
    services: frozenset[Service]
    token: str
    token_created: bool
    log: EventLog
    tokens: TokenRegistry
    store: ProjectionStore | None = None
    projector: Projector | None = None
    hub: LiveHub | None = None
    gateway: GatewayService | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def resolve_token(settings: Settings) -> tuple[str, bool]:
    if settings.token:
        return settings.token, False
    return load_or_create_token(settings.token_file)


def create_app(settings: Settings, services: Collection[Service] = ALL_SERVICES) -> Starlette:
    """The application; its lifespan starts the event log, the store and background tasks."""
    wanted = frozenset(services)
    token, created = resolve_token(settings)
    event_log = open_event_log(settings)
    registry = TokenRegistry(token, event_log, settings.tokens_topic)
    runtime = Runtime(settings, wanted, token, created, event_log, registry)
    needs_store = bool(wanted & {Service.PROJECTOR, Service.QUERY, Service.GATEWAY})
    if needs_store:
        runtime.store = ProjectionStore(settings.resolved_clickhouse_dsn, settings.clickhouse_database)

    routes: list[BaseRoute] = [Route("/healthz", _health, methods=["GET"]), *TokenAdmin(registry).routes()]
    if Service.INGEST in wanted:
        routes += IngestService(
            event_log,
            events_topic=settings.events_topic,
            max_body_bytes=settings.max_body_bytes,
            max_event_bytes=settings.max_event_bytes,
        ).routes()
    if Service.QUERY in wanted and runtime.store is not None:
        routes += QueryService(runtime.store).routes()
        routes += ConsistencyService(
            runtime.store, group=settings.projector_group, topic=settings.events_topic
        ).routes()
    if Service.GATEWAY in wanted:
        snapshots = None
        if runtime.store is not None:
            snapshots = GatewayStore(
                runtime.store, group=settings.projector_group, topic=settings.events_topic
            )
        runtime.hub = LiveHub(event_log, settings.events_topic, store=snapshots)
        runtime.gateway = GatewayService(runtime.hub)
        registry.on_revoke(runtime.gateway.token_revoked)
        routes += runtime.gateway.routes()
    if Service.QUERY in wanted:
        routes += studio_routes()  # the web UI, served beside the API it reads

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await _start(runtime)
        try:
            yield
        finally:
            await _stop(runtime)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(
                BearerAuthMiddleware, registry=registry, max_sockets_per_token=settings.max_sockets_per_token
            )
        ],
    )
    app.state.runtime = runtime
    return app


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _start(runtime: Runtime) -> None:
    settings = runtime.settings
    await runtime.log.start()
    await runtime.log.create_topic(settings.events_topic, settings.partitions)
    await runtime.log.create_topic(settings.deadletter_topic, settings.partitions)
    await runtime.tokens.start()
    if runtime.store is not None:
        await runtime.store.start()
        runtime.tasks.append(asyncio.create_task(_follow_generations(runtime.store), name="generations"))
    if Service.PROJECTOR in runtime.services and runtime.store is not None:
        runtime.projector = Projector(
            runtime.log,
            runtime.store,
            events_topic=settings.events_topic,
            deadletter_topic=settings.deadletter_topic,
            group=settings.projector_group,
        )
        runtime.tasks.append(asyncio.create_task(_supervise(runtime.projector), name="projector"))
    if runtime.hub is not None:
        await runtime.hub.start()
    if runtime.gateway is not None:
        await runtime.gateway.start()


async def _follow_generations(store: ProjectionStore) -> None:
    """Move to the projection generation a replay (``runstream replay``) switched to."""
    while True:
        await asyncio.sleep(GENERATION_CHECK_SECONDS)
        try:
            if await store.refresh():
                log.info("projections: now reading %s", store.database)
        except RunstreamError as exc:
            log.warning("projections: cannot check for a newer generation: %s", exc)


async def _supervise(projector: Projector) -> None:
    try:
        await projector.run()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("projector stopped on an error it cannot retry")
        raise


async def _stop(runtime: Runtime) -> None:
    if runtime.projector is not None:
        runtime.projector.stop()
    for task in runtime.tasks:
        task.cancel()
    for task in runtime.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    runtime.tasks.clear()
    if runtime.gateway is not None:
        await runtime.gateway.close()
    if runtime.hub is not None:
        await runtime.hub.close()
    if runtime.store is not None:
        await runtime.store.close()
    await runtime.tokens.close()
    await runtime.log.close()
