"""SIGKILL a process the moment a new data part appears in a ClickHouse table folder.

Usage: python -m tests.reliability.kill_on_write TABLE_DIR PID

ClickHouse writes an inserted part as ``tmp_insert_*`` and renames it to its final
name when the insert is done. Watching the ``projector_offsets`` folder with inotify
(from a process of its own, so no interpreter lock delays it) and killing on that
rename stops the projector right after it recorded a batch's positions in
ClickHouse, before it commits them on the event log: the window a kill at a
random time rarely lands in. Prints ``ARMED`` once watching, then ``KILLED <part>``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import struct
import sys

IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
_EVENT = struct.Struct("iIII")


def main(table_dir: str, pid: int, timeout: float = 60.0) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init()
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init failed")
    if libc.inotify_add_watch(fd, table_dir.encode(), IN_MOVED_TO | IN_CREATE) < 0:
        raise OSError(ctypes.get_errno(), f"cannot watch {table_dir}")
    print("ARMED", flush=True)
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            print("TIMEOUT", flush=True)
            return 1
        data = os.read(fd, 64 * 1024)
        at = 0
        while at < len(data):
            _, mask, _, size = _EVENT.unpack_from(data, at)
            name = data[at + _EVENT.size : at + _EVENT.size + size].rstrip(b"\0").decode()
            at += _EVENT.size + size
            if mask & (IN_MOVED_TO | IN_CREATE) and name.startswith("all_"):
                os.kill(pid, signal.SIGKILL)
                print(f"KILLED {name}", flush=True)
                return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
