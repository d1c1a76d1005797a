"""What a run produced besides metrics: list/row/table values, log lines and files."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from runstream.events.codec import to_wire_float
from runstream.query import params
from runstream.query.paging import trim_log_page
from runstream.query.params import BadParameterError, NotFoundError
from runstream.query.runs import iso
from runstream.store.clickhouse import ProjectionStore

DEFAULT_LOG_LINES = 1000
MAX_LOG_LINES = 10_000
CHUNKS_PER_READ = 32  # 16 MiB of file bytes per query at most

VALUES_SQL = """
SELECT 'list' AS kind, name, 0 AS row_index, ['' ] AS keys, [values] AS cols
FROM run_lists FINAL WHERE workspace = {ws:String} AND run_id = {run_id:String}
UNION ALL
SELECT 'table' AS kind, name, 0 AS row_index, mapKeys(columns) AS keys, mapValues(columns) AS cols
FROM run_tables FINAL WHERE workspace = {ws:String} AND run_id = {run_id:String}
UNION ALL
SELECT 'row' AS kind, name, row_index, mapKeys(cells) AS keys, arrayMap(v -> [v], mapValues(cells)) AS cols
FROM run_rows FINAL WHERE workspace = {ws:String} AND run_id = {run_id:String}
ORDER BY kind, name, row_index
"""

LOGS_SQL = """
SELECT stream, line_no, text, ts
FROM run_logs FINAL
WHERE workspace = {ws:String} AND run_id = {run_id:String}
  AND has({streams:Array(String)}, stream) AND line_no > {after:Int64}
ORDER BY line_no, stream
LIMIT {limit:UInt32}
"""

# Complete files only (every chunk 0 .. chunks-1 present), the latest upload of each path.
FILES_SQL = """
SELECT path,
       argMax((file_id, kind, size, sha256, chunks, content_type, ts), (seq, log_partition, log_offset)) AS f
FROM files FINAL
WHERE workspace = {ws:String} AND run_id = {run_id:String}
  AND (chunks = 0 OR (file_id, chunks) IN
  (
      SELECT file_id, toUInt32(uniqExact(chunk_index)) FROM file_chunks
      WHERE workspace = {ws:String} AND run_id = {run_id:String} AND chunk_index < 4096
      GROUP BY file_id
  ))
  AND ({path:String} = '' OR path = {path:String})
  AND ({kind:String} = '' OR kind = {kind:String})
GROUP BY path
ORDER BY path
"""

CHUNKS_SQL = """
SELECT chunk_index, data FROM file_chunks
WHERE workspace = {ws:String} AND run_id = {run_id:String} AND file_id = {file_id:UUID}
  AND chunk_index >= {first:UInt32} AND chunk_index < {stop:UInt32}
ORDER BY chunk_index
LIMIT 1 BY chunk_index
"""

RUN_EXISTS_SQL = """
SELECT count() FROM raw_events WHERE run_id = {run_id:String} AND workspace = {ws:String}
"""


@dataclass(frozen=True)
class StoredFile:
    path: str
    file_id: str
    kind: str
    size: int
    sha256: str
    chunks: int
    content_type: str
    uploaded_at: str | None

    def document(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.media_type,
            "uploaded_at": self.uploaded_at,
        }

    @property
    def media_type(self) -> str:
        return self.content_type or mimetypes.guess_type(self.path)[0] or "application/octet-stream"

    @property
    def disposition(self) -> str:
        name = self.path.rsplit("/", 1)[-1]
        ascii_name = name.encode("ascii", "replace").decode("ascii").replace('"', "_").replace("\\", "_")
        return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


class CorruptFileError(Exception):
    """A stored file's bytes do not match its size or sha256."""


def _wire_list(values: list[float]) -> list[float | str]:
    return [to_wire_float(v) for v in values]


