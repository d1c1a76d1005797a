-- Runstream projections, version 1: run lifecycle and metric points.
-- Applied by `runstream migrate` (and on start) inside the projection database.
-- Every table is idempotent under re-delivery: rows are keyed by what makes them unique.

-- One row per lifecycle event (created, queued, started, completed, failed, canceled).
-- Keyed by event_id: an event applied twice is one row after merge, and the `runs`
-- view only uses duplicate-proof aggregates (argMax, min, max, any).
CREATE TABLE IF NOT EXISTS run_events
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    event_id       UUID,
    type           LowCardinality(String),
    status         LowCardinality(String),
    status_rank    UInt8,
    ts             DateTime64(3, 'UTC'),
    seq            UInt64,
    name           String,
    compute        String,
    parent_run_id  String,
    tags           Map(String, String),
    error          String,
    log_partition  UInt32,
    log_offset     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace, run_id, event_id);

-- Latest state per run. Status is the furthest lifecycle step reached
-- (created < queued < started < completed | failed | canceled), ties broken by seq.
CREATE VIEW IF NOT EXISTS runs AS
SELECT
    workspace,
    run_id,
    any(experiment)                                             AS experiment,
    argMax(status, (status_rank, seq))                          AS status,
    anyIf(name, type = 'run.created')                           AS name,
    anyIf(compute, type = 'run.created')                        AS compute,
    anyIf(parent_run_id, type = 'run.created')                  AS parent_run_id,
    anyIf(tags, type = 'run.created')                           AS tags,
    minIf(ts, type = 'run.created')                             AS created_at,
    minIf(ts, type = 'run.queued')                              AS queued_at,
    minIf(ts, type = 'run.started')                             AS started_at,
    minIf(ts, status_rank = 3)                                  AS ended_at,
    anyIf(error, type = 'run.failed')                           AS error,
    countIf(type = 'run.created') > 0                           AS has_created,
    countIf(type = 'run.queued') > 0                            AS has_queued,
    countIf(type = 'run.started') > 0                           AS has_started,
    countIf(status_rank = 3) > 0                                AS has_ended,
    max(ts)                                                     AS last_event_at
FROM run_events
GROUP BY workspace, run_id;

-- One value per (run, metric, step): a point logged again at a step replaces the earlier
-- one (highest version wins: the producer's seq, then the point's place in its batch).
-- Read with FINAL.
CREATE TABLE IF NOT EXISTS metric_points
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    name           String,
    step           UInt64,
    value          Float64,
    ts             DateTime64(3, 'UTC'),
    version        UInt128,
    event_id       UUID
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace, run_id, name, step);

-- Where each projector group stands in each partition, written after the rows of a
-- batch: on restart a projector skips records it already applied, whatever the log's
-- own committed offsets say.
CREATE TABLE IF NOT EXISTS projector_offsets
(
    grp            String,
    topic          String,
    partition      UInt32,
    next_offset    UInt64,
    updated_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (grp, topic, partition);
