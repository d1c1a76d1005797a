"""The SDK's engine: a bounded in-memory buffer, the durable spool and a sender thread.

Logging calls append a tuple to the buffer and return (a few microseconds). The
sender thread wakes every ``flush_interval`` seconds (or when the buffer holds a
batch's worth), turns records into events, writes them to the spool, then sends
spooled batches oldest first and removes each once acknowledged. When the server
or broker is unreachable, batches stay in the spool and are retried with
exponential backoff and jitter; nothing is dropped. If the buffer reaches
``max_buffered`` records (the sender cannot even spool, e.g. the disk is full),
logging calls wait for room rather than lose points.

A hard kill loses at most the records logged in the last ``flush_interval``
seconds (not yet spooled). A forked child (a dataloader worker) gets a fresh
buffer, spool owner and sender thread of its own.
"""

from __future__ import annotations

import atexit
import encodings.idna  # noqa: F401 - loaded before any fork(), not lazily by a first connect
import logging
import os
import random
import threading
import time
from collections import deque
from typing import Any

import orjson

from runstream.errors import RunstreamError
from runstream.events.validation import EventValidator
from runstream.sdk.batching import Record, RunRef, build_events, split_event
from runstream.sdk.config import ClientConfig
from runstream.sdk.reader import Reader
from runstream.sdk.spool import Spool
from runstream.sdk.transport.port import Delivery, Transport, TransportError, open_transport

log = logging.getLogger("runstream.sdk")

MAX_EVENTS_PER_BATCH = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024


