"""Runstream: live tracking of machine-learning runs.

import runstream
with runstream.start_run("mnist", compute="gpu-cluster") as run:
    for step in range(100):
        run.log("loss", 1 / (step + 1))
"""

from runstream.sdk import (
    LoggingError,
    Run,
    RunStateError,
    RunStatus,
    SnapshotTooLargeError,
    get_run,
    start_run,
)

__version__ = "0.1.0"


def flush(timeout: float | None = None) -> bool:
    """Send everything logged so far in this process; True once all of it is acknowledged."""
    from runstream.sdk.client import get_client

    return get_client().flush(timeout)


__all__ = [
    "LoggingError",
    "Run",
    "RunStateError",
    "RunStatus",
    "SnapshotTooLargeError",
    "__version__",
    "flush",
    "get_run",
    "start_run",
]
