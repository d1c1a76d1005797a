from __future__ import annotations

from pathlib import Path

import pytest

from runstream.errors import ConfigError
from runstream.settings import Settings
from runstream.store.migrations import load_migrations, split_statements


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap is None
    assert settings.data_dir == Path.home() / ".runstream"
    assert settings.resolved_clickhouse_dsn == f"chdb://{Path.home() / '.runstream' / 'clickhouse'}"
    assert settings.events_topic == "runstream.events"
    assert settings.port == 8555


def test_environment_overrides() -> None:
    settings = Settings.from_env(
        {
            "RUNSTREAM_DATA_DIR": "/srv/rs",
            "RUNSTREAM_KAFKA": "k1:9092,k2:9092",
            "RUNSTREAM_CLICKHOUSE": "http://ch:8123",
            "RUNSTREAM_TOPIC_PREFIX": "prod",
            "RUNSTREAM_PORT": "9000",
        }
    )
    assert settings.data_dir == Path("/srv/rs")
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert settings.resolved_clickhouse_dsn == "http://ch:8123"
    assert settings.deadletter_topic == "prod.deadletter"
    assert settings.port == 9000


def test_bad_integer_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="RUNSTREAM_PARTITIONS must be an integer"):
        Settings.from_env({"RUNSTREAM_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match="RUNSTREAM_PARTITIONS must be at least 1"):
        Settings.from_env({"RUNSTREAM_PARTITIONS": "0"})


def test_migration_files_load_in_order() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert migrations[0].version == 1
    assert all(s and not s.endswith(";") for m in migrations for s in m.statements)


def test_split_statements_drops_comments() -> None:
    text = "-- a comment;\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\nSELECT 1;\n"
    assert split_statements(text) == ("CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 1")
