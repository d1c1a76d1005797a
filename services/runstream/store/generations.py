"""Projection generations: which database holds the projections in use.

Projections are disposable: ``runstream replay`` rebuilds them from the log into a
fresh database and then switches every service to it. The projection database named
in the settings (``runstream``, the *front*) therefore holds no projection tables of
its own, only:

- ``generation_switches``: an append-only record of every switch (the latest row
  names the generation in use), and
- the analytics views (``analytics_runs`` ...), each a ``SELECT *`` of the same view
  in the generation in use, so analysts keep one set of names across replays.

Generation ``N`` lives in the database ``<front>_g<N>``. The functions here are
synchronous and take a clickhouse-connect client; ``ProjectionStore`` runs them on
its thread pool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

GENERATION_CHECK_SECONDS = 1.0
"""How often a running service looks for a switch to a newer generation (``ProjectionStore.refresh``)."""

ANALYTICS_VIEWS = ("analytics_runs", "analytics_metric_points", "analytics_metric_summaries")

_SWITCHES_DDL = (
    "CREATE TABLE IF NOT EXISTS {front:Identifier}.generation_switches"
    " (switched_at DateTime64(6, 'UTC'), generation UInt32, database String, reason String)"
    " ENGINE = MergeTree ORDER BY switched_at"
)
_ACTIVE_SQL = (
    "SELECT generation, database FROM {front:Identifier}.generation_switches"
    " ORDER BY switched_at DESC, generation DESC LIMIT 1"
)
_RECORD_SQL = (
    "INSERT INTO {front:Identifier}.generation_switches (switched_at, generation, database, reason)"
    " VALUES (now64(6), {generation:UInt32}, {database:String}, {reason:String})"
)
_DATABASES_SQL = "SELECT name FROM system.databases WHERE startsWith(name, {prefix:String})"
_SWITCHED_SQL = "SELECT DISTINCT generation FROM {front:Identifier}.generation_switches"

# One fixed statement per view: executed by a client whose current database is the
# generation, the unqualified name in SELECT is bound to that generation's view. The
# views run with their definer's rights (the service's user), so an analyst needs
# SELECT on these three views only (infra/clickhouse/README.md).
_FORWARD_VIEW = {
    "analytics_runs": (
        "CREATE OR REPLACE VIEW {front:Identifier}.analytics_runs"
        " DEFINER = CURRENT_USER SQL SECURITY DEFINER AS SELECT * FROM analytics_runs"
    ),
    "analytics_metric_points": (
        "CREATE OR REPLACE VIEW {front:Identifier}.analytics_metric_points"
        " DEFINER = CURRENT_USER SQL SECURITY DEFINER AS SELECT * FROM analytics_metric_points"
    ),
    "analytics_metric_summaries": (
        "CREATE OR REPLACE VIEW {front:Identifier}.analytics_metric_summaries"
        " DEFINER = CURRENT_USER SQL SECURITY DEFINER AS SELECT * FROM analytics_metric_summaries"
    ),
}


@dataclass(frozen=True)
class Generation:
    """One complete set of projection tables."""

    number: int
    database: str


def generation_database(front: str, number: int) -> str:
    return f"{front}_g{number}"


def ensure_front(admin: Any, front: str) -> None:
    admin.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": front})
    admin.command(_SWITCHES_DDL, parameters={"front": front})


def active_generation(admin: Any, front: str) -> Generation | None:
    rows = admin.query(_ACTIVE_SQL, parameters={"front": front}).result_rows
    if not rows:
        return None
    return Generation(int(rows[0][0]), str(rows[0][1]))


def next_generation(admin: Any, front: str) -> Generation:
    """A generation number never used before: above every switch and every database made."""
    pattern = re.compile(rf"^{re.escape(front)}_g(\d+)$")
    used = {int(row[0]) for row in admin.query(_SWITCHED_SQL, parameters={"front": front}).result_rows}
    for (name,) in admin.query(_DATABASES_SQL, parameters={"prefix": f"{front}_g"}).result_rows:
        match = pattern.match(name)
        if match:
            used.add(int(match[1]))
    number = max(used, default=0) + 1
    return Generation(number, generation_database(front, number))


def record_switch(admin: Any, front: str, generation: Generation, reason: str) -> None:
    admin.command(
        _RECORD_SQL,
        parameters={
            "front": front,
            "generation": generation.number,
            "database": generation.database,
            "reason": reason,
        },
    )


def publish_views(generation_client: Any, front: str) -> None:
    """Point the front's analytics views at the generation of ``generation_client``."""
    for view in ANALYTICS_VIEWS:
        generation_client.command(_FORWARD_VIEW[view], parameters={"front": front})
