"""Choosing the event log adapter from settings."""

from __future__ import annotations

from runstream.eventlog.port import EventLog
from runstream.settings import Settings


def open_event_log(settings: Settings) -> EventLog:
    """The Kafka log when ``kafka_bootstrap`` is set, else the embedded local log."""
    if settings.kafka_bootstrap:
        from runstream.eventlog.kafka import KafkaEventLog

        return KafkaEventLog(settings.kafka_bootstrap, default_partitions=settings.partitions)
    from runstream.eventlog.local import LocalEventLog

    return LocalEventLog(
        settings.data_dir / "eventlog" / "log.sqlite3", default_partitions=settings.partitions
    )
