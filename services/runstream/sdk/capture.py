"""Copying the process's stdout and stderr into a run's log, line by line.

Python-level writes to ``sys.stdout`` and ``sys.stderr`` (print, logging,
tracebacks, tqdm) still reach the terminal unchanged and are also cut into lines
for the run. Output written by C code or subprocesses straight to the file
descriptors is not captured.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable
from typing import TextIO

MAX_LINE = 65536

LineSink = Callable[[str, str], None]


class TeeStream(io.TextIOBase):
    def __init__(self, original: TextIO, stream: str, sink: LineSink) -> None:
        self.original = original
        self.stream = stream
        self._sink = sink
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        written = self.original.write(text)
        with self._lock:
            data = self._partial + text.replace("\r\n", "\n")
            *lines, self._partial = data.split("\n")
        for line in lines:
            for start in range(0, max(len(line), 1), MAX_LINE):
                self._sink(self.stream, line[start : start + MAX_LINE])
        return written

    def flush(self) -> None:
        self.original.flush()

    def finish(self) -> None:
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self._sink(self.stream, rest[:MAX_LINE])

    def fileno(self) -> int:
        return self.original.fileno()

    def isatty(self) -> bool:
        return self.original.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


class OutputCapture:
    """Installs tees on sys.stdout and sys.stderr; ``stop`` puts the originals back."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink
        self._tees: list[TeeStream] = []

    def start(self) -> None:
        out = TeeStream(sys.stdout, "stdout", self._sink)
        err = TeeStream(sys.stderr, "stderr", self._sink)
        self._tees = [out, err]
        sys.stdout, sys.stderr = out, err

    def stop(self) -> None:
        for tee in self._tees:
            tee.finish()
        if self._tees:
            out, err = self._tees
            if sys.stdout is out:
                sys.stdout = out.original
            if sys.stderr is err:
                sys.stderr = err.original
        self._tees = []
