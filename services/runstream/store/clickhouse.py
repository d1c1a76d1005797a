"""ClickHouse access for every service, through clickhouse-connect.

One code path for both deployments: ``chdb:///path`` is the real ClickHouse
engine in this process, ``http(s)://host:8123`` a server. clickhouse-connect is
synchronous, so calls run on a small thread pool, each thread with clients of its
own (so the queries of one request can run side by side). Values are always bound as
server-side parameters (``{name:Type}``); SQL text is never built from input.
clickhouse-connect errors become ``StoreError`` here.

The projection tables live in a generation database (``store.generations``): a
store made without ``generation`` follows the generation in use, and ``refresh``
moves it to a newer one after a replay switched over.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from runstream.errors import ConfigError, StoreError
from runstream.store.generations import (
    Generation,
    active_generation,
    ensure_front,
    generation_database,
    next_generation,
    publish_views,
    record_switch,
)
from runstream.store.migrations import apply_migrations

T = TypeVar("T")

_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")


class ProjectionStore:
    """The ClickHouse databases holding Runstream's projections.

    ``name`` is the front database of the settings; ``database`` the generation
    database the store reads and writes (see ``store.generations``).
    """

    def __init__(
        self, dsn: str, database: str, *, generation: Generation | None = None, threads: int = 4
    ) -> None:
        if not _DATABASE_NAME.match(database):
            raise ConfigError(
                f"ClickHouse database name must match {_DATABASE_NAME.pattern}; got {database!r}"
            )
        self.dsn = dsn
        self.name = database
        self.follows_active = generation is None
        self.generation = generation
        self.switch_lock = asyncio.Lock()
        """Held while a batch is written, and while the store moves to another generation."""
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._admin: Any = None
        self._local = threading.local()

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    @property
    def database(self) -> str:
        if self.generation is None:
            raise StoreError("projection store is not started")
        return self.generation.database

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreError("projection store is not started")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except ClickHouseError as exc:
            raise StoreError(f"ClickHouse ({self.name}): {exc}") from exc

    def _connect(self, database: str) -> Any:
        return clickhouse_connect.get_client(dsn=self.dsn, database=database)

    def _client(self) -> Any:
        """This thread's client on the store's generation database (called on the pool's threads)."""
        database = self.database
        clients: dict[str, Any] = self._local.__dict__.setdefault("clients", {})
        client = clients.get(database)
        if client is None:
            client = clients[database] = self._connect(database)
        return client

    async def start(self, *, migrate: bool = True) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="runstream-ch")

        def connect() -> tuple[Any, Generation]:
            admin = clickhouse_connect.get_client(dsn=self.dsn)
            ensure_front(admin, self.name)
            generation = self.generation or active_generation(admin, self.name)
            first = generation is None
            if generation is None:
                generation = Generation(1, generation_database(self.name, 1))
            admin.command(
                "CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": generation.database}
            )
            client = self._connect(generation.database)
            if migrate:
                apply_migrations(client)
            if first:
                record_switch(admin, self.name, generation, "first start")
            if first or (migrate and self.follows_active):
                publish_views(client, self.name)
            return admin, generation

        try:
            self._admin, self.generation = await self._run(connect)
        except (StoreError, OSError) as exc:
            executor, self._executor = self._executor, None
            if executor:
                executor.shutdown(wait=False)
            raise StoreError(f"cannot open ClickHouse at {self.dsn}: {exc}") from exc

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._admin = None

    # -- generations -----------------------------------------------------------------------
    async def refresh(self) -> bool:
        """Move to the generation in use if a replay switched since; True when it moved."""
        if not self.follows_active:
            return False
        admin = self._admin
        active = await self._run(lambda: active_generation(admin, self.name))
        if active is None or active == self.generation:
            return False
        async with self.switch_lock:
            self.generation = active
        return True

    async def new_generation(self) -> ProjectionStore:
        """A store on a fresh generation database, migrated, not yet in use."""
        admin = self._admin
        generation = await self._run(lambda: next_generation(admin, self.name))
        store = ProjectionStore(self.dsn, self.name, generation=generation, threads=self._threads)
        await store.start(migrate=True)
        return store

    async def activate(self, reason: str) -> None:
        """Make this store's generation the one every service uses."""
        generation, admin = self.generation, self._admin
        if generation is None:
            raise StoreError("projection store is not started")

        def switch() -> None:
            publish_views(self._client(), self.name)
            record_switch(admin, self.name, generation, reason)

        await self._run(switch)

    async def drop_generation(self, generation: Generation) -> None:
        if generation == self.generation:
            raise StoreError(f"generation {generation.number} is the one this store uses")
        admin = self._admin
        await self._run(
            lambda: admin.command(
                "DROP DATABASE IF EXISTS {db:Identifier}", parameters={"db": generation.database}
            )
        )

    # -- reads and writes ------------------------------------------------------------------
    async def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        *,
        dedup_token: str | None = None,
    ) -> None:
        if not rows:
            return
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None

        def insert() -> None:
            self._client().insert(table, rows, column_names=list(column_names), settings=settings)

        await self._run(insert)

    async def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        column_formats: Mapping[str, str] | None = None,
    ) -> list[tuple[Any, ...]]:
        formats = dict(column_formats) if column_formats else None

        def query() -> list[tuple[Any, ...]]:
            result = self._client().query(sql, parameters=dict(parameters or {}), column_formats=formats)
            return list(result.result_rows)

        return await self._run(query)

    async def query_dicts(
        self, sql: str, parameters: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        def query() -> list[dict[str, Any]]:
            result = self._client().query(sql, parameters=dict(parameters or {}))
            names = result.column_names
            return [dict(zip(names, row, strict=True)) for row in result.result_rows]

        return await self._run(query)

    async def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        def command() -> None:
            self._client().command(sql, parameters=dict(parameters or {}))

        await self._run(command)
