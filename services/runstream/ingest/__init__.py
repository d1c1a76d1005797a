"""The ingest API: validates events and appends the good ones to the log."""

from runstream.ingest.api import IngestService

__all__ = ["IngestService"]