class ArtifactQueries:
    def __init__(self, store: ProjectionStore) -> None:
        self.store = store

    async def run_exists(self, ws: str, run_id: str) -> bool:
        rows = await self.store.query(RUN_EXISTS_SQL, {"ws": ws, "run_id": run_id})
        return bool(rows[0][0])

    async def values(self, ws: str, run_id: str) -> dict[str, Any]:
        """Lists, tables (dict of columns) and rows logged one by one (as tables, by row index)."""
        rows = await self.store.query(VALUES_SQL, {"ws": ws, "run_id": run_id})
        lists: dict[str, list[float | str]] = {}
        tables: dict[str, dict[str, list[float | str]]] = {}
        row_tables: dict[str, list[tuple[int, dict[str, float]]]] = {}
        for kind, name, row_index, keys, cols in rows:
            if kind == "list":
                lists[name] = _wire_list(cols[0])
            elif kind == "table":
                tables[name] = {k: _wire_list(v) for k, v in zip(keys, cols, strict=True)}
            else:
                row_tables.setdefault(name, []).append(
                    (row_index, {k: v[0] for k, v in zip(keys, cols, strict=True)})
                )
        as_tables: dict[str, dict[str, list[float | str | None]]] = {}
        for name, table_rows in row_tables.items():
            columns = list(dict.fromkeys(k for _, cells in table_rows for k in cells))
            as_tables[name] = {
                c: [None if c not in cells else to_wire_float(cells[c]) for _, cells in table_rows]
                for c in columns
            }
        if not rows and not await self.run_exists(ws, run_id):
            raise NotFoundError(f"no run {run_id!r} in workspace {ws!r}")
        return {"run_id": run_id, "lists": lists, "tables": tables, "rows": as_tables}

    async def logs(self, ws: str, run_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        """Log lines after ``after_line``, in (line_no, stream) order; a page never splits a line_no."""
        stream = params.choice(query, "stream", ("stdout", "stderr"), None)
        after = params.integer(query, "after_line", -1, minimum=-1, maximum=2**53)
        limit = params.integer(query, "limit", DEFAULT_LOG_LINES, minimum=1, maximum=MAX_LOG_LINES)
        streams = [stream] if stream else ["stdout", "stderr"]
        rows = await self.store.query(
            LOGS_SQL, {"ws": ws, "run_id": run_id, "streams": streams, "after": after, "limit": limit + 2}
        )
        lines = [{"stream": s, "line_no": n, "text": t, "ts": iso(ts)} for s, n, t, ts in rows]
        page, next_after = trim_log_page(lines, limit)
        if not page and after < 0 and not await self.run_exists(ws, run_id):
            raise NotFoundError(f"no run {run_id!r} in workspace {ws!r}")
        return {"run_id": run_id, "lines": page, "next_after_line": next_after}

    async def files(self, ws: str, run_id: str, *, path: str = "", kind: str = "") -> list[StoredFile]:
        rows = await self.store.query(FILES_SQL, {"ws": ws, "run_id": run_id, "path": path, "kind": kind})
        out = []
        for file_path, (file_id, file_kind, size, sha256, chunks, content_type, ts) in rows:
            out.append(
                StoredFile(
                    file_path, str(file_id), file_kind, int(size), sha256, int(chunks), content_type, iso(ts)
                )
            )
        return out

    async def listing(self, ws: str, run_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        kind = params.choice(query, "kind", ("snapshot", "output"), "") or ""
        files = await self.files(ws, run_id, kind=kind)
        if not files and not await self.run_exists(ws, run_id):
            raise NotFoundError(f"no run {run_id!r} in workspace {ws!r}")
        return {"run_id": run_id, "files": [f.document() for f in files]}

    async def find(self, ws: str, run_id: str, *, path: str = "", kind: str = "") -> StoredFile:
        files = await self.files(ws, run_id, path=path, kind=kind)
        if not files:
            what = f"file {path!r}" if path else f"{kind} file"
            raise NotFoundError(f"run {run_id!r} has no complete {what}")
        if path:
            return files[0]
        return max(files, key=lambda f: f.uploaded_at or "")

    async def _chunks(self, ws: str, run_id: str, stored: StoredFile, first: int, stop: int) -> list[bytes]:
        rows = await self.store.query(
            CHUNKS_SQL,
            {"ws": ws, "run_id": run_id, "file_id": stored.file_id, "first": first, "stop": stop},
            column_formats={"data": "bytes"},
        )
        if [int(i) for i, _ in rows] != list(range(first, stop)):
            raise CorruptFileError(f"{stored.path}: chunks {first}..{stop - 1} are not all stored")
        return [bytes(data) for _, data in rows]

    async def verify(self, ws: str, run_id: str, stored: StoredFile) -> bytes | None:
        """Check size and sha256; returns the bytes when the file fits in one read."""
        digest = hashlib.sha256()
        size = 0
        whole: list[bytes] = []
        for first in range(0, stored.chunks, CHUNKS_PER_READ):
            chunks = await self._chunks(
                ws, run_id, stored, first, min(first + CHUNKS_PER_READ, stored.chunks)
            )
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
            if stored.chunks <= CHUNKS_PER_READ:
                whole = chunks
        if size != stored.size or digest.hexdigest() != stored.sha256:
            raise CorruptFileError(
                f"{stored.path}: {size} bytes with sha256 {digest.hexdigest()}, "
                f"expected {stored.size} bytes with sha256 {stored.sha256}"
            )
        return b"".join(whole) if stored.chunks <= CHUNKS_PER_READ else None

    async def stream(self, ws: str, run_id: str, stored: StoredFile) -> AsyncIterator[bytes]:
        for first in range(0, stored.chunks, CHUNKS_PER_READ):
            for chunk in await self._chunks(
                ws, run_id, stored, first, min(first + CHUNKS_PER_READ, stored.chunks)
            ):
                yield chunk


def file_path(raw: str) -> str:
    if not raw or raw.startswith("/") or "\\" in raw or len(raw) > 1024:
        raise BadParameterError("path", f"not a file path of a run: {raw[:80]!r}")
    return raw
