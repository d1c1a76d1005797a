"""Zipping a run's source folder: the snapshot uploaded at start."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from runstream.errors import RunstreamError
from runstream.sdk.ignore import IgnoreRules

DEFAULT_MAX_BYTES = 25 * 1024 * 1024
MAX_FILES = 10_000


class SnapshotTooLargeError(RunstreamError):
    """The folder holds more than the snapshot cap allows."""


def collect_files(root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> list[tuple[Path, str]]:
    """(path, name in the zip) of every file kept, or SnapshotTooLargeError."""
    rules = IgnoreRules.for_folder(root)
    kept: list[tuple[Path, str]] = []
    total = 0
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root).as_posix()
        rel_folder = "" if rel_folder == "." else rel_folder + "/"
        dirs[:] = sorted(d for d in dirs if not rules.ignored(rel_folder + d, is_dir=True))
        for name in sorted(files):
            relative = rel_folder + name
            path = Path(folder) / name
            if rules.ignored(relative, is_dir=False) or not path.is_file() or path.is_symlink():
                continue
            total += path.stat().st_size
            kept.append((path, relative))
            if total > max_bytes or len(kept) > MAX_FILES:
                raise SnapshotTooLargeError(
                    f"snapshot of {root} skipped: its files are over the cap of "
                    f"{max_bytes // (1024 * 1024)} MiB "
                    f"or {MAX_FILES} files (at {relative}); list large files and folders in "
                    f"{root / '.runstreamignore'}, choose another snapshot_dir=, or raise snapshot_max_bytes="
                )
    return kept


def build_snapshot(root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The zip of ``root`` (ignore rules applied), or SnapshotTooLargeError."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path, relative in collect_files(root, max_bytes):
            archive.write(path, relative)
    return buffer.getvalue()
