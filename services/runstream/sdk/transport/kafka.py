"""Delivering batches straight to Kafka, for jobs inside the cluster.

The idempotent aiokafka producer of ``runstream.eventlog.kafka`` runs on an event
loop in a thread of its own; the SDK's sender thread hands it batches and waits.

A send that fails may still have written some of its records (the broker stored
them, then the answer was lost); the producer is then replaced, and a new
producer's retry is not deduplicated by the broker. So before it sends a batch
again, the transport reads what reached the log since its last acknowledged
delivery (``floor``) and sends only the events that are not there: a batch is on
the log once, whatever failed in between. The replaced producer may still write
what it held (closing it waits for its batches): nothing is read back or sent
until it is closed. (A batch left by a process that died is resent by the next
one without this check: that process has no floor.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import Future
from typing import Any, TypeVar

import orjson

from runstream.errors import EventLogError
from runstream.eventlog.kafka import KafkaEventLog
from runstream.eventlog.port import TopicPartition
from runstream.sdk.transport.port import Delivery, Transport, TransportError

T = TypeVar("T")

RETIRE_TIMEOUT = 300.0
"""Seconds a replaced producer may take to close (the broker may be down that long) before it is
cancelled and what it held is sent again."""


class KafkaTransport(Transport):
    def __init__(self, bootstrap: str, *, topic: str, send_timeout: float = 30.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._log = KafkaEventLog(bootstrap, send_timeout=send_timeout, client_id="runstream-sdk")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="runstream-kafka", daemon=True)
        self._thread.start()
        self._started = False
        self._floor: dict[int, int] | None = None
        """Per partition: the records below this offset hold nothing this transport still has to send."""
        self._unsure = False
        """The last send failed: some of its records may be on the log."""
        self._retired: Future[None] | None = None
        self._retired_at = 0.0

    def _call(self, coro: Any, timeout: float = 60.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def deliver(self, body: bytes, events: list[dict[str, Any]]) -> Delivery:
        self._check_retired()
        try:
            if not self._started:
                self._call(self._log.start())
                self._started = True
            if self._floor is None:
                self._floor = self._call(self._log.end_offsets(self.topic))
            found: dict[str, tuple[int, int]] = {}
            if self._unsure:
                found = self._call(self._already_on_log(events), timeout=self._log.send_timeout * 2 + 10)
                self._unsure = False
            todo = [e for e in events if e["event_id"] not in found]
            self._unsure = True
            appended = self._call(
                self._log.append(self.topic, [(e["run_id"].encode(), orjson.dumps(e)) for e in todo])
            )
            self._unsure = False
        except (EventLogError, TimeoutError) as exc:
            if self._started:
                self._restart()
            raise TransportError(f"Kafka at {self.bootstrap}: {exc}") from exc
        for event, position in zip(todo, appended, strict=True):
            found[event["event_id"]] = (position.partition, position.offset)
        positions = [(e["run_id"], *found[e["event_id"]]) for e in events]
        for _, partition, offset in positions:
            self._floor[partition] = max(self._floor.get(partition, 0), offset + 1)
        return Delivery(positions=positions)

    async def _already_on_log(self, events: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
        """(partition, offset) of each of ``events`` that is on the log above the floor."""
        assert self._floor is not None
        wanted = {e["event_id"] for e in events}
        ends = await self._log.end_offsets(self.topic)
        todo = {p: end for p, end in ends.items() if end > self._floor.get(p, 0)}
        found: dict[str, tuple[int, int]] = {}
        if not todo:
            return found
        consumer = self._log.consumer([self.topic])
        await consumer.start()
        try:
            for partition, end in ends.items():
                start = self._floor.get(partition, 0) if partition in todo else end
                await consumer.seek(TopicPartition(self.topic, partition), start)
            deadline = time.monotonic() + self._log.send_timeout
            while todo:
                if time.monotonic() > deadline:
                    raise EventLogError(f"cannot read back {self.topic} up to {ends} to check a resend")
                for record in await consumer.fetch(10_000, timeout=1.0):
                    limit = todo.get(record.partition)
                    if limit is None or record.offset >= limit:
                        continue
                    event_id = orjson.loads(record.value).get("event_id")
                    if event_id in wanted:
                        found[event_id] = (record.partition, record.offset)
                    if record.offset >= limit - 1:
                        del todo[record.partition]
        finally:
            await consumer.close()
        return found

    def _restart(self) -> None:
        """Replace the producer; the old one is closed in the background (it may still send)."""
        self._retired = asyncio.run_coroutine_threadsafe(self._log.close(), self._loop)
        self._retired_at = time.monotonic()
        self._log = KafkaEventLog(
            self.bootstrap, send_timeout=self._log.send_timeout, client_id="runstream-sdk"
        )
        self._started = False

    def _check_retired(self) -> None:
        """A replaced producer may still write the batch it held when it failed (its close waits for
        it): nothing is read back or sent again until it is done, or given up after a long wait."""
        retired = self._retired
        if retired is None:
            return
        if not retired.done():
            if time.monotonic() - self._retired_at < RETIRE_TIMEOUT:
                raise TransportError(f"Kafka at {self.bootstrap}: the previous producer is still closing")
            retired.cancel()
        self._retired = None

    def close(self) -> None:
        if self._started:
            with contextlib.suppress(Exception):  # closing at exit must not raise
                self._call(self._log.close(), timeout=10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._loop.close()
