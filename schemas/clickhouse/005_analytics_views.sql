-- Runstream projections, version 5: the documented views for analysts.
--
-- These three views are the stable SQL surface (README, "Analytics (SQL)"); the tables
-- behind them may change between versions. The projection database `<db>` holds a copy
-- of each view that reads from the generation database in use (`<db>_g<N>`), so
-- analysts query `<db>.analytics_runs` and a replay (`runstream replay`) does not
-- change the names they use.

-- One row per run: its latest state, tags and properties (values as JSON text).
-- Timestamps are NULL until the run reaches that step; duration_ms once it ended.
CREATE VIEW IF NOT EXISTS analytics_runs AS
SELECT
    r.workspace                                             AS workspace,
    r.experiment                                            AS experiment,
    r.run_id                                                AS run_id,
    r.name                                                  AS name,
    r.status                                                AS status,
    r.compute                                               AS compute,
    r.parent_run_id                                         AS parent_run_id,
    if(r.has_created, toNullable(r.created_at), NULL)       AS created_at,
    if(r.has_queued, toNullable(r.queued_at), NULL)         AS queued_at,
    if(r.has_started, toNullable(r.started_at), NULL)       AS started_at,
    if(r.has_ended, toNullable(r.ended_at), NULL)           AS ended_at,
    r.duration_ms                                           AS duration_ms,
    r.error                                                 AS error,
    r.last_event_at                                         AS last_event_at,
    t.tags                                                  AS tags,
    p.properties                                            AS properties
FROM runs AS r
LEFT JOIN
(
    SELECT workspace, run_id, CAST((groupArray(key), groupArray(value)), 'Map(String, String)') AS tags
    FROM
    (
        SELECT workspace, run_id, key, argMax(value, (seq, log_partition, log_offset)) AS value
        FROM run_tags
        GROUP BY workspace, run_id, key
    )
    GROUP BY workspace, run_id
) AS t ON t.workspace = r.workspace AND t.run_id = r.run_id
LEFT JOIN
(
    SELECT workspace, run_id, CAST((groupArray(key), groupArray(value)), 'Map(String, String)') AS properties
    FROM
    (
        SELECT workspace, run_id, key, argMax(value_json, (seq, log_partition, log_offset)) AS value
        FROM run_properties
        GROUP BY workspace, run_id, key
    )
    GROUP BY workspace, run_id
) AS p ON p.workspace = r.workspace AND p.run_id = r.run_id;

-- One row per (run, metric, step): the value in force (a step logged again keeps its
-- latest value). Values are Float64 and may be NaN, inf or -inf.
CREATE VIEW IF NOT EXISTS analytics_metric_points AS
SELECT workspace, experiment, run_id, name, step, value, ts
FROM metric_points FINAL;

-- One row per (run, metric): last (value at the highest step), min, max (NaN ignored
-- unless every value is NaN), point count, first and last step, last point time.
-- Exact: series whose steps were logged again are recomputed from the points.
CREATE VIEW IF NOT EXISTS analytics_metric_summaries AS
SELECT
    s.workspace                                              AS workspace,
    s.experiment                                             AS experiment,
    s.run_id                                                 AS run_id,
    s.name                                                   AS name,
    if(s.relogged = 1, e.last_value, s.last_value)           AS last_value,
    if(s.relogged = 1, e.min_value, s.min_value)             AS min_value,
    if(s.relogged = 1, e.max_value, s.max_value)             AS max_value,
    if(s.relogged = 1, e.points, s.points)                   AS points,
    if(s.relogged = 1, e.first_step, s.first_step)           AS first_step,
    if(s.relogged = 1, e.last_step, s.last_step)             AS last_step,
    s.last_ts                                                AS last_ts
FROM
(
    SELECT
        workspace, experiment, run_id, name,
        max(last_point).3           AS last_value,
        min(min_value)              AS min_value,
        max(max_value)              AS max_value,
        sum(points)                 AS points,
        min(first_step)             AS first_step,
        max(last_step)              AS last_step,
        max(last_ts)                AS last_ts,
        max(relogged)               AS relogged
    FROM metric_summaries
    GROUP BY workspace, experiment, run_id, name
) AS s
LEFT JOIN
(
    SELECT
        workspace, run_id, name,
        argMax(value, step)         AS last_value,
        min(value)                  AS min_value,
        max(value)                  AS max_value,
        count()                     AS points,
        min(step)                   AS first_step,
        max(step)                   AS last_step
    FROM metric_points FINAL
    WHERE (workspace, run_id, name) IN
    (
        SELECT workspace, run_id, name FROM metric_summaries WHERE relogged = 1
    )
    GROUP BY workspace, run_id, name
) AS e ON e.workspace = s.workspace AND e.run_id = s.run_id AND e.name = s.name;
