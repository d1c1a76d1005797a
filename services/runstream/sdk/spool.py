"""The SDK's durable spool: every batch of events is written here before it is sent.

A batch leaves the spool only once the server (or Kafka) acknowledged it, so an
unreachable server costs nothing but disk: batches wait here, in order, and are
resent when it is back. A process that dies leaves its batches behind; the next
process using the same spool adopts them and sends them first. SQLite in WAL mode,
safe for several processes (forked dataloader workers) at once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from runstream.errors import RunstreamError


class SpoolError(RunstreamError):
    """The spool could not be written (e.g. the disk is full)."""

    retriable = True


@dataclass(frozen=True)
class SpooledBatch:
    batch_id: int
    body: bytes
    events: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    owner_pid INTEGER NOT NULL,
    created REAL NOT NULL,
    events INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_owner ON batches (owner, batch_id);
"""


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.owner = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
            self._adopt_orphans(db)
        return self._db

    def _adopt_orphans(self, db: sqlite3.Connection) -> None:
        owners = db.execute("SELECT DISTINCT owner, owner_pid FROM batches WHERE owner != ?", (self.owner,))
        for owner, pid in owners.fetchall():
            if not _alive(int(pid)):
                db.execute(
                    "UPDATE batches SET owner = ?, owner_pid = ? WHERE owner = ?",
                    (self.owner, os.getpid(), owner),
                )

    def put(self, body: bytes, events: int) -> int:
        with self._lock:
            try:
                cursor = self._conn().execute(
                    "INSERT INTO batches (owner, owner_pid, created, events, body) VALUES (?, ?, ?, ?, ?)",
                    (self.owner, os.getpid(), time.time(), events, body),
                )
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot write the spool {self.path}: {exc}") from exc
            return int(cursor.lastrowid or 0)

    def oldest(self, limit: int = 16) -> list[SpooledBatch]:
        with self._lock:
            try:
                rows = (
                    self._conn()
                    .execute(
                        "SELECT batch_id, body, events FROM batches WHERE owner = ?"
                        " ORDER BY batch_id LIMIT ?",
                        (self.owner, limit),
                    )
                    .fetchall()
                )
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
        return [SpooledBatch(int(r[0]), bytes(r[1]), int(r[2])) for r in rows]

    def remove(self, batch_id: int) -> None:
        with self._lock:
            try:
                self._conn().execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot update the spool {self.path}: {exc}") from exc

    def pending(self) -> tuple[int, int]:
        """(batches, events) waiting to be sent by this process."""
        with self._lock:
            row = (
                self._conn()
                .execute(
                    "SELECT count(*), coalesce(sum(events), 0) FROM batches WHERE owner = ?", (self.owner,)
                )
                .fetchone()
            )
        return int(row[0]), int(row[1])

    def reset_after_fork(self) -> None:
        """In a forked child: a fresh owner and connection (SQLite handles must not cross fork)."""
        self._db = None
        self._lock = threading.Lock()
        self.owner = uuid.uuid4().hex

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
