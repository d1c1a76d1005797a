"""Experiments, the runs table of an experiment, and one run with its child-run tree."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson

from runstream.events.codec import to_wire_float
from runstream.query import grammar, params, runs_sql
from runstream.query.grammar import SortKey, SummarySpec
from runstream.query.paging import SortPosition, decode_cursor, encode_cursor, fingerprint
from runstream.query.params import BadParameterError, NotFoundError
from runstream.store.clickhouse import ProjectionStore

A = TypeVar("A")
B = TypeVar("B")

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_TREE_DEPTH = 8
MAX_TREE_RUNS = 1000

METRICS_OF_RUN_SQL = """
SELECT name, max(relogged) FROM metric_summaries
WHERE workspace = {ws:String} AND experiment = {exp:String} AND run_id = {run_id:String}
GROUP BY name
"""


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # clickhouse-connect returns DateTime64(3, 'UTC') naive, in UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wire(value: float | None) -> float | str | None:
    return None if value is None else to_wire_float(float(value))


def run_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """A run's state as the API shows it (tags and properties are added by the caller)."""
    return {
        "run_id": row["run_id"],
        "workspace": row["workspace"],
        "experiment": row["experiment"],
        "name": row["name"] or None,
        "status": row["status"],
        "compute": row["compute"] or None,
        "parent_run_id": row["parent_run_id"] or None,
        "created_at": iso(row["created_at"]) if row["has_created"] else None,
        "queued_at": iso(row["queued_at"]) if row["has_queued"] else None,
        "started_at": iso(row["started_at"]) if row["has_started"] else None,
        "ended_at": iso(row["ended_at"]) if row["has_ended"] else None,
        "duration_ms": row["duration_ms"],
        "error": row["error"] or None,
        "last_event_at": iso(row["last_event_at"]),
    }


def summary_document(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "last": wire(row["last_value"]),
        "min": wire(row["min_value"]),
        "max": wire(row["max_value"]),
        "count": int(row["points"]),
        "first_step": int(row["first_step"]),
        "last_step": int(row["last_step"]),
        "last_ts": iso(row["last_ts"]),
    }


def column_value(spec: SummarySpec, value: float | None) -> float | str | int | None:
    """A summary column as the API writes it: counts and steps as integers, floats as on the wire."""
    if value is None:
        return None
    if spec.aggregate in ("count", "last_step"):
        return int(value)
    return to_wire_float(value)


