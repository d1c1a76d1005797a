"""Compute targets with their queued and active runs, child runs nested under their parents.

A run is on the target named by its ``run.created`` ``compute``; a child run that
names none is on its parent's target. A run whose parent is listed on the same
target is shown under that parent (``children``), not at the top.
"""

from __future__ import annotations

from typing import Any

from runstream.query.params import NotFoundError
from runstream.query.runs import RunsQueries, iso
from runstream.store.clickhouse import ProjectionStore

TARGETS_SQL = """
SELECT compute, count() AS runs, max(last_event_at) AS last_activity
FROM runs
WHERE workspace = {ws:String} AND compute != ''
GROUP BY compute
ORDER BY compute
"""

ACTIVE_SQL = """
SELECT run_id, experiment, name, status, compute, parent_run_id,
       created_at, queued_at, started_at, has_created, has_queued, has_started
FROM runs
WHERE workspace = {ws:String} AND status IN ('queued', 'running')
ORDER BY run_id
"""


def _node(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": row["run_id"],
        "experiment": row["experiment"],
        "name": row["name"] or None,
        "status": row["status"],
        "parent_run_id": row["parent_run_id"] or None,
        "created_at": iso(row["created_at"]) if row["has_created"] else None,
        "queued_at": iso(row["queued_at"]) if row["has_queued"] else None,
        "started_at": iso(row["started_at"]) if row["has_started"] else None,
        "children": [],
    }


class ComputeQueries:
    def __init__(self, store: ProjectionStore, runs: RunsQueries) -> None:
        self.store = store
        self.runs = runs

    async def targets(self, ws: str, only: str | None = None) -> list[dict[str, Any]]:
        known = await self.store.query_dicts(TARGETS_SQL, {"ws": ws})
        active = await self.store.query_dicts(ACTIVE_SQL, {"ws": ws})
        by_id = {row["run_id"]: row for row in active}
        missing = sorted(
            {r["parent_run_id"] for r in active if not r["compute"] and r["parent_run_id"]} - set(by_id)
        )
        parents = await self.runs.runs(ws, missing)
        targets: dict[str, dict[str, Any]] = {
            row["compute"]: {
                "name": row["compute"],
                "runs_total": int(row["runs"]),
                "last_activity": iso(row["last_activity"]),
                "queued": 0,
                "running": 0,
                "runs": [],
            }
            for row in known
        }

        def target_of(row: dict[str, Any], depth: int = 0) -> str:
            if row["compute"] or not row["parent_run_id"] or depth > 16:
                return str(row["compute"])
            parent = by_id.get(row["parent_run_id"])
            if parent is not None:
                return target_of(parent, depth + 1)
            return str((parents.get(row["parent_run_id"]) or {}).get("compute") or "")

        nodes: dict[str, dict[str, Any]] = {}
        placed: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        for row in active:
            name = target_of(row)
            if not name or name not in targets:
                continue
            node = nodes[row["run_id"]] = _node(row)
            placed.append((name, row, node))
            targets[name]["queued" if row["status"] == "queued" else "running"] += 1
        for name, row, node in placed:
            parent = nodes.get(row["parent_run_id"])
            if parent is not None and target_of(by_id[row["parent_run_id"]]) == name:
                parent["children"].append(node)
            else:
                targets[name]["runs"].append(node)
        if only is not None:
            if only not in targets:
                raise NotFoundError(f"no compute target {only!r} in workspace {ws!r}")
            return [targets[only]]
        return list(targets.values())
