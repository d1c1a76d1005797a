"""The query API: runs and metrics read from the ClickHouse projections."""

from runstream.query.api import QueryService

__all__ = ["QueryService"]
