"""The projection store: ClickHouse through clickhouse-connect (a server, or chdb in-process)."""

from runstream.store.clickhouse import ProjectionStore

__all__ = ["ProjectionStore"]