class Client:
    def __init__(self, config: ClientConfig, transport: Transport | None = None) -> None:
        self.config = config
        # Made now, on the caller's thread: a lazy import on the sender thread could be cut in
        # half by fork() and leave a forked child with a half-imported module.
        self._transport: Transport | None = transport or open_transport(
            config.uri, config.token, topic_prefix=config.topic_prefix
        )
        self._buffer: deque[Record] = deque()
        self._unspooled: deque[list[dict[str, Any]]] = deque()
        """Batches built from the buffer that the spool could not take yet (e.g. its disk is full)."""
        self._cond = threading.Condition()
        self._spool = Spool(config.spool_dir)
        self._validator = EventValidator()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._in_flight = False
        self._cycle_lock = threading.Lock()
        self._flush_requested = False
        self._backoff_until = 0.0
        self._backoff = 0.2
        self.last_error: str | None = None
        self.rejected: list[dict[str, Any]] = []
        self._refs: dict[str, RunRef] = {}
        self._reader: Reader | None = None
        self._pid = os.getpid()

    # -- the logging thread's side ---------------------------------------------------------
    def add(self, record: Record) -> None:
        buffer = self._buffer
        if len(buffer) >= self.config.max_buffered:
            self._wait_for_room()
        buffer.append(record)
        if self._thread is None or self._pid != os.getpid():
            self._ensure_thread()

    def _wait_for_room(self) -> None:
        log.warning("runstream: %d records buffered; waiting for the sender", len(self._buffer))
        with self._cond:
            self._cond.notify_all()
        while len(self._buffer) >= self.config.max_buffered:
            time.sleep(0.01)

    def ref(self, run_id: str, experiment: str, workspace: str) -> RunRef:
        ref = self._refs.get(run_id)
        if ref is None:
            ref = self._refs[run_id] = RunRef(run_id, experiment, workspace)
        return ref

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything logged so far; True once all of it is acknowledged."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._ensure_thread()
        while True:
            with self._cond:
                self._flush_requested = True
                self._backoff_until = min(self._backoff_until, time.monotonic() + 0.05)
                self._cond.notify_all()
            idle = not self._buffer and not self._unspooled and not self._in_flight
            if idle and self._spool.pending()[0] == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    # -- the sender thread ----------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="runstream-sender", daemon=True)
            self._thread.start()

    def _after_fork(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._in_flight = False
        self._unspooled = deque()
        self._cycle_lock = threading.Lock()
        self._thread = None
        self._transport = None
        self._reader = None
        self._spool.reset_after_fork()
        for ref in self._refs.values():
            ref.seq += 1 << 32  # a child's events order after its parent's up to the fork

    def reader(self) -> Reader:
        """The read side (query API and gateway), shared by this process's runs."""
        if self._reader is None:
            self._reader = Reader(self.config)
        return self._reader

    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = open_transport(
                self.config.uri, self.config.token, topic_prefix=self.config.topic_prefix
            )
        return self._transport

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._unspooled and not self._closing:
                    # The spool failed: retry it after the backoff, not in a hot loop.
                    self._cond.wait(max(self._backoff_until - time.monotonic(), self.config.flush_interval))
                elif not self._buffer and not self._flush_requested and not self._closing:
                    self._cond.wait(self.config.flush_interval)
                self._flush_requested = False
                self._in_flight = True
                closing = self._closing
            try:
                self._spool_buffer()
                self._send_spooled()
            except RunstreamError as exc:
                self._note_failure(str(exc))
            except Exception as exc:
                log.exception("runstream: sender error")
                self._note_failure(repr(exc))
            self._in_flight = False
            if closing and not self._buffer:
                return

    def _spool_buffer(self) -> None:
        """Move the buffer into the spool; what the spool cannot take waits for the next cycle.

        While the spool fails (``SpoolError``) the buffer is left alone, so it fills up
        to ``max_buffered`` and logging calls wait: nothing logged is dropped.
        """
        self._spool_unspooled()
        records: list[Record] = []
        buffer = self._buffer
        while buffer:
            records.append(buffer.popleft())
        if not records:
            return
        events = []
        for _, event in build_events(records):
            try:
                self._validator.validate(event)
            except RunstreamError as exc:
                log.error("runstream: event refused before sending (%s): %s", exc, event["type"])
                self.rejected.append({"event_id": event["event_id"], "message": str(exc)})
                continue
            events.append(event)
        for start in range(0, len(events), MAX_EVENTS_PER_BATCH):
            self._unspooled.append(events[start : start + MAX_EVENTS_PER_BATCH])
        self._spool_unspooled()

    def _spool_unspooled(self) -> None:
        while self._unspooled:
            chunk = self._unspooled[0]
            self._spool.put(orjson.dumps(chunk), len(chunk))
            self._unspooled.popleft()

    def _send_spooled(self) -> None:
        if time.monotonic() < self._backoff_until:
            return
        while True:
            batches = self._spool.oldest()
            if not batches:
                return
            for batch in batches:
                events: list[dict[str, Any]] = orjson.loads(batch.body)
                try:
                    deliveries = self._deliver(batch.body, events)
                except TransportError as exc:
                    if not exc.retriable:
                        log.error("runstream: batch refused, kept in the spool for inspection: %s", exc)
                    self._note_failure(str(exc))
                    return
                self._spool.remove(batch.batch_id)
                self._backoff = 0.2
                self.last_error = None
                for delivery in deliveries:
                    self._note_delivery(delivery)

    def _deliver(self, body: bytes, events: list[dict[str, Any]]) -> list[Delivery]:
        """Deliver a batch; one the server finds too large goes in halves, in order.

        A single event too large goes as two events with half its points or lines each
        (``split_event``); one that cannot be split can never be delivered: it is refused
        (logged, in ``rejected``) so that the events after it are not held up. A half
        delivered before a later failure is sent again with its batch; event ids make
        that harmless.
        """
        try:
            return [self.transport().deliver(body, events)]
        except TransportError as exc:
            if not exc.too_large:
                raise
            if len(events) == 1:
                parts = split_event(events[0])
                if parts is None:
                    refused = {"event_id": events[0]["event_id"], "message": str(exc)}
                    return [Delivery(rejected=[refused])]
                events = parts
        half = len(events) // 2
        first, rest = events[:half], events[half:]
        return self._deliver(orjson.dumps(first), first) + self._deliver(orjson.dumps(rest), rest)

    def _note_delivery(self, delivery: Delivery) -> None:
        for run_id, partition, offset in delivery.positions:
            ref = self._refs.get(run_id)
            if ref is not None and offset > ref.acked.get(partition, -1):
                ref.acked[partition] = offset
        if delivery.rejected:
            log.error(
                "runstream: the server refused %d events: %s",
                len(delivery.rejected),
                delivery.rejected[:3],
            )
            self.rejected.extend(delivery.rejected)

    def _note_failure(self, message: str) -> None:
        if message != self.last_error:
            log.warning("runstream: %s; batches kept in the spool, retrying", message)
        self.last_error = message
        self._backoff_until = time.monotonic() + self._backoff * random.uniform(0.5, 1.5)
        self._backoff = min(self._backoff * 2, 10.0)

    def close(self, timeout: float = 30.0) -> None:
        if self._pid != os.getpid():
            return
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._transport is not None:
            self._transport.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._unspooled:
            log.error(
                "runstream: %d events could not be written to the spool (%s) and are lost at exit",
                sum(len(chunk) for chunk in self._unspooled),
                self.last_error,
            )
        pending = self._spool.pending()
        self._spool.close()
        if pending[0]:
            log.warning(
                "runstream: %d events not delivered yet (%s); they stay in %s and are sent by the next run",
                pending[1],
                self.last_error,
                self._spool.path,
            )


_client: Client | None = None
_client_lock = threading.Lock()


def get_client() -> Client:
    global _client
    with _client_lock:
        if _client is None:
            _client = Client(ClientConfig.from_env())
            atexit.register(_close_at_exit)
        return _client


def set_client(client: Client | None) -> Client | None:
    """Replace the process's client (tests, notebooks switching servers); returns the old one."""
    global _client
    with _client_lock:
        old, _client = _client, client
        return old


def _before_fork() -> None:
    if _client is not None:
        _client._cycle_lock.acquire()
        _client._spool.lock.acquire()


def _after_fork_in_parent() -> None:
    if _client is not None:
        _client._spool.lock.release()
        _client._cycle_lock.release()


def _after_fork_in_child() -> None:
    if _client is not None:
        _client._after_fork()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


def _close_at_exit() -> None:
    from runstream.sdk.run import finish_active_runs

    finish_active_runs()
    if _client is not None:
        _client.close()
