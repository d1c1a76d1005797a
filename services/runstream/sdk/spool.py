"""The SDK's durable spool: every batch of events is written here before it is sent.

A batch leaves the spool only once the server (or Kafka) acknowledged it, so an
unreachable server costs nothing but disk: batches wait here, in order, and are
resent when it is back.

Each process writes a SQLite file of its own in the spool folder
(``spool-<pid>-<id>.sqlite3``, WAL mode). A process never opens another live
process's file: SQLite connections and locks must not cross ``fork()``, and
forked dataloader workers each get a fresh file. A process that dies leaves its
file behind; the next process to open the spool folder adopts it (an atomic
rename decides who), moves its batches to the front of its own file and sends
them first.
"""

from __future__ import annotations

import os
import re
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
    created REAL NOT NULL,
    events INTEGER NOT NULL,
    body BLOB NOT NULL
);
"""
_FILE = re.compile(r"^spool-(\d+)-([0-9a-f]{32})\.sqlite3$")


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._new_identity()

    def _new_identity(self) -> None:
        self.owner = uuid.uuid4().hex
        self.path = self.folder / f"spool-{os.getpid()}-{self.owner}.sqlite3"

    @property
    def lock(self) -> threading.Lock:
        """Held around every SQLite call (and by ``fork()``: no call is ever cut in half)."""
        return self._lock

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            db = _open(self.path)
            self._db = db
            self._adopt_orphans(db)
        return self._db

    def _adopt_orphans(self, db: sqlite3.Connection) -> None:
        for path in sorted(self.folder.glob("spool-*.sqlite3"), key=_mtime):
            match = _FILE.match(path.name)
            if path == self.path or match is None or _alive(int(match[1])):
                continue
            claimed = path.with_name(f"adopting-{self.owner}-{path.name}")
            try:
                os.rename(path, claimed)
                for suffix in ("-wal", "-shm"):
                    if Path(f"{path}{suffix}").exists():
                        os.rename(f"{path}{suffix}", f"{claimed}{suffix}")
            except FileNotFoundError:
                continue  # another process adopted it first
            orphan = _open(claimed)
            try:
                rows = orphan.execute(
                    "SELECT created, events, body FROM batches ORDER BY batch_id"
                ).fetchall()
            finally:
                orphan.close()
            with db:
                db.executemany("INSERT INTO batches (created, events, body) VALUES (?, ?, ?)", rows)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{claimed}{suffix}").unlink(missing_ok=True)

    def put(self, body: bytes, events: int) -> int:
        with self._lock:
            try:
                cursor = self._conn().execute(
                    "INSERT INTO batches (created, events, body) VALUES (?, ?, ?)",
                    (time.time(), events, body),
                )
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot write the spool {self.path}: {exc}") from exc
            return int(cursor.lastrowid or 0)

    def oldest(self, limit: int = 16) -> list[SpooledBatch]:
        with self._lock:
            try:
                rows = self._conn().execute(
                    "SELECT batch_id, body, events FROM batches ORDER BY batch_id LIMIT ?", (limit,)
                )
                found = rows.fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
        return [SpooledBatch(int(r[0]), bytes(r[1]), int(r[2])) for r in found]

    def remove(self, batch_id: int) -> None:
        with self._lock:
            try:
                self._conn().execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot update the spool {self.path}: {exc}") from exc

    def pending(self) -> tuple[int, int]:
        """(batches, events) waiting to be sent by this process."""
        with self._lock:
            if self._db is None and not any(self.folder.glob("spool-*.sqlite3")):
                return 0, 0
            try:
                row = (
                    self._conn().execute("SELECT count(*), coalesce(sum(events), 0) FROM batches").fetchone()
                )
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
        return int(row[0]), int(row[1])

    def reset_after_fork(self) -> None:
        """In a forked child: a file of its own; the parent's connection is left untouched."""
        self._db = None
        self._lock = threading.Lock()
        self._new_identity()

    def close(self) -> None:
        with self._lock:
            if self._db is None:
                return
            empty = self._db.execute("SELECT count(*) FROM batches").fetchone()[0] == 0
            self._db.close()
            self._db = None
            if empty:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
