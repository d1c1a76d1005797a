-- Runstream projections, version 4: every valid event as it was on the log.
--
-- The projector writes one row per event that passed validation (malformed records go
-- to the dead-letter topic instead), with the batch's other rows. The live gateway reads
-- it to resume a websocket subscriber from a cursor older than what the event log still
-- holds (Kafka deletes old segments after its retention time); it is also the archive
-- of the log. Keyed by position, so a record applied twice is one row after merge
-- (read with FINAL, or LIMIT 1 BY topic, partition, offset).
--
-- Columns:
--   workspace, run_id, experiment  from the envelope
--   topic       the events topic the record was read from (<prefix>.events)
--   partition   its partition (a run's events are all in one: the key is run_id)
--   offset      its offset in that partition: the cursor the gateway hands out
--   event_id    the envelope's event_id
--   type        the event type (run.created, metrics.logged, ...)
--   ts          the envelope's ts (producer clock, milliseconds since the epoch), UTC
--   value       the record's bytes as they were on the log: the event's JSON
CREATE TABLE IF NOT EXISTS raw_events
(
    workspace      LowCardinality(String),
    run_id         String,
    experiment     String,
    topic          LowCardinality(String),
    partition      UInt32,
    offset         UInt64,
    event_id       UUID,
    type           LowCardinality(String),
    ts             DateTime64(3, 'UTC'),
    value          String CODEC(ZSTD(3)),
    INDEX run_id_bloom run_id TYPE bloom_filter GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset)
SETTINGS non_replicated_deduplication_window = 1000;

-- Last activity per experiment (the latest ts of any event of its runs), kept on every
-- insert into raw_events, so the experiments list never scans events.
CREATE TABLE IF NOT EXISTS experiment_activity
(
    workspace      LowCardinality(String),
    experiment     String,
    last_ts        SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (workspace, experiment)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS experiment_activity_mv TO experiment_activity AS
SELECT workspace, experiment, max(ts) AS last_ts
FROM raw_events
GROUP BY workspace, experiment;
