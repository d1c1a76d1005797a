"""The analysts' SQL: the README's worked examples and the read-only role, run on the real engine."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from runstream.errors import StoreError
from runstream.store.clickhouse import ProjectionStore
from tests.conftest import ROOT
from tests.integration.query_helpers import event, make_settings, post
from tests.support import running_server

DAY = 86_400_000
T0 = 1_764_300_000_000 - 1_764_300_000_000 % DAY  # midnight UTC


def sql_blocks(path: Path, section: str) -> list[str]:
    """The ```sql blocks of ``section`` (a ``## `` heading) of a markdown file."""
    text = path.read_text("utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```sql\n(.*?)```", text[start : end if end > 0 else None], re.S)


def statements(block: str) -> list[str]:
    return [s.strip() for s in block.split(";") if s.strip()]


def in_database(sql: str, database: str) -> str:
    return re.sub(r"\brunstream\.", f"{database}.", sql)


async def test_readme_sql_examples_answer_right(tmp_path: Path, chdb_path: Path) -> None:
    blocks = sql_blocks(ROOT / "README.md", "Analytics (SQL)")
    assert len(blocks) == 3
    settings = make_settings(tmp_path, chdb_path)
    loss = {  # experiment, run -> {step: value}
        ("mnist", "a"): {0: 2.0, 50: 0.9, 100: 0.5, 150: 0.1},
        ("mnist", "b"): {0: 1.5, 99: 0.7},  # no step 100: its value at step 99 counts
        ("mnist", "c"): {100: 0.3, 101: 0.05},
        ("cifar", "d"): {0: float("nan"), 10: 0.8},
        ("cifar", "e"): {0: 0.6},
    }
    events = []
    for (experiment, run_id), points in loss.items():
        compute = "gpu" if run_id in "abd" else "cpu"
        day = T0 + (DAY if run_id in "ce" else 0)
        events.append(
            event("run.created", run_id, {"compute": compute}, seq=0, experiment=experiment, ts=day)
        )
        events.append(
            event(
                "metrics.logged",
                run_id,
                {
                    "points": [
                        {"name": "loss", "value": v if v == v else "NaN", "step": s}
                        for s, v in points.items()
                    ]
                },
                seq=1,
                experiment=experiment,
            )
        )
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60) as http,
    ):
        await post(http, events)
        store: ProjectionStore = server.app.state.runtime.store
        best, per_day, at_step = [
            await store.query(in_database(b, settings.clickhouse_database)) for b in blocks
        ]
    assert best == [("cifar", "e", 0.6), ("mnist", "c", 0.05)]
    day0, day1 = (str(datetime.fromtimestamp(t / 1000, tz=UTC).date()) for t in (T0, T0 + DAY))
    assert [(c, str(d), n) for c, d, n in per_day] == [("gpu", day0, 3), ("cpu", day1, 2)]
    assert at_step == [("c", 0.3, 100), ("a", 0.5, 100), ("b", 0.7, 99)]


async def test_read_only_role_statements(tmp_path: Path, chdb_path: Path) -> None:
    """The deployment notes' role statements; chdb refuses access management: say why, check what it can."""
    blocks = sql_blocks(ROOT / "infra" / "clickhouse" / "README.md", "Read-only access for analysts")
    assert len(blocks) == 1
    settings = make_settings(tmp_path, chdb_path)
    store = ProjectionStore(settings.resolved_clickhouse_dsn, settings.clickhouse_database)
    await store.start()
    try:
        front = settings.clickhouse_database
        role_statements = [in_database(s, front) for s in statements(blocks[0])]
        assert [s.split()[0] for s in role_statements] == [
            "CREATE",
            "GRANT",
            "GRANT",
            "GRANT",
            "CREATE",
            "CREATE",
        ]
        try:
            for statement in role_statements:
                await store.command(statement)
        except StoreError as exc:
            # chdb is clickhouse-local: its only user directory is the read-only users config, so
            # access management is refused (ACCESS_DENIED, or no writable access storage). A server runs them.
            assert "ACCESS_DENIED" in str(exc) or "ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND" in str(exc), exc
            for statement in role_statements:
                formatted = await store.query("SELECT formatQuery({q:String})", {"q": statement})
                assert formatted[0][0].split()[0] in ("CREATE", "GRANT")
        else:
            grants = await store.query("SHOW GRANTS FOR runstream_analyst")
            assert len(grants) == 3
        granted = [re.search(r"ON (\S+)\.(\S+) TO", s) for s in role_statements if s.startswith("GRANT")]
        for match in granted:
            assert match is not None and match[1] == front
            rows = await store.query(
                "SELECT create_table_query FROM system.tables"
                " WHERE database = {db:String} AND name = {name:String}",
                {"db": front, "name": match[2]},
            )
            assert rows, f"{match[2]} exists"
            assert "SQL SECURITY DEFINER" in rows[0][0], "the view runs with its definer's rights"
    finally:
        await store.close()


@pytest.mark.parametrize("view", ["analytics_runs", "analytics_metric_points", "analytics_metric_summaries"])
async def test_documented_view_columns(tmp_path: Path, chdb_path: Path, view: str) -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    documented = re.search(rf"\| `{view}` \| [^|]+ \| `([^`]+)`", readme)
    assert documented is not None
    settings = make_settings(tmp_path, chdb_path)
    store = ProjectionStore(settings.resolved_clickhouse_dsn, settings.clickhouse_database)
    await store.start()
    try:
        rows = await store.query(
            "SELECT name FROM system.columns"
            " WHERE database = {db:String} AND table = {t:String} ORDER BY position",
            {"db": settings.clickhouse_database, "t": view},
        )
    finally:
        await store.close()
    assert [r[0] for r in rows] == documented[1].split()


def analyst_profile_settings() -> str:
    """The ``SETTINGS`` of the analysts' settings profile in the deployment notes."""
    [block] = sql_blocks(ROOT / "infra" / "clickhouse" / "README.md", "Read-only access for analysts")
    profile = next(s for s in statements(block) if s.startswith("CREATE SETTINGS PROFILE"))
    found = re.search(r"PROFILE\s+(?:IF NOT EXISTS\s+)?\S+\s+SETTINGS\s+(.*?)\s+TO\s", profile, re.S)
    assert found is not None, profile
    return " ".join(found[1].split())


async def test_the_analyst_profile_makes_the_engine_refuse_writes_and_bound_queries(
    tmp_path: Path, chdb_path: Path
) -> None:
    """The profile's settings, applied to each query on the embedded engine (which has no
    users): reads of the views answer, every write and DDL is refused, results are bounded."""
    profile = analyst_profile_settings()
    assert "readonly = 2" in profile and "max_result_rows" in profile and "max_execution_time" in profile
    settings = make_settings(tmp_path, chdb_path)
    store = ProjectionStore(settings.resolved_clickhouse_dsn, settings.clickhouse_database)
    await store.start()
    front = settings.clickhouse_database
    try:
        rows = await store.query(f"SELECT count() FROM {front}.analytics_runs SETTINGS {profile}")
        assert rows == [(0,)]
        for write in (
            f"INSERT INTO {store.database}.runs (run_id) SETTINGS {profile} VALUES ('x')",
            f"CREATE TABLE {front}.stolen (x UInt8) ENGINE = Memory SETTINGS {profile}",
            f"DROP VIEW {front}.analytics_runs SETTINGS {profile}",
            f"ALTER TABLE {store.database}.runs DELETE WHERE 1 SETTINGS {profile}",
        ):
            with pytest.raises(StoreError, match=r"READONLY|readonly"):
                await store.command(write)
        assert await store.query(f"SELECT count() FROM {front}.analytics_runs") == [(0,)]
        limit = int(re.search(r"max_result_rows = (\d+)", profile)[1])  # type: ignore[index]
        with pytest.raises(StoreError, match="TOO_MANY_ROWS_OR_BYTES"):
            await store.query(f"SELECT number FROM numbers({limit + 1}) SETTINGS {profile}")
        with pytest.raises(StoreError, match="TIMEOUT_EXCEEDED"):
            await store.query(
                "SELECT sleepEachRow(0.2) FROM numbers(20)"
                f" SETTINGS {profile}, max_execution_time = 1, max_block_size = 1"
            )
    finally:
        await store.close()
