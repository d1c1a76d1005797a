-- Runstream projections, version 2: tags, properties and parent/child links of runs.
-- Tags and properties: one row per (run, key) per event; the value with the highest
-- seq wins (ties: the later position on the log), so readers take
-- argMax(value, (seq, log_partition, log_offset)). Tags given in run.created count as a
-- run.tags_set at the seq of run.created.

CREATE TABLE IF NOT EXISTS run_tags
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    key            String,
    value          String,
    seq            UInt64,
    event_id       UUID,
    log_partition  UInt32,
    log_offset     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace, run_id, key, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- value_json: the property's value as JSON text (a string, number or boolean).
CREATE TABLE IF NOT EXISTS run_properties
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    key            String,
    value_json     String,
    seq            UInt64,
    event_id       UUID,
    log_partition  UInt32,
    log_offset     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace, run_id, key, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per (parent, child): from run.child_linked (sent on the parent) and from a
-- child's run.created naming its parent. `name` is the child's display name when the
-- link carried one.
CREATE TABLE IF NOT EXISTS run_links
(
    workspace       LowCardinality(String),
    experiment      String,
    parent_run_id   String,
    child_run_id    String,
    name            String,
    seq             UInt64,
    event_id        UUID,
    log_partition   UInt32,
    log_offset      UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace, parent_run_id, child_run_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
