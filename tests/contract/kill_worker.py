"""A process that appends, reads as a consumer group, commits part, then waits to be killed.

Usage: python kill_worker.py ADAPTER LOCATION TOPIC GROUP COUNT COMMIT_UPTO
(LOCATION is the SQLite path for ``local`` and the bootstrap servers for ``kafka``.)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from runstream.eventlog.port import EventLog, TopicPartition


def open_log(adapter: str, location: str) -> EventLog:
    if adapter == "kafka":
        from runstream.eventlog.kafka import KafkaEventLog

        return KafkaEventLog(location, default_partitions=1)
    from runstream.eventlog.local import LocalEventLog

    return LocalEventLog(Path(location), default_partitions=1)


async def main(adapter: str, location: str, topic: str, group: str, count: int, commit_upto: int) -> None:
    log = open_log(adapter, location)
    await log.start()
    await log.create_topic(topic, 1)
    await log.append(topic, [(b"run-1", f"record-{i}".encode()) for i in range(count)])
    print("APPENDED", flush=True)
    consumer = log.consumer([topic], group=group)
    await consumer.start()
    seen = 0
    while seen < count:
        seen += len(await consumer.fetch(count, timeout=1.0))
    if commit_upto:
        await consumer.commit({TopicPartition(topic, 0): commit_upto})
    print(f"READ {seen}", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], a[3], int(a[4]), int(a[5])))
