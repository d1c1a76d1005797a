"""Applying the ClickHouse DDL of ``schemas/clickhouse/`` in order, once each.

Files are named ``NNN_description.sql``; statements are separated by ``;`` at the
end of a line. Applied versions are recorded in ``schema_migrations``; every
statement is also written to be idempotent (``IF NOT EXISTS``), so a migration
interrupted half-way is simply applied again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runstream.events.schemas import schemas_root

_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(text: str) -> tuple[str, ...]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    statements = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return tuple(s.strip() for s in statements if s.strip())


def load_migrations(folder: Path | None = None) -> list[Migration]:
    folder = folder or schemas_root() / "clickhouse"
    out = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE.match(path.name)
        if match:
            out.append(Migration(int(match[1]), match[2], split_statements(path.read_text("utf-8"))))
    return out


def apply_migrations(client: Any) -> list[int]:
    """Apply what is not applied yet on a clickhouse-connect client; returns the versions applied."""
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String,"
        " applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree"
        " ORDER BY version"
    )
    done = {int(row[0]) for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for migration in load_migrations():
        if migration.version in done:
            continue
        for statement in migration.statements:
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name]],
            column_names=["version", "name"],
        )
        applied.append(migration.version)
    return applied
