"""Shared test fixtures: one real Kafka broker per session, one embedded ClickHouse path.

The broker comes from ``infra/kafka/broker.py`` (Apache Kafka from Maven Central,
KRaft, loopback). It is started once for the whole session if it is not already
running, and stopped at the end if this session started it. Each test isolates
itself by topic prefix, consumer group and ClickHouse database name.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from runstream.eventlog.port import EventLog
from runstream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
KAFKA_PORT = int(os.environ.get("RUNSTREAM_TEST_KAFKA_PORT", "19092"))
KAFKA_CONTROLLER_PORT = KAFKA_PORT + 1
ADAPTERS = ["local", "kafka"]


def load_broker_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runstream_kafka_broker", ROOT / "infra/kafka/broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[ModuleType]:
    broker = load_broker_module()
    already = broker.is_running(port=KAFKA_PORT)
    broker.start(port=KAFKA_PORT, controller_port=KAFKA_CONTROLLER_PORT, quiet=True)
    yield broker
    if not already:
        broker.stop(port=KAFKA_PORT)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: ModuleType) -> str:
    return f"127.0.0.1:{KAFKA_PORT}"


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one embedded ClickHouse data path of this process (chdb allows one per process)."""
    return tmp_path_factory.mktemp("clickhouse")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "kafka":
        request.getfixturevalue("kafka_bootstrap")
    return name


def isolated_settings(data_dir: Path, chdb_path: Path, **changes: Any) -> Settings:
    """Server settings of their own for one test: data folder, ClickHouse database, topics."""
    base = Settings(
        data_dir=data_dir,
        clickhouse_dsn=f"chdb://{chdb_path}",
        clickhouse_database=unique("t"),
        topic_prefix=unique("rs"),
        partitions=3,
        token="test-token",
        port=0,
    )
    return base.with_changes(**changes) if changes else base


@pytest.fixture
def settings(adapter: str, tmp_path: Path, chdb_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Server settings isolated for one test, on the chosen event-log adapter."""
    kafka = request.getfixturevalue("kafka_bootstrap") if adapter == "kafka" else None
    return isolated_settings(tmp_path / "data", chdb_path, kafka_bootstrap=kafka)


@pytest.fixture
def settings_factory(tmp_path: Path, chdb_path: Path) -> Any:
    """Settings like ``settings`` for a test that picks its own event log."""

    def make(**changes: Any) -> Settings:
        return isolated_settings(tmp_path / "data", chdb_path, **changes)

    return make


@pytest.fixture
async def event_log(settings: Settings) -> AsyncIterator[EventLog]:
    from runstream.eventlog.factory import open_event_log

    log = open_event_log(settings)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many tests ran against the real Kafka broker, so the output shows it."""
    passed = terminalreporter.stats.get("passed", [])
    on_kafka = [r for r in passed if "[kafka" in r.nodeid]
    if on_kafka:
        broker = load_broker_module()
        version = broker.fetched_version()
        terminalreporter.write_line(
            f"{len(on_kafka)} tests passed against the real Apache Kafka {version} broker "
            f"at 127.0.0.1:{KAFKA_PORT} (produced to and consumed from it)"
        )
