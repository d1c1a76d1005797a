"""Delivering batches straight to Kafka, for jobs inside the cluster.

The idempotent aiokafka producer of ``runstream.eventlog.kafka`` runs on an event
loop in a thread of its own; the SDK's sender thread hands it batches and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any, TypeVar

import orjson

from runstream.errors import EventLogError
from runstream.eventlog.kafka import KafkaEventLog
from runstream.sdk.transport.port import Delivery, Transport, TransportError

T = TypeVar("T")


class KafkaTransport(Transport):
    def __init__(self, bootstrap: str, *, topic: str, send_timeout: float = 30.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._log = KafkaEventLog(bootstrap, send_timeout=send_timeout, client_id="runstream-sdk")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="runstream-kafka", daemon=True)
        self._thread.start()
        self._started = False

    def _call(self, coro: Any, timeout: float = 60.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def deliver(self, body: bytes, events: list[dict[str, Any]]) -> Delivery:
        records = [(e["run_id"].encode(), orjson.dumps(e)) for e in events]
        try:
            if not self._started:
                self._call(self._log.start())
                self._started = True
            positions = self._call(self._log.append(self.topic, records))
        except (EventLogError, TimeoutError) as exc:
            if self._started:
                self._restart()
            raise TransportError(f"Kafka at {self.bootstrap}: {exc}") from exc
        return Delivery(
            positions=[(e["run_id"], p.partition, p.offset) for e, p in zip(events, positions, strict=True)]
        )

    def _restart(self) -> None:
        with contextlib.suppress(Exception):  # best effort; a fresh producer is made next time
            self._call(self._log.close(), timeout=10.0)
        self._log = KafkaEventLog(
            self.bootstrap, send_timeout=self._log.send_timeout, client_id="runstream-sdk"
        )
        self._started = False

    def close(self) -> None:
        if self._started:
            with contextlib.suppress(Exception):  # closing at exit must not raise
                self._call(self._log.close(), timeout=10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._loop.close()
