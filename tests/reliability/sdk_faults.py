"""What the SDK-side fault tests share: a recording SDK client, a broker of their own, waiting for
everything to land, a websocket reader, and a loopback proxy that cuts responses."""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import runstream
from runstream.live.messages import Event
from runstream.live.sync import follow_run
from runstream.sdk.client import Client, set_client
from runstream.sdk.config import ClientConfig
from runstream.sdk.transport import open_transport
from runstream.settings import Settings
from runstream.store.clickhouse import ProjectionStore
from tests.conftest import KAFKA_PORT, load_broker_module
from tests.reliability.checker import DeliveryLedger, DeliveryReport, RecordingTransport
from tests.sdk.conftest import ThreadServer

OWN_BROKER_PORT = KAFKA_PORT + 10
"""A broker of these tests' own (killed and restarted), beside the session's: its port + 10."""


@dataclass
class OwnBroker:
    """A real Kafka broker the tests may kill, stop and start again (data kept across restarts)."""

    module: ModuleType
    data_dir: Path
    port: int = OWN_BROKER_PORT

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.module.start(port=self.port, controller_port=self.port + 1, data_dir=self.data_dir, quiet=True)

    def kill(self) -> None:
        self.module.kill(data_dir=self.data_dir, port=self.port, quiet=True)

    def stop(self) -> None:
        self.module.stop(data_dir=self.data_dir, port=self.port, quiet=True)


def own_broker(data_dir: Path) -> OwnBroker:
    return OwnBroker(load_broker_module(), data_dir)


def recording_client(
    server: ThreadServer,
    spool: Path,
    ledger: DeliveryLedger,
    *,
    uri: str | None = None,
    writer: str = "test",
) -> Client:
    """An SDK client of ``server`` (or writing to ``uri``) whose acknowledged events go to ``ledger``."""
    target = uri or server.base_url
    prefix = server.settings.topic_prefix
    inner = open_transport(target, server.token, topic_prefix=prefix)
    config = ClientConfig(
        uri=target,
        api=server.base_url,
        token=server.token,
        spool_dir=spool,
        topic_prefix=prefix,
        flush_interval=0.05,
    )
    return Client(config, transport=RecordingTransport(inner, ledger, writer=writer))


@contextlib.contextmanager
def active_client(client: Client) -> Iterator[Client]:
    old = set_client(client)
    try:
        yield client
    finally:
        client.close(timeout=10)
        set_client(old)


def start_run(experiment: str, run_id: str | None = None) -> runstream.Run:
    return runstream.start_run(experiment, run_id=run_id, capture_output=False, snapshot=False)


class ClickHouseProbe:
    """Reads the projections of ``settings`` from this (synchronous) test: a store on a loop of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.store = ProjectionStore(settings.resolved_clickhouse_dsn, settings.clickhouse_database)
        self._call(self.store.start())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(120)

    def report(self, ledger: DeliveryLedger, run_ids: list[str] | None = None) -> DeliveryReport:
        report: DeliveryReport = self._call(ledger.report_clickhouse(self.store, run_ids))
        return report

    def query(self, sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._call(self.store.query(sql, parameters))
        return rows

    def raw_event_count(self, run_id: str) -> int:
        rows = self.query("SELECT count() FROM raw_events FINAL WHERE run_id = {run:String}", {"run": run_id})
        return int(rows[0][0])

    def wait_landed(
        self, ledger: DeliveryLedger, run_ids: list[str] | None = None, timeout: float = 180.0
    ) -> tuple[DeliveryReport, float]:
        """The report once nothing acknowledged is missing (or at ``timeout``), and the seconds it took."""
        started = time.monotonic()
        while True:
            report = self.report(ledger, run_ids)
            if report.lost == 0 or time.monotonic() - started > timeout:
                return report, time.monotonic() - started
            time.sleep(0.5)

    def close(self) -> None:
        self._call(self.store.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextlib.contextmanager
def clickhouse_probe(settings: Settings) -> Iterator[ClickHouseProbe]:
    probe = ClickHouseProbe(settings)
    try:
        yield probe
    finally:
        probe.close()


def stream_of(server: ThreadServer, run_id: str, count: int, timeout: float = 60.0) -> list[Event]:
    """The first ``count`` events a websocket subscriber gets for ``run_id`` from its beginning."""
    received: list[Event] = []
    for message in follow_run(server.base_url, server.token, run_id, cursor=-1, timeout=timeout):
        if isinstance(message, Event):
            received.append(message)
            if len(received) >= count:
                break
    return received


@dataclass
class CuttingProxy:
    """A loopback TCP proxy in front of ``upstream`` that drops every ``cut_every``-th response.

    HTTP/1.1 without pipelining: a response begins when the upstream sends bytes after
    the client sent some. By then the server has read and handled the whole request,
    so a cut response is one whose request was accepted; the proxy closes both
    sockets instead of passing it on.
    """

    upstream: tuple[str, int]
    cut_every: int = 3
    responses: int = 0
    cut: int = 0
    port: int = 0
    _listener: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> CuttingProxy:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            relay = threading.Thread(target=self._relay, args=(client,), daemon=True)
            relay.start()
            self._threads.append(relay)

    def _next_response_is_cut(self) -> bool:
        with self._lock:
            self.responses += 1
            if self.responses % self.cut_every == 0:
                self.cut += 1
                return True
            return False

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        with selectors.DefaultSelector() as selector, client, upstream:
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            request_pending = False
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    if source is client:
                        request_pending = True
                    elif request_pending:
                        request_pending = False
                        if self._next_response_is_cut():
                            return
                    try:
                        key.data.sendall(data)
                    except OSError:
                        return

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        for thread in self._threads:
            thread.join(5)
