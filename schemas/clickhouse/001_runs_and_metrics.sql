-- Runstream projections, version 1: run lifecycle, metric points and metric summaries.
-- Applied by `runstream migrate` (and on start) inside a projection database.
--
-- Every table is idempotent under re-delivery: rows are keyed by what makes them unique
-- (event_id, or the (run, name, step) the schema says is replaced), and every row keeps
-- the position of the event it came from (log_partition, log_offset). Each table
-- remembers the deduplication tokens of its last 1000 inserts
-- (non_replicated_deduplication_window), so a batch the projector writes again after a
-- failure is dropped whole, in the table and in the materialized views it feeds.

-- One row per lifecycle event (created, queued, started, completed, failed, canceled).
-- Keyed by event_id: an event applied twice is one row after merge, and run_state
-- below only keeps duplicate-proof aggregates (min, max).
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
    error          String CODEC(ZSTD(3)),
    log_partition  UInt32,
    log_offset     UInt64,
    INDEX run_id_bloom run_id TYPE bloom_filter GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace, experiment, run_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Latest state per run, kept by the materialized view below on every insert into
-- run_events (one row per run after merge: read with FINAL). Every aggregate is
-- idempotent, so an event inserted twice changes nothing:
--   status_key  (status_rank, seq, status) of the furthest lifecycle step reached
--               (created < queued < started < completed | failed | canceled), ties
--               broken by seq: the max of the tuples; its third element is the status
--   name, compute, parent_run_id   from run.created ('' from every other event): max
--   created_at, queued_at, started_at, ended_at   the first such event's ts: min (events
--               of another type carry 2299-12-31, never the minimum); has_* say whether
--               the run reached that step
--   error       from run.failed
--   last_event_at   the latest lifecycle event's ts
CREATE TABLE IF NOT EXISTS run_state
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    status_key     SimpleAggregateFunction(max, Tuple(UInt8, UInt64, String)),
    name           SimpleAggregateFunction(max, String),
    compute        SimpleAggregateFunction(max, String),
    parent_run_id  SimpleAggregateFunction(max, String),
    created_at     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    queued_at      SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    started_at     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ended_at       SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    has_created    SimpleAggregateFunction(max, UInt8),
    has_queued     SimpleAggregateFunction(max, UInt8),
    has_started    SimpleAggregateFunction(max, UInt8),
    has_ended      SimpleAggregateFunction(max, UInt8),
    error          SimpleAggregateFunction(max, String),
    last_event_at  SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    INDEX run_id_bloom run_id TYPE bloom_filter GRANULARITY 1
)
ENGINE = AggregatingMergeTree
ORDER BY (workspace, experiment, run_id)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 1024;

CREATE MATERIALIZED VIEW IF NOT EXISTS run_state_mv TO run_state AS
SELECT
    workspace,
    experiment,
    run_id,
    max((status_rank, seq, toString(status)))                                    AS status_key,
    max(if(type = 'run.created', name, ''))                                      AS name,
    max(if(type = 'run.created', compute, ''))                                   AS compute,
    max(if(type = 'run.created', parent_run_id, ''))                             AS parent_run_id,
    min(if(type = 'run.created', ts, toDateTime64('2299-12-31 00:00:00', 3, 'UTC'))) AS created_at,
    min(if(type = 'run.queued', ts, toDateTime64('2299-12-31 00:00:00', 3, 'UTC')))  AS queued_at,
    min(if(type = 'run.started', ts, toDateTime64('2299-12-31 00:00:00', 3, 'UTC'))) AS started_at,
    min(if(status_rank = 3, ts, toDateTime64('2299-12-31 00:00:00', 3, 'UTC')))      AS ended_at,
    max(type = 'run.created')                                                    AS has_created,
    max(type = 'run.queued')                                                     AS has_queued,
    max(type = 'run.started')                                                    AS has_started,
    max(status_rank = 3)                                                         AS has_ended,
    max(if(type = 'run.failed', error, ''))                                      AS error,
    max(ts)                                                                      AS last_event_at
FROM run_events
GROUP BY workspace, experiment, run_id;

-- Latest state per run, one row each. Timestamps of steps not reached (has_* = 0) are
-- meaningless; duration_ms is ended_at - started_at once both are known, else NULL.
CREATE VIEW IF NOT EXISTS runs AS
SELECT
    workspace,
    experiment,
    run_id,
    status_key.3 AS status,
    name,
    compute,
    parent_run_id,
    created_at,
    queued_at,
    started_at,
    ended_at,
    error,
    has_created,
    has_queued,
    has_started,
    has_ended,
    if(has_started AND has_ended,
       toInt64(toUnixTimestamp64Milli(ended_at) - toUnixTimestamp64Milli(started_at)),
       NULL) AS duration_ms,
    last_event_at
