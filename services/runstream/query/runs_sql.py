"""SQL of the experiments list, the runs table and metric summaries. Inputs are bound parameters.

The *page* statement orders an experiment's runs and returns one page of them with
their sort positions; it is assembled
from the constant parts below only (``runs_page_sql``): ``ORDER BY`` cannot take a
direction as a parameter, a sort attribute maps to its own fragment so that only the
columns it needs are read, and joins a request does not need are left out. What to
compute, filter and sort on travels as parameters:

- ``spec_metrics`` / ``spec_aggs``: up to ``MAX_SLOTS`` summaries (the sort key, the
  ``where`` predicates, the requested columns); each run gets ``vals``, one value (or
  NULL) per slot, from ``metric_summaries`` (one row per run and metric: points are
  never scanned), except for series flagged ``relogged``, recomputed from their points;
- ``pred_index`` / ``pred_ops`` / ``pred_values``: the ``where`` predicates, over ``vals``;
- ``sort_index`` (1-based into ``vals``) when sorting by a summary: the sort key is
  ``(krank, knum, ktext, run_id)``: krank 0 when the run has a value, 1 for NaN, 2 for
  none, so runs without a value come last in both directions;
- ``has_cursor`` and ``c_*``: the keyset position the page starts after.

The page's runs come back whole, with their summary columns; a second statement
reads their tags and properties.
"""

from __future__ import annotations

from functools import cache

EXPERIMENTS_SQL = """
SELECT
    r.experiment AS experiment,
    count() AS runs,
    countIf(r.status = 'running') AS active_runs,
    countIf(r.status = 'queued') AS queued_runs,
    greatest(max(r.last_event_at), any(a.last_ts)) AS last_activity
FROM runs AS r
LEFT JOIN
(
    SELECT experiment, max(last_ts) AS last_ts FROM experiment_activity
    WHERE workspace = {ws:String} GROUP BY experiment
) AS a ON a.experiment = r.experiment
WHERE r.workspace = {ws:String}
GROUP BY r.experiment
ORDER BY last_activity DESC, experiment
"""

# Which of the metrics some run of the experiment logged, and whether any of those series
# is relogged (only then do the statements below need their recomputing branch).
METRICS_OF_EXPERIMENT_SQL = """
SELECT name, max(relogged) FROM metric_summaries
WHERE workspace = {ws:String} AND experiment = {exp:String} AND name IN {metrics:Array(String)}
GROUP BY name
"""

# Exact summaries, one row per (run, metric): run_id, name, last_value, min_value,
# max_value, points, first_step, last_step, last_ts, relogged. Series never relogged
# come from metric_summaries; the others are recomputed from their points. Two
# filters: an experiment's runs, or (experiment, run_id) pairs; both follow the order
# of metric_summaries (workspace, experiment, run_id, name).
_BY_EXPERIMENT = " experiment = {exp:String} "
_BY_RUNS = " (experiment, run_id) IN {runs:Array(Tuple(String, String))} "
_STATS_CLEAN = """
SELECT run_id, name, last_point.3 AS last_value, min_value, max_value,
       points, first_step, last_step, last_ts, relogged
FROM metric_summaries FINAL
WHERE workspace = {ws:String} AND name IN {metrics:Array(String)} AND relogged = 0 AND
"""
_STATS_RELOGGED = """
UNION ALL
SELECT p.run_id AS run_id, p.name AS name, p.last_value, p.min_value, p.max_value, p.points,
       p.first_step, p.last_step, s.last_ts AS last_ts, toUInt8(1) AS relogged
FROM
(
    SELECT run_id, name, argMax(value, step) AS last_value, min(value) AS min_value,
           max(value) AS max_value, count() AS points, min(step) AS first_step, max(step) AS last_step
    FROM metric_points FINAL
    WHERE workspace = {ws:String} AND (run_id, name) IN
    (
        SELECT run_id, name FROM metric_summaries
        WHERE workspace = {ws:String} AND name IN {metrics:Array(String)} AND relogged = 1 AND
"""
_STATS_TAIL = """
    )
    GROUP BY run_id, name
) AS p
INNER JOIN
(
    SELECT run_id, name, max(last_ts) AS last_ts FROM metric_summaries
    WHERE workspace = {ws:String} AND name IN {metrics:Array(String)} AND relogged = 1
    GROUP BY run_id, name
) AS s ON s.run_id = p.run_id AND s.name = p.name
"""
STATS_OF_EXPERIMENT = {
    False: "".join((_STATS_CLEAN, _BY_EXPERIMENT)),
    True: "".join((_STATS_CLEAN, _BY_EXPERIMENT, _STATS_RELOGGED, _BY_EXPERIMENT, _STATS_TAIL)),
}
"""By whether some series is relogged: without, the summaries table alone answers."""
_BY_RUN_IDS = " run_id IN {run_ids:Array(String)} "
STATS_OF_RUN_IDS = {
    False: "".join((_STATS_CLEAN, _BY_RUN_IDS)),
    True: "".join((_STATS_CLEAN, _BY_RUN_IDS, _STATS_RELOGGED, _BY_RUN_IDS, _STATS_TAIL)),
}
"""Like STATS_OF_RUNS, by run id alone (the run_id bloom filter of metric_summaries)."""
STATS_OF_RUNS = {
    False: "".join((_STATS_CLEAN, _BY_RUNS)),
    True: "".join((_STATS_CLEAN, _BY_RUNS, _STATS_RELOGGED, _BY_RUNS, _STATS_TAIL)),
}

