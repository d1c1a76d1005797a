"""The event log port and its adapters (``local`` embedded, ``kafka``)."""

from runstream.eventlog.port import (
    EventLog,
    LogConsumer,
    LogPosition,
    LogRecord,
    StartAt,
    TopicPartition,
)

__all__ = ["EventLog", "LogConsumer", "LogPosition", "LogRecord", "StartAt", "TopicPartition"]
