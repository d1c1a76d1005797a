"""The terminal views of ``runstream``: ``runstream tail RUN_ID`` and ``runstream runs --compute NAME``.

``tail`` follows a run's log lines and status changes over the live gateway, the
same code path as ``run.wait_for_completion(show_output=True)``, and exits with
the run's outcome: 0 completed, 1 failed, 130 canceled (2: no such run, or the
server cannot be reached or refused the token). ``runs --compute`` lists the
queued and active runs of a compute target; ``--watch`` redraws the list on every
change the gateway pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from runstream.errors import AuthError
from runstream.live.client import LiveClient
from runstream.live.messages import LiveError, Subscribed, Update
from runstream.live.state import RunsState
from runstream.live.sync import wait_for_completion
from runstream.sdk.config import ClientConfig

EXIT_OF_STATUS = {"completed": 0, "failed": 1, "canceled": 130}
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
SETTLE_SECONDS = 1.0


class TerminalError(Exception):
    """A problem to report in one line, with exit code 2."""


@dataclass(frozen=True)
class Target:
    api: str
    token: str | None
    workspace: str

    @classmethod
    def resolve(cls, api: str | None, token: str | None, workspace: str | None) -> Target:
        config = ClientConfig.from_env()
        return cls((api or config.api).rstrip("/"), token or config.token, workspace or config.workspace)

    def get(self, path: str) -> Any:
        """GET a query API path; a clear ``TerminalError`` for every failure."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.get(
                f"{self.api}{path}", params={"workspace": self.workspace}, headers=headers, timeout=15.0
            )
        except httpx.HTTPError as exc:
            raise TerminalError(f"cannot reach Runstream at {self.api} ({exc}); is it running?") from exc
        if response.status_code in (401, 403):
            raise TerminalError(
                f"{self.api} refused the token (HTTP {response.status_code}): set RUNSTREAM_TOKEN or --token"
            )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise TerminalError(f"{self.api}{path}: HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def require(self, path: str, missing: str) -> Any:
        """``get``, with ``missing`` as the error when the path names nothing (404)."""
        found = self.get(path)
        if found is None:
            raise TerminalError(missing)
        return found


@contextlib.contextmanager
def progress(message: str, stream: TextIO | None = None) -> Iterator[None]:
    """A spinner on a terminal (one line otherwise) while something slow happens; erased after."""
    stream = stream or sys.stderr
    if not stream.isatty():
        print(f"runstream: {message}", file=stream, flush=True)
        yield
        return
    stop = threading.Event()

    def spin() -> None:
        for char in itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"):
            stream.write(f"\r{char} {message}")
            stream.flush()
            if stop.wait(0.1):
                break
        stream.write("\r\x1b[2K")
        stream.flush()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def tail(run_id: str, target: Target, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Follow a run until it ends; the exit code of its outcome."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        with progress(f"connecting to {target.api} for run {run_id} …", err):
            target.require(
                f"/api/v1/runs/{quote(run_id, safe='')}",
                f"no run {run_id!r} in workspace {target.workspace!r} at {target.api}",
            )
        status = wait_for_completion(
            target.api, target.token, run_id, workspace=target.workspace, show_output=True, out=out, err=err
        )
    except TerminalError as exc:
        print(f"runstream: {exc}", file=err, flush=True)
        return EXIT_USAGE
    except AuthError as exc:
        print(f"runstream: {exc}: set RUNSTREAM_TOKEN or --token", file=err, flush=True)
        return EXIT_USAGE
    except LiveError as exc:
        print(f"runstream: {exc}", file=err, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("runstream: stopped following (the run goes on)", file=err, flush=True)
        return EXIT_INTERRUPTED
    return EXIT_OF_STATUS.get(status, 1)


COLUMNS = ("run id", "status", "experiment", "started", "parent")


def compute_rows(
    listing: dict[str, Any] | None, live: RunsState | None = None, left: set[str] | None = None
) -> list[tuple[str, ...]]:
    """Rows of the runs table: the query API's listing, corrected by the gateway's live state.

    The gateway may be ahead of the projection the listing reads: a run it says
    ``left`` is not shown, a run it holds shows its live status, and a run it
    holds that the listing lacks yet is added.
    """
    rows: dict[str, tuple[str, ...]] = {}

    def walk(nodes: list[dict[str, Any]], depth: int) -> None:
        for node in nodes:
            rows[node["run_id"]] = (
                "  " * depth + node["run_id"],
                node["status"],
                node["experiment"] or "",
                (node.get("started_at") or "")[:19].replace("T", " "),
                node.get("parent_run_id") or "",
            )
            walk(node.get("children") or [], depth + 1)

    walk((listing or {}).get("runs") or [], 0)
    if live is None:
        return list(rows.values())
    out: list[tuple[str, ...]] = []
    for run_id, row in rows.items():
        if run_id in (left or set()):
            continue  # left the target since the listing was read
        held = live.runs.get(run_id)
        out.append((row[0], (held.status if held else None) or row[1], *row[2:]))
    for run_id, held in sorted(live.runs.items()):
        if run_id not in rows:
            out.append((run_id, held.status or "", held.experiment or "", "", ""))
    return out


def format_table(name: str, rows: list[tuple[str, ...]]) -> str:
    queued = sum(1 for r in rows if r[1] == "queued")
    head = f"compute {name}: {len(rows) - queued} active, {queued} queued"
    if not rows:
        return head + "\n(no queued or active runs)"
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def runs(
    name: str, target: Target, *, watch: bool, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    path = f"/api/v1/compute/{quote(name, safe='')}"
    try:
        with progress(f"reading compute target {name} from {target.api} …", err):
            listing = target.require(path, f"no compute target {name!r} in workspace {target.workspace!r}")
        if not watch:
            print(format_table(name, compute_rows(listing)), file=out, flush=True)
            return 0
        return asyncio.run(_watch(name, target, path, out))
    except TerminalError as exc:
        print(f"runstream: {exc}", file=err, flush=True)
        return EXIT_USAGE
    except (AuthError, LiveError) as exc:
        print(f"runstream: {exc}", file=err, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0


async def _watch(name: str, target: Target, path: str, out: TextIO) -> int:
    """Redraw on every push; once more a second after the last one, when the listing has caught up.

    The gateway pushes a change the moment it is on the log, a little before the
    projection the listing reads has it (child runs without a compute of their own
    are known only to the listing).
    """
    clear = "\x1b[H\x1b[2J" if out.isatty() else ""
    state = RunsState()
    left: set[str] = set()

    async def draw() -> None:
        listing = await asyncio.to_thread(target.get, path)
        table = format_table(name, compute_rows(listing, state, left))
        print(f"{clear}{table}{'' if clear else chr(10)}", file=out, flush=True)

    async with LiveClient(target.api, target.token) as client:
        messages = client.subscribe_compute(name, workspace=target.workspace)
        settle = False
        while True:
            try:
                message = await asyncio.wait_for(anext(messages), SETTLE_SECONDS if settle else None)
            except TimeoutError:
                settle = False
                await draw()
                continue
            except StopAsyncIteration:
                return 0
            if isinstance(message, Subscribed):
                cursor = message.cursor if isinstance(message.cursor, dict) else {}
                state.apply_snapshot(message.snapshot, cursor)
            elif isinstance(message, Update):
                state.apply(message)
                for run_id, change in message.runs.items():
                    (left.add if change.get("active") is False else left.discard)(run_id)
            else:
                continue
            await draw()
            settle = True