MAX_SLOTS = 20
"""Summaries one runs-table request can compute (sort key, predicates and columns together)."""
AGGREGATE_SLOT = {"last": 1, "min": 2, "max": 3, "count": 4, "last_step": 5}
"""Where each aggregate sits in the per-series array ``v`` below."""

_PAGE_HEAD = """
SELECT run_id, status, name, compute, parent_run_id, error, created_at, queued_at, started_at, ended_at,
       has_created, has_queued, has_started, has_ended, last_event_at, vals, krank, knum, ktext
FROM
(
    SELECT
        r.run_id AS run_id, r.status_key.3 AS status, r.name AS name, r.compute AS compute,
        r.parent_run_id AS parent_run_id, r.error AS error, r.created_at AS created_at,
        r.queued_at AS queued_at, r.started_at AS started_at, r.ended_at AS ended_at,
        r.has_created AS has_created, r.has_queued AS has_queued, r.has_started AS has_started,
        r.has_ended AS has_ended, r.last_event_at AS last_event_at,
"""
# The sort key of each sortable attribute, as (sort_value, ktext) fragments.
SORT_KEYS: dict[str, tuple[str, str]] = {
    "": ("vals[greatest({sort_index:UInt32}, 1)]", "''"),
    "created_at": ("if(r.has_created, toFloat64(toUnixTimestamp64Milli(r.created_at)), NULL)", "''"),
    "queued_at": ("if(r.has_queued, toFloat64(toUnixTimestamp64Milli(r.queued_at)), NULL)", "''"),
    "started_at": ("if(r.has_started, toFloat64(toUnixTimestamp64Milli(r.started_at)), NULL)", "''"),
    "ended_at": ("if(r.has_ended, toFloat64(toUnixTimestamp64Milli(r.ended_at)), NULL)", "''"),
    "last_event_at": ("toNullable(toFloat64(toUnixTimestamp64Milli(r.last_event_at)))", "''"),
    "duration_ms": (
        "if(r.has_started AND r.has_ended, "
        "toFloat64(toUnixTimestamp64Milli(r.ended_at) - toUnixTimestamp64Milli(r.started_at)), NULL)",
        "''",
    ),
    "name": ("toNullable(0.0)", "r.name"),
    "status": ("toNullable(0.0)", "r.status_key.3"),
    "compute": ("toNullable(0.0)", "r.compute"),
    "run_id": ("toNullable(0.0)", "''"),
}
_KEY_VALUE = """
        AS sort_value,
"""
_KEY_TEXT = """
        AS ktext,
"""
_RANK_BY_VALUE = """
        toUInt8(multiIf(sort_value IS NULL, 2, isNaN(assumeNotNull(sort_value)), 1, 0)) AS krank,
        if(krank = 0, assumeNotNull(sort_value), 0.0) AS knum,
"""
_RANK_BY_TEXT = """
        toUInt8(if(ktext = '', 2, 0)) AS krank,
        0.0 AS knum,
"""
_NO_VALS = """
        CAST([], 'Array(Nullable(Float64))') AS vals,
"""
_VALS = """
        [m.c1, m.c2, m.c3, m.c4, m.c5, m.c6, m.c7, m.c8, m.c9, m.c10,
         m.c11, m.c12, m.c13, m.c14, m.c15, m.c16, m.c17, m.c18, m.c19, m.c20] AS vals,
"""
_NO_TAGS = """
        CAST(map(), 'Map(String, String)') AS tag_map
    FROM run_state AS r FINAL
"""
_TAGS = """
        t.tag_map AS tag_map
    FROM run_state AS r FINAL
"""
# The summaries of one run, one column per slot: slot k is aggregate spec_aggs[k]
# (AGGREGATE_SLOT) of metric spec_metrics[k]; unused slots name no metric (NULL).
_JOIN_SLOTS = """
    LEFT JOIN
    (
        SELECT
            run_id,
            anyIf(v[{spec_aggs:Array(UInt8)}[1]], name = {spec_metrics:Array(String)}[1]) AS c1,
            anyIf(v[{spec_aggs:Array(UInt8)}[2]], name = {spec_metrics:Array(String)}[2]) AS c2,
            anyIf(v[{spec_aggs:Array(UInt8)}[3]], name = {spec_metrics:Array(String)}[3]) AS c3,
            anyIf(v[{spec_aggs:Array(UInt8)}[4]], name = {spec_metrics:Array(String)}[4]) AS c4,
            anyIf(v[{spec_aggs:Array(UInt8)}[5]], name = {spec_metrics:Array(String)}[5]) AS c5,
            anyIf(v[{spec_aggs:Array(UInt8)}[6]], name = {spec_metrics:Array(String)}[6]) AS c6,
            anyIf(v[{spec_aggs:Array(UInt8)}[7]], name = {spec_metrics:Array(String)}[7]) AS c7,
            anyIf(v[{spec_aggs:Array(UInt8)}[8]], name = {spec_metrics:Array(String)}[8]) AS c8,
            anyIf(v[{spec_aggs:Array(UInt8)}[9]], name = {spec_metrics:Array(String)}[9]) AS c9,
            anyIf(v[{spec_aggs:Array(UInt8)}[10]], name = {spec_metrics:Array(String)}[10]) AS c10,
            anyIf(v[{spec_aggs:Array(UInt8)}[11]], name = {spec_metrics:Array(String)}[11]) AS c11,
            anyIf(v[{spec_aggs:Array(UInt8)}[12]], name = {spec_metrics:Array(String)}[12]) AS c12,
            anyIf(v[{spec_aggs:Array(UInt8)}[13]], name = {spec_metrics:Array(String)}[13]) AS c13,
            anyIf(v[{spec_aggs:Array(UInt8)}[14]], name = {spec_metrics:Array(String)}[14]) AS c14,
            anyIf(v[{spec_aggs:Array(UInt8)}[15]], name = {spec_metrics:Array(String)}[15]) AS c15,
            anyIf(v[{spec_aggs:Array(UInt8)}[16]], name = {spec_metrics:Array(String)}[16]) AS c16,
            anyIf(v[{spec_aggs:Array(UInt8)}[17]], name = {spec_metrics:Array(String)}[17]) AS c17,
            anyIf(v[{spec_aggs:Array(UInt8)}[18]], name = {spec_metrics:Array(String)}[18]) AS c18,
            anyIf(v[{spec_aggs:Array(UInt8)}[19]], name = {spec_metrics:Array(String)}[19]) AS c19,
            anyIf(v[{spec_aggs:Array(UInt8)}[20]], name = {spec_metrics:Array(String)}[20]) AS c20
        FROM
        (
            SELECT run_id, name,
                   [toNullable(last_value), toNullable(min_value), toNullable(max_value),
                    toNullable(toFloat64(points)), toNullable(toFloat64(last_step))] AS v
            FROM (
"""
_JOIN_SLOTS_TAIL = """
            )
        )
        GROUP BY run_id
    ) AS m ON m.run_id = r.run_id
"""
_JOIN_TAGS = """
    LEFT JOIN
    (
        SELECT run_id, CAST((groupArray(key), groupArray(value)), 'Map(String, String)') AS tag_map
        FROM
        (
            SELECT run_id, key, argMax(value, (seq, log_partition, log_offset)) AS value
            FROM run_tags
            WHERE workspace = {ws:String} AND experiment = {exp:String} AND key IN {tag_keys:Array(String)}
            GROUP BY run_id, key
        )
        GROUP BY run_id
    ) AS t ON t.run_id = r.run_id
"""
_PAGE_WHERE = """
    WHERE r.workspace = {ws:String} AND r.experiment = {exp:String}
)
WHERE (empty({statuses:Array(String)}) OR has({statuses:Array(String)}, status))
  AND arrayAll(f -> if(f.2 = 0, mapContains(tag_map, f.1), mapContains(tag_map, f.1) AND tag_map[f.1] = f.3),
               {tag_filters:Array(Tuple(String, UInt8, String))})
  AND arrayAll((i, op, x) -> ifNull(multiIf(
        op = '<', vals[i] < x, op = '<=', vals[i] <= x, op = '>', vals[i] > x,
        op = '>=', vals[i] >= x, op = '=', vals[i] = x, vals[i] != x), 0) = 1,
      {pred_index:Array(UInt32)}, {pred_ops:Array(String)}, {pred_values:Array(Float64)})
  AND ({has_cursor:UInt8} = 0 OR
"""
_AFTER_ASC = """
    (krank, knum, ktext, run_id) > ({c_rank:UInt8}, {c_num:Float64}, {c_text:String}, {c_id:String}))
ORDER BY krank, knum, ktext, run_id
LIMIT {limit:UInt32}
"""
_AFTER_DESC = """
    krank > {c_rank:UInt8} OR (krank = {c_rank:UInt8}
        AND (knum, ktext, run_id) < ({c_num:Float64}, {c_text:String}, {c_id:String})))
ORDER BY krank, knum DESC, ktext DESC, run_id DESC
LIMIT {limit:UInt32}
"""


