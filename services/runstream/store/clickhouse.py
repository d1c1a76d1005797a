"""ClickHouse access for every service, through clickhouse-connect.

One code path for both deployments: ``chdb:///path`` is the real ClickHouse
engine in this process, ``http(s)://host:8123`` a server. clickhouse-connect is
synchronous, so calls run on a small thread pool. Values are always bound as
server-side parameters (``{name:Type}``); SQL text is never built from input.
clickhouse-connect errors become ``StoreError`` here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from runstream.errors import ConfigError, StoreError
from runstream.store.migrations import apply_migrations

T = TypeVar("T")

_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ProjectionStore:
    """The ClickHouse database holding Runstream's projections."""

    def __init__(self, dsn: str, database: str, *, threads: int = 4) -> None:
        if not _DATABASE_NAME.match(database):
            raise ConfigError(
                f"ClickHouse database name must match {_DATABASE_NAME.pattern}; got {database!r}"
            )
        self.dsn = dsn
        self.database = database
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._client: Any = None

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreError("projection store is not started")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except ClickHouseError as exc:
            raise StoreError(f"ClickHouse ({self.database}): {exc}") from exc

    async def start(self, *, migrate: bool = True) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="runstream-ch")

        def connect() -> Any:
            admin = clickhouse_connect.get_client(dsn=self.dsn)
            admin.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": self.database})
            client = clickhouse_connect.get_client(dsn=self.dsn, database=self.database)
            if migrate:
                apply_migrations(client)
            return client

        try:
            self._client = await self._run(connect)
        except (StoreError, OSError) as exc:
            executor, self._executor = self._executor, None
            if executor:
                executor.shutdown(wait=False)
            raise StoreError(f"cannot open ClickHouse at {self.dsn}: {exc}") from exc

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._client = None

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
        client = self._client

        def insert() -> None:
            client.insert(table, rows, column_names=list(column_names), settings=settings)

        await self._run(insert)

    async def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        client = self._client

        def query() -> list[tuple[Any, ...]]:
            return list(client.query(sql, parameters=dict(parameters or {})).result_rows)

        return await self._run(query)

    async def query_dicts(
        self, sql: str, parameters: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        client = self._client

        def query() -> list[dict[str, Any]]:
            result = client.query(sql, parameters=dict(parameters or {}))
            names = result.column_names
            return [dict(zip(names, row, strict=True)) for row in result.result_rows]

        return await self._run(query)

    async def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        client = self._client

        def command() -> None:
            client.command(sql, parameters=dict(parameters or {}))

        await self._run(command)
