"""The producer SDK: log a run's lifecycle, metrics, values and output from a training job."""

from runstream.sdk.lifecycle import RunStateError, RunStatus
from runstream.sdk.run import Run, get_run, start_run
from runstream.sdk.snapshot import SnapshotTooLargeError
from runstream.sdk.values import LoggingError

__all__ = [
    "LoggingError",
    "Run",
    "RunStateError",
    "RunStatus",
    "SnapshotTooLargeError",
    "get_run",
    "start_run",
]
