"""Settings, parsed once at start from the environment and passed in explicitly.

Every setting is an environment variable with a default (README lists them):

RUNSTREAM_DATA_DIR            ~/.runstream     local event log, embedded ClickHouse, token
RUNSTREAM_KAFKA               (unset)          host:port[,host:port]: use Kafka, not the local log
RUNSTREAM_CLICKHOUSE          chdb:///<data dir>/clickhouse   clickhouse-connect DSN
RUNSTREAM_CLICKHOUSE_DATABASE runstream        database holding the projections
RUNSTREAM_TOPIC_PREFIX        runstream        topics <prefix>.events, .deadletter, .tokens
RUNSTREAM_PARTITIONS          4                partitions of a topic Runstream creates
RUNSTREAM_TOKEN               (unset)          the server's admin token; else <data dir>/token (made)
RUNSTREAM_MAX_SOCKETS_PER_TOKEN 1000         live websockets one token may hold per process
RUNSTREAM_HOST                127.0.0.1        address the server listens on
RUNSTREAM_PORT                8555             port the server listens on
RUNSTREAM_MAX_BODY_BYTES      16777216         largest request body accepted
RUNSTREAM_MAX_EVENT_BYTES     900000           largest encoded event (Kafka's default message limit is 1 MiB)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from runstream.errors import ConfigError


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer; got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}; got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a Runstream server process needs to know."""

    data_dir: Path
    """Where the embedded event log, embedded ClickHouse and the token live."""
    kafka_bootstrap: str | None = None
    """Kafka bootstrap servers; None means the embedded local event log."""
    clickhouse_dsn: str = ""
    """clickhouse-connect DSN; empty means ``chdb:///<data_dir>/clickhouse``."""
    clickhouse_database: str = "runstream"
    topic_prefix: str = "runstream"
    partitions: int = 4
    token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8555
    max_body_bytes: int = 16 * 1024 * 1024
    max_event_bytes: int = 900_000
    projector_group: str = field(default="runstream-projector")
    max_sockets_per_token: int = 1000

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}.events"

    @property
    def deadletter_topic(self) -> str:
        return f"{self.topic_prefix}.deadletter"

    @property
    def tokens_topic(self) -> str:
        return f"{self.topic_prefix}.tokens"

    @property
    def resolved_clickhouse_dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{self.data_dir / 'clickhouse'}"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "token"

    def with_changes(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("RUNSTREAM_DATA_DIR") or Path.home() / ".runstream").expanduser()
        return cls(
            data_dir=data_dir,
            kafka_bootstrap=env.get("RUNSTREAM_KAFKA") or None,
            clickhouse_dsn=env.get("RUNSTREAM_CLICKHOUSE", ""),
            clickhouse_database=env.get("RUNSTREAM_CLICKHOUSE_DATABASE") or "runstream",
            topic_prefix=env.get("RUNSTREAM_TOPIC_PREFIX") or "runstream",
            partitions=_int(env, "RUNSTREAM_PARTITIONS", 4),
            token=env.get("RUNSTREAM_TOKEN") or None,
            host=env.get("RUNSTREAM_HOST") or "127.0.0.1",
            port=_int(env, "RUNSTREAM_PORT", 8555, minimum=0),
            max_body_bytes=_int(env, "RUNSTREAM_MAX_BODY_BYTES", 16 * 1024 * 1024),
            max_event_bytes=_int(env, "RUNSTREAM_MAX_EVENT_BYTES", 900_000),
            max_sockets_per_token=_int(env, "RUNSTREAM_MAX_SOCKETS_PER_TOKEN", 1000),
        )