def duration(row: Mapping[str, Any]) -> int | None:
    if not (row["has_started"] and row["has_ended"]):
        return None
    return int((row["ended_at"] - row["started_at"]) // timedelta(milliseconds=1))


async def gather_or_raise(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results, side by side; the first one's error wins (it names the bad parameter)."""
    one, two = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(one, BaseException):
        raise one
    if isinstance(two, BaseException):
        raise two
    return one, two


class RunsQueries:
    def __init__(self, store: ProjectionStore) -> None:
        self.store = store

    async def experiments(self, ws: str) -> list[dict[str, Any]]:
        rows = await self.store.query_dicts(runs_sql.EXPERIMENTS_SQL, {"ws": ws})
        return [
            {
                "experiment": row["experiment"],
                "runs": int(row["runs"]),
                "active_runs": int(row["active_runs"]),
                "queued_runs": int(row["queued_runs"]),
                "last_activity": iso(row["last_activity"]),
            }
            for row in rows
        ]

    async def attributes(self, ws: str, run_ids: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """Tags and properties (decoded from JSON) of some runs: run_id -> {"tags": .., "properties": ..}."""
        out: dict[str, dict[str, dict[str, Any]]] = {r: {"tags": {}, "properties": {}} for r in run_ids}
        if not run_ids:
            return out
        rows = await self.store.query(runs_sql.RUN_ATTRIBUTES_SQL, {"ws": ws, "run_ids": list(run_ids)})
        for kind, run_id, key, value in rows:
            if kind == "tag":
                out[run_id]["tags"][key] = value
            else:
                out[run_id]["properties"][key] = orjson.loads(value)
        for doc in out.values():
            doc["tags"] = dict(sorted(doc["tags"].items()))
            doc["properties"] = dict(sorted(doc["properties"].items()))
        return out

    async def runs(self, ws: str, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not run_ids:
            return {}
        rows = await self.store.query_dicts(runs_sql.RUN_SQL, {"ws": ws, "run_ids": list(run_ids)})
        return {row["run_id"]: run_document(row) for row in rows}

    async def stats(
        self, ws: str, runs: Sequence[tuple[str, str]], metrics: Sequence[str], *, relogged: bool = True
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Exact summaries of ``metrics`` of ``runs`` ((experiment, run_id) pairs): (run_id, name) -> summary.

        ``relogged=False`` when none of these series is relogged (the faster statement).
        """
        if not runs or not metrics:
            return {}
        rows = await self.store.query_dicts(
            runs_sql.STATS_OF_RUNS[relogged], {"ws": ws, "runs": list(runs), "metrics": list(metrics)}
        )
        return {(row["run_id"], row["name"]): summary_document(row) for row in rows}

    async def stats_of_runs(
        self, ws: str, run_ids: Sequence[str], metrics: Sequence[str], *, relogged: bool
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """``stats`` of runs whose experiments are not known yet (read by run id only)."""
        if not run_ids or not metrics:
            return {}
        rows = await self.store.query_dicts(
            runs_sql.STATS_OF_RUN_IDS[relogged],
            {"ws": ws, "run_ids": list(run_ids), "metrics": list(metrics)},
        )
        return {(row["run_id"], row["name"]): summary_document(row) for row in rows}

    async def metric_index(self, ws: str, experiment: str, used: Mapping[str, str]) -> bool:
        """Whether some series of these metrics is relogged in the experiment.

        Raises 400 naming the parameter of the first metric no run of the experiment logged.
        """
        if not used:
            return False
        rows = await self.store.query(
            runs_sql.METRICS_OF_EXPERIMENT_SQL, {"ws": ws, "exp": experiment, "metrics": sorted(used)}
        )
        known = {name: bool(relogged) for name, relogged in rows}
        for metric, parameter in used.items():
            if metric not in known:
                raise BadParameterError(
                    parameter, f"no run of experiment {experiment!r} logged metric {metric!r}"
                )
        return any(known.values())

    async def runs_table(self, ws: str, experiment: str, query: Any) -> dict[str, Any]:
        """``GET /experiments/{experiment}/runs``: one page of the runs table."""
        statuses = grammar.parse_statuses(query.get("status"))
        tags = grammar.parse_tags(query.getlist("tag"))
        predicates = grammar.parse_predicates(query.getlist("where"))
        sort = grammar.parse_sort(query.get("sort"))
        columns = grammar.parse_columns(query.get("columns"))
        limit = params.integer(query, "limit", DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)
        used: dict[str, str] = {}
        for spec in columns:
            used.setdefault(spec.metric, "columns")
        for predicate in predicates:
            used.setdefault(predicate.spec.metric, "where")
        if sort.spec is not None:
            used.setdefault(sort.spec.metric, "sort")

        specs: list[SummarySpec] = []
        for spec in [*([sort.spec] if sort.spec else []), *(p.spec for p in predicates), *columns]:
            if spec not in specs:
                specs.append(spec)
        if len(specs) > runs_sql.MAX_SLOTS:
            raise BadParameterError(
                "columns", f"at most {runs_sql.MAX_SLOTS} summaries in columns, where and sort together"
            )
        query_id = fingerprint(ws, experiment, sort, statuses, tags, predicates)
        raw_cursor = query.get("cursor")
        position = decode_cursor(raw_cursor, query_id) if raw_cursor else None
        bound = self._page_parameters(ws, experiment, sort, specs, statuses, tags, predicates, limit)
        if position is not None:
            bound.update(
                has_cursor=1,
                c_rank=position.rank,
                c_num=position.number,
                c_text=position.text,
                c_id=position.run_id,
            )

        def page_sql(relogged: bool) -> str:
            return runs_sql.runs_page_sql(
                descending=sort.descending,
                values=bool(specs),
                tags=bool(tags),
                relogged=relogged,
                sort_attr=sort.attribute or "",
            )

        # The page is read as if no series were relogged (the common case) while the
        # metrics are checked; it is read again with the recomputing statement if one is.
        relogged, page = await gather_or_raise(
            self.metric_index(ws, experiment, used), self.store.query_dicts(page_sql(False), bound)
        )
        if relogged:
            page = await self.store.query_dicts(page_sql(True), bound)
        more = len(page) > limit
        page = page[:limit]
        if not page and position is None and not await self.runs_exist(ws, experiment):
            raise NotFoundError(f"no experiment {experiment!r} in workspace {ws!r}")

        attributes = await self.attributes(ws, [row["run_id"] for row in page])
        out = []
        for row in page:
            doc = run_document(
                {**row, "workspace": ws, "experiment": experiment, "duration_ms": duration(row)}
            )
            doc.update(attributes[row["run_id"]])
            doc["columns"] = {
                str(spec): column_value(spec, row["vals"][specs.index(spec)]) for spec in columns
            }
            out.append(doc)
        next_cursor = None
        if more:
            last = page[-1]
            position = SortPosition(
                int(last["krank"]), float(last["knum"]), str(last["ktext"]), str(last["run_id"])
            )
            next_cursor = encode_cursor(position, query_id)
        return {"experiment": experiment, "runs": out, "next_cursor": next_cursor}

    @staticmethod
    def _page_parameters(
        ws: str,
        experiment: str,
        sort: SortKey,
        specs: list[SummarySpec],
        statuses: list[str],
        tags: list[grammar.TagFilter],
        predicates: list[grammar.Predicate],
        limit: int,
    ) -> dict[str, Any]:
        padding = runs_sql.MAX_SLOTS - len(specs)
        return {
            "ws": ws,
            "exp": experiment,
            "metrics": sorted({s.metric for s in specs}),
            "spec_metrics": [s.metric for s in specs] + [""] * padding,
            "spec_aggs": [runs_sql.AGGREGATE_SLOT[s.aggregate] for s in specs] + [1] * padding,
            "sort_index": specs.index(sort.spec) + 1 if sort.spec else 0,
            "statuses": statuses,
            "tag_keys": sorted({t.key for t in tags}),
            "tag_filters": [(t.key, 0 if t.value is None else 1, t.value or "") for t in tags],
            "pred_index": [specs.index(p.spec) + 1 for p in predicates],
            "pred_ops": [p.operator for p in predicates],
            "pred_values": [p.value for p in predicates],
            "has_cursor": 0,
            "c_rank": 0,
            "c_num": 0.0,
            "c_text": "",
            "c_id": "",
            "limit": limit + 1,
        }

    async def runs_exist(self, ws: str, experiment: str) -> bool:
        rows = await self.store.query(
            "SELECT count() FROM run_state WHERE workspace = {ws:String} AND experiment = {exp:String}",
            {"ws": ws, "exp": experiment},
        )
        return bool(rows[0][0])

    async def run(self, ws: str, run_id: str) -> dict[str, Any]:
        """``GET /runs/{run_id}``: state, tags, properties, metric summaries and child-run tree."""
        found = await self.runs(ws, [run_id])
        if run_id not in found:
            raise NotFoundError(f"no run {run_id!r} in workspace {ws!r}")
        doc = found[run_id]
        doc.update((await self.attributes(ws, [run_id]))[run_id])
        index = await self.store.query(
            METRICS_OF_RUN_SQL, {"ws": ws, "exp": doc["experiment"], "run_id": run_id}
        )
        names = [row[0] for row in index]
        stats = await self.stats(
            ws, [(doc["experiment"], run_id)], sorted(names), relogged=any(row[1] for row in index)
        )
        doc["metrics"] = {name: stats[(run_id, name)] for name in sorted(names) if (run_id, name) in stats}
        doc["children"], doc["children_truncated"] = await self.children(ws, run_id)
        return doc

    async def children(self, ws: str, root: str) -> tuple[list[dict[str, Any]], bool]:
        """The child-run tree under ``root``, level by level (bounded in depth and size)."""
        nodes: dict[str, dict[str, Any]] = {}
        seen = {root}
        level = [root]
        tops: list[dict[str, Any]] = []
        truncated = False
        for _ in range(MAX_TREE_DEPTH):
            if not level:
                break
            links = await self.store.query(runs_sql.CHILD_LINKS_SQL, {"ws": ws, "parents": level})
            fresh = [(p, c, n) for p, c, n in links if c not in seen]
            if len(seen) + len(fresh) > MAX_TREE_RUNS:
                fresh = fresh[: max(MAX_TREE_RUNS - len(seen), 0)]
                truncated = True
            states = await self.runs(ws, [c for _, c, _ in fresh])
            nxt: list[str] = []
            for parent, child, name in fresh:
                if child in seen:
                    continue
                seen.add(child)
                state = states.get(child, {})
                node = {
                    "run_id": child,
                    "name": state.get("name") or name or None,
                    "status": state.get("status"),
                    "experiment": state.get("experiment"),
                    "compute": state.get("compute"),
                    "children": [],
                }
                nodes[child] = node
                (tops if parent == root else nodes[parent]["children"]).append(node)
                nxt.append(child)
            level = nxt
        else:
            truncated = truncated or bool(level)
        return tops, truncated