@cache
def runs_page_sql(*, descending: bool, values: bool, tags: bool, relogged: bool, sort_attr: str) -> str:
    """The page statement, assembled from the constant parts above only.

    ``values``: whether any summary is needed (sort key, predicates, columns);
    ``sort_attr``: a key of ``SORT_KEYS`` ('' for a summary).
    """
    value, text = SORT_KEYS[sort_attr]
    parts = [
        _PAGE_HEAD,
        _VALS if values else _NO_VALS,
        value,
        _KEY_VALUE,
        text,
        _KEY_TEXT,
        _RANK_BY_TEXT if sort_attr in ("name", "status", "compute") else _RANK_BY_VALUE,
        _TAGS if tags else _NO_TAGS,
    ]
    if values:
        parts += [_JOIN_SLOTS, STATS_OF_EXPERIMENT[relogged], _JOIN_SLOTS_TAIL]
    if tags:
        parts.append(_JOIN_TAGS)
    parts += [_PAGE_WHERE, _AFTER_DESC if descending else _AFTER_ASC]
    return "".join(parts)


RUN_ATTRIBUTES_SQL = """
SELECT 'tag' AS kind, run_id, key, argMax(value, (seq, log_partition, log_offset)) AS value
FROM run_tags WHERE workspace = {ws:String} AND run_id IN {run_ids:Array(String)}
GROUP BY run_id, key
UNION ALL
SELECT 'property' AS kind, run_id, key, argMax(value_json, (seq, log_partition, log_offset)) AS value
FROM run_properties WHERE workspace = {ws:String} AND run_id IN {run_ids:Array(String)}
GROUP BY run_id, key
"""

RUN_SQL = """
SELECT run_id, workspace, experiment, name, status, compute, parent_run_id,
       created_at, queued_at, started_at, ended_at, error, duration_ms,
       has_created, has_queued, has_started, has_ended, last_event_at
FROM runs
WHERE workspace = {ws:String} AND run_id IN {run_ids:Array(String)}
"""

CHILD_LINKS_SQL = """
SELECT parent_run_id, child_run_id, argMax(name, (seq, log_partition, log_offset)) AS name
FROM run_links
WHERE workspace = {ws:String} AND parent_run_id IN {parents:Array(String)}
GROUP BY parent_run_id, child_run_id
ORDER BY parent_run_id, child_run_id
"""