FROM run_state FINAL;

-- One value per (run, metric, step): a point logged again at a step replaces the earlier
-- one (highest version wins: the producer's seq, then the point's place in its batch).
-- `relog` is 1 on a point whose step was not above every step the projector had already
-- written for its series: a step logged again, a re-delivered event, or an out-of-order
-- step. A series without any such point has exactly one row per step, so it can be read
-- without FINAL and its summary below is exact; a series with one is read with FINAL.
CREATE TABLE IF NOT EXISTS metric_points
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    name           String,
    step           UInt64 CODEC(Delta, ZSTD(1)),
    value          Float64 CODEC(Gorilla, ZSTD(1)),
    ts             DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    version        UInt128,
    relog          UInt8,
    event_id       UUID,
    log_partition  UInt32,
    log_offset     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace, run_id, name, step)
SETTINGS non_replicated_deduplication_window = 1000;

-- Summary per (run, metric), kept by the materialized view below on every insert into
-- metric_points, so a runs table reads one row per run and metric, never the points.
-- min, max and last_point are idempotent (a point inserted twice changes nothing); points is
-- a sum, exact because any point that may repeat a step is flagged `relog`.
--   min_value / max_value  smallest / largest value; NaN is ignored, unless every value
--                          of the series is NaN (then NaN); -inf and +inf count.
--   last_point             (step, version, value) of the highest step's latest version: the
--                          max of those tuples; last_point.3 is the last value
--   first_step / last_step lowest / highest step
--   points                 number of points: a sum over inserts, exact while relogged = 0
--                          (no step was ever written twice)
--   last_ts                latest point timestamp
--   relogged               1 when some point of the series had `relog` = 1: min, max and
--                          points may then count a value that was replaced or repeated, and
--                          readers recompute the series from metric_points FINAL (see
--                          analytics_metric_summaries).
CREATE TABLE IF NOT EXISTS metric_summaries
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    name           String,
    min_value      SimpleAggregateFunction(min, Float64),
    max_value      SimpleAggregateFunction(max, Float64),
    last_point     SimpleAggregateFunction(max, Tuple(UInt64, UInt128, Float64)),
    first_step     SimpleAggregateFunction(min, UInt64),
    last_step      SimpleAggregateFunction(max, UInt64),
    points         SimpleAggregateFunction(sum, UInt64),
    last_ts        SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    relogged       SimpleAggregateFunction(max, UInt8),
    INDEX run_id_bloom run_id TYPE bloom_filter GRANULARITY 1
)
ENGINE = AggregatingMergeTree
ORDER BY (workspace, experiment, run_id, name)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 1024;

CREATE MATERIALIZED VIEW IF NOT EXISTS metric_summaries_mv TO metric_summaries AS
SELECT
    workspace,
    experiment,
    run_id,
    name,
    min(value)                              AS min_value,
    max(value)                              AS max_value,
    max((step, version, value))             AS last_point,
    min(step)                               AS first_step,
    max(step)                               AS last_step,
    count()                                 AS points,
    max(ts)                                 AS last_ts,
    max(relog)                              AS relogged
FROM metric_points
GROUP BY workspace, experiment, run_id, name;

-- Buckets of every series at four fixed widths (level L: 2^L steps, L in 6, 9, 12, 15;
-- bucket = step >> L), kept by the materialized view below, so that a long series is
-- downsampled by reading about max_points .. 8 x max_points rows instead of every point.
-- Same aggregates and the same exactness rule as metric_summaries: a relogged series is
-- downsampled from metric_points FINAL instead.
CREATE TABLE IF NOT EXISTS metric_rollups
(
    workspace      LowCardinality(String),
    run_id         String,
    name           String,
    level          UInt8,
    bucket         UInt64,
    min_value      SimpleAggregateFunction(min, Float64),
    max_value      SimpleAggregateFunction(max, Float64),
    last_point     SimpleAggregateFunction(max, Tuple(UInt64, UInt128, Float64)),
    first_step     SimpleAggregateFunction(min, UInt64),
    last_step      SimpleAggregateFunction(max, UInt64),
    points         SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (workspace, run_id, name, level, bucket)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS metric_rollups_mv TO metric_rollups AS
SELECT
    workspace,
    run_id,
    name,
    level,
    bitShiftRight(step, level)              AS bucket,
    min(value)                              AS min_value,
    max(value)                              AS max_value,
    max((step, version, value))             AS last_point,
    min(step)                               AS first_step,
    max(step)                               AS last_step,
    count()                                 AS points
FROM metric_points
ARRAY JOIN [6, 9, 12, 15] AS level
GROUP BY workspace, run_id, name, level, bucket;

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
