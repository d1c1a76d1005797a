-- Runstream projections, version 3: list/row/table values, log lines and files.
-- Replacement follows the event schemas: a list or table logged again under its name,
-- a row logged again at its index, a log line sent again at its (stream, line_no) replace
-- the earlier one; the highest version wins (seq, then the place in the batch for log
-- lines), equal versions keep the later insert. Read with FINAL. Non-finite numbers are
-- stored as they are (NaN, +inf, -inf).

-- list.logged: `values` charted by index.
CREATE TABLE IF NOT EXISTS run_lists
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    name           String,
    values         Array(Float64),
    seq            UInt64,
    ts             DateTime64(3, 'UTC'),
    event_id       UUID,
    log_partition  UInt32,
    log_offset     UInt64
)
ENGINE = ReplacingMergeTree(seq)
ORDER BY (workspace, run_id, name)
SETTINGS non_replicated_deduplication_window = 1000;

-- row.logged: one row (column -> value) at `row_index` of the table `name`.
CREATE TABLE IF NOT EXISTS run_rows
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    name           String,
    row_index      UInt64,
    cells          Map(String, Float64),
    seq            UInt64,
    ts             DateTime64(3, 'UTC'),
    event_id       UUID,
    log_partition  UInt32,
    log_offset     UInt64
)
ENGINE = ReplacingMergeTree(seq)
ORDER BY (workspace, run_id, name, row_index)
SETTINGS non_replicated_deduplication_window = 1000;

-- table.logged: columns of equal length, in the order they were logged.
CREATE TABLE IF NOT EXISTS run_tables
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    name           String,
    columns        Map(String, Array(Float64)),
    seq            UInt64,
    ts             DateTime64(3, 'UTC'),
    event_id       UUID,
    log_partition  UInt32,
    log_offset     UInt64
)
ENGINE = ReplacingMergeTree(seq)
ORDER BY (workspace, run_id, name)
SETTINGS non_replicated_deduplication_window = 1000;

-- logs.appended: one row per line; line_no counts from 0 per (run, stream).
-- version = seq * 2^20 + the line's place in its event.
CREATE TABLE IF NOT EXISTS run_logs
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    stream         LowCardinality(String),
    line_no        UInt64,
    text           String CODEC(ZSTD(3)),
    ts             DateTime64(3, 'UTC'),
    version        UInt128,
    event_id       UUID,
    log_partition  UInt32,
    log_offset     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace, run_id, stream, line_no)
SETTINGS non_replicated_deduplication_window = 1000;

-- file.uploaded: a file is complete. Listed only once every one of its `chunks`
-- chunks (0 .. chunks-1) is in file_chunks; its bytes are checked against size and
-- sha256 when it is downloaded. The latest upload (by seq) of a path wins.
CREATE TABLE IF NOT EXISTS files
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    file_id        UUID,
    kind           LowCardinality(String),
    path           String,
    size           UInt64,
    sha256         String,
    chunks         UInt32,
    content_type   String,
    seq            UInt64,
    ts             DateTime64(3, 'UTC'),
    event_id       UUID,
    log_partition  UInt32,
    log_offset     UInt64
)
ENGINE = ReplacingMergeTree(seq)
ORDER BY (workspace, run_id, file_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- file.chunk: the decoded bytes (at most 512 KiB) of chunk `chunk_index` of a file.
CREATE TABLE IF NOT EXISTS file_chunks
(
    workspace      LowCardinality(String),
    experiment     String,
    run_id         String,
    file_id        UUID,
    chunk_index    UInt32,
    data           String CODEC(ZSTD(3)),
    event_id       UUID,
    log_partition  UInt32,
    log_offset     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace, run_id, file_id, chunk_index)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 256;
