"""The processes of the load benchmark (``bench_load.py``) other than Runstream's own CLI.

- ``jobs``: training jobs. Each job is a run with an SDK client of its own (its own
  sender thread, spool and HTTP connection, as one training process has), logging
  ``--metrics`` metrics at ``--hz`` steps per second through ``run.log``. A process
  holds several jobs. It notes when each (run, step) was logged, for the lag figures.
- ``subscribers``: websocket subscribers of the live gateway, minimal RFC 6455 clients
  as in ``bench_gateway.py`` (the load generator must cost little next to the
  services). Each watches one or more runs (``snapshot: false``); a slow one reads at
  most ``--slow-bytes-per-s`` through a small receive buffer, and follows the
  protocol when told to ``resync``: it subscribes again with the cursor it was given.
- ``serve``: Runstream services in one process (``runstream.cli.main.serve``), for
  the pairs the CLI has no command for (projector and query share the embedded
  ClickHouse folder, which one process at a time may open).

The orchestrator talks to each over stdin/stdout: a process prints ``READY`` or
``SUBSCRIBED`` once set up, waits for ``GO``/``STOP`` lines, writes its samples to a
file and prints ``DONE <file>``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import sys
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402


def run_ids(experiment: str, jobs: int) -> list[str]:
    """The runs of a load: their ids are known before they start, so watchers can subscribe first."""
    return [f"{experiment}-r{i:03d}" for i in range(jobs)]


def metric_names(count: int) -> list[str]:
    return [f"m{i:02d}" for i in range(count)]


# -- training jobs ---------------------------------------------------------------------------------
def jobs_main(args: argparse.Namespace) -> None:
    """Start ``args.runs`` runs (one SDK client each), wait for ``GO <wall start>``, log, report."""
    from dataclasses import replace

    from runstream.sdk import Run, start_run
    from runstream.sdk.client import Client, set_client
    from runstream.sdk.config import ClientConfig

    base = ClientConfig.from_env()
    ids = run_ids(args.experiment, args.first + args.runs)[args.first :]
    clients: list[Client] = []
    runs: list[Run] = []
    for run_id in ids:
        client = Client(replace(base, spool_dir=Path(args.spool_dir) / run_id))
        set_client(client)
        runs.append(start_run(args.experiment, run_id=run_id, capture_output=False, snapshot=False))
        clients.append(client)
    set_client(None)
    for run in runs:
        run.flush(120)
    print("READY", flush=True)
    start = float(sys.stdin.readline().split()[1])
    cpu = time.process_time()
    names = metric_names(args.metrics)
    logged: list[array[float]] = [array("d") for _ in runs]
    late = array("d")
    interval = 1.0 / args.hz
    step = 0
    while (due := start + step * interval) < start + args.duration:
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        else:
            late.append(-wait)  # a late tick still logs its step: every point is logged
        for run, times in zip(runs, logged, strict=True):
            for i, name in enumerate(names):
                run.log(name, step * 0.001 + i, step=step)
            times.append(time.time())
        step += 1
    ended = time.time()
    cpu = time.process_time() - cpu
    for run in runs:
        run.complete()
    undelivered = [run.run_id for run in runs if not run.flush(600)]
    flushed = time.time()
    errors = sorted({c.last_error for c in clients if c.last_error})
    for client in clients:
        client.close()
    out = Path(args.out)
    out.write_bytes(
        orjson.dumps(
            {
                "logged": {run.run_id: list(times) for run, times in zip(runs, logged, strict=True)},
                "steps": step,
                "points": step * len(runs) * len(names),
                "late_ticks": len(late),
                "max_late_s": max(late, default=0.0),
                "ended": ended,
                "flushed": flushed,
                "undelivered": undelivered,
                "errors": errors,
                "cpu_s": cpu,
            }
        )
    )
    print(f"DONE {out}", flush=True)


# -- websocket subscribers -------------------------------------------------------------------------
@dataclass
class Received:
    """What one subscriber process saw: one row per event frame, in arrays (hundreds of thousands)."""

    index: array[int] = field(default_factory=lambda: array("i"))
    received_ms: array[float] = field(default_factory=lambda: array("d"))
    """Wall clock when the frame was read (``data_received``), in ms since the epoch."""
    newest_ms: array[int] = field(default_factory=lambda: array("q"))
    """The event's envelope ``ts``: when its newest point was logged (SDK clock)."""
    oldest_ms: array[int] = field(default_factory=lambda: array("q"))
    """When the event's oldest point was logged."""
    resyncs: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    """Frames whose cursor was not after the subscription's previous one."""
    seqs: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    """Per (subscriber, subscription): [events received, first seq, last seq]. One SDK client
    numbers a run's events one by one, with no hole, so a gap shows as fewer events than seqs."""
    distinct: dict[tuple[int, str], set[int]] = field(default_factory=dict)
    """Per (subscriber, subscription): the seqs received; an event on the log twice (at two
    offsets, so not a cursor duplicate) shows as more events than distinct seqs."""
    started: int = 0
    """Subscriptions whose first event was their run's ``run.created``: they saw it all."""
    ended: int = 0
    """Subscriptions that received their run's ``run.completed``."""
    incidents: list[tuple[float, int, str]] = field(default_factory=list)
    """(wall clock, subscriber, what): every resync, close and reconnect, as it was read."""

    def note(self, index: int, what: str) -> None:
        self.incidents.append((time.time(), index, what))

    def summary(self) -> dict[str, int]:
        """Events received, events missing between the first and last seq, whole runs seen."""
        return {
            "events": sum(count for count, _, _ in self.seqs.values()),
            "missing": sum(
                last - first + 1 - len(self.distinct[key]) for key, (_, first, last) in self.seqs.items()
            ),
            "same_seq_again": sum(
                count - len(self.distinct[key]) for key, (count, _, _) in self.seqs.items()
            ),
            "from_run_created": self.started,
            "subscriptions_with_events": len(self.seqs),
            "saw_run_completed": self.ended,
        }


class LoadSubscriber(asyncio.Protocol):
    """One websocket watching ``runs``, one subscription each: live from now, or after
    ``cursors`` when it connects again (as ``runstream.live`` does after a close).

    Frames from the server are unmasked and unfragmented (uvicorn sends each message in
    one frame); the client's own frames are masked as RFC 6455 requires.
    """

    def __init__(
        self,
        pool: SubscriberPool,
        index: int,
        runs: list[str],
        ready: asyncio.Future[None],
        cursors: dict[str, int] | None = None,
    ) -> None:
        self.pool, self.index, self.runs, self.ready = pool, index, runs, ready
        self.token, self.received, self.bytes_per_s = pool.token, pool.received, pool.bytes_per_s
        self.buffer = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None
        self.subscribed: set[str] = set()
        self.cursors: dict[str, int] = dict(cursors or {})
        self.next_read = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET /api/v1/live?token={self.token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"subscriber {self.index} lost its connection: {exc}"))
        if not self.pool.stopping:
            self.received.note(self.index, "connection lost")
            self.pool.reconnect_later(self)

    def send(self, message: dict[str, Any], opcode: int = 1) -> None:
        self.send_frame(orjson.dumps(message), opcode)

    def send_frame(self, data: bytes, opcode: int = 1) -> None:
        assert self.transport is not None
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        if len(data) < 126:
            head = bytes([0x80 | opcode, 0x80 | len(data)])
        else:
            head = bytes([0x80 | opcode, 0x80 | 126]) + len(data).to_bytes(2, "big")
        self.transport.write(head + mask + masked)

    def subscribe(self, sub: str, cursor: int | None = None) -> None:
        message: dict[str, Any] = {"op": "subscribe", "sub": sub, "run_id": self.runs[int(sub[1:])]}
        if cursor is None:
            message["snapshot"] = False
        else:
            message["cursor"] = cursor
        self.send(message)

    def data_received(self, data: bytes) -> None:
        at = time.time() * 1000.0
        self.throttle(len(data))
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(bytes(self.buffer[:200]))
            del self.buffer[: end + 4]
            self.open = True
            for k in range(len(self.runs)):
                self.subscribe(f"s{k}", self.cursors.get(f"s{k}"))
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length, head = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                length, head = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, head = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < head + length:
                return
            payload = bytes(buffer[head : head + length])
            del buffer[: head + length]
            if opcode == 9:
                self.send_frame(payload, opcode=10)  # pong
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.received.note(self.index, f"close {code} {payload[2:].decode(errors='replace')}")
            elif opcode == 1:
                self.frame(orjson.loads(payload), at)

    def throttle(self, size: int) -> None:
        """A slow reader: after reading ``size`` bytes, stop reading until its budget allows more."""
        if self.bytes_per_s is None or self.transport is None:
            return
        now = time.monotonic()
        self.next_read = max(self.next_read, now) + size / self.bytes_per_s
        if self.next_read > now:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(self.next_read - now, self.resume)

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def frame(self, message: dict[str, Any], at: float) -> None:
        kind = message["type"]
        received = self.received
        if kind == "event":
            sub, cursor = message["sub"], message["cursor"]
            if cursor <= self.cursors.get(sub, -1):
                received.duplicates += 1
                return
            self.cursors[sub] = cursor
            event = message["event"]
            seen = received.seqs.get((self.index, sub))
            if seen is None:
                seen = received.seqs[(self.index, sub)] = [0, event["seq"], event["seq"]]
                received.started += event["type"] == "run.created"
            seen[0] += 1
            seen[2] = max(seen[2], event["seq"])
            received.distinct.setdefault((self.index, sub), set()).add(event["seq"])
            if event["type"] == "run.completed":
                received.ended += 1
            if event["type"] == "metrics.logged":
                received.index.append(self.index)
                received.received_ms.append(at)
                received.newest_ms.append(event["ts"])
                received.oldest_ms.append(event["payload"]["points"][0].get("ts", event["ts"]))
        elif kind == "subscribed":
            self.subscribed.add(message["sub"])
            if len(self.subscribed) == len(self.runs) and not self.ready.done():
                self.ready.set_result(None)
        elif kind == "heartbeat":
            self.send({"op": "pong"})
        elif kind == "resync":
            received.resyncs += 1
            received.note(self.index, "resync")
            self.subscribe(message["sub"], message.get("cursor"))
        elif kind == "error":
            code = str(message.get("code"))
            received.errors[code] = received.errors.get(code, 0) + 1
            sub = message.get("sub")
            if isinstance(sub, str) and code in ("unavailable", "cursor_unavailable"):
                cursor = self.cursors.get(sub) if code == "unavailable" else None
                asyncio.get_running_loop().call_later(1.0, self.subscribe, sub, cursor)


async def connect(
    port: int, protocol: LoadSubscriber, receive_buffer: int | None
) -> tuple[asyncio.BaseTransport, LoadSubscriber]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    return await loop.create_connection(lambda: protocol, sock=sock)


class SubscriberPool:
    """The subscribers of one process: connects them, and connects again any the gateway closed."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.port, self.token = args.port, args.token
        self.bytes_per_s: float | None = args.slow_bytes_per_s if args.slow else None
        self.receive_buffer: int | None = args.slow_receive_buffer if args.slow else None
        self.received = Received()
        self.transports: dict[int, asyncio.BaseTransport] = {}
        self.pending: set[asyncio.Task[None]] = set()
        self.stopping = False

    async def open(
        self, index: int, runs: list[str], cursors: dict[str, int] | None = None
    ) -> asyncio.Future[None]:
        """Connect subscriber ``index``; the future is done once every subscription is confirmed."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        protocol = LoadSubscriber(self, index, runs, ready, cursors)
        transport, _ = await connect(self.port, protocol, self.receive_buffer)
        self.transports[index] = transport
        return ready

    def reconnect_later(self, protocol: LoadSubscriber) -> None:
        async def again() -> None:
            await asyncio.sleep(1.0)
            if self.stopping:
                return
            self.received.note(protocol.index, "reconnect")
            ready = await self.open(protocol.index, protocol.runs, protocol.cursors)
            ready.add_done_callback(lambda f: f.cancelled() or f.exception())

        task = asyncio.get_running_loop().create_task(again())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def close(self) -> None:
        self.stopping = True
        for transport in self.transports.values():
            transport.close()


async def subscribers_main(args: argparse.Namespace, plan: list[dict[str, Any]]) -> None:
    """Connect every subscriber of the plan, print SUBSCRIBED, record until STOP, write DONE."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    threading.Thread(
        target=lambda: (sys.stdin.readline(), loop.call_soon_threadsafe(stop.set)), daemon=True
    ).start()
    pool = SubscriberPool(args)
    readies = [await pool.open(entry["index"], entry["runs"]) for entry in plan]
    await asyncio.wait_for(asyncio.gather(*readies), 300)
    print("SUBSCRIBED", flush=True)
    cpu = time.process_time()
    await stop.wait()
    cpu = time.process_time() - cpu
    pool.close()
    received = pool.received
    out = Path(args.out)
    body = {
        "index": list(received.index),
        "received_ms": list(received.received_ms),
        "newest_ms": list(received.newest_ms),
        "oldest_ms": list(received.oldest_ms),
        "resyncs": received.resyncs,
        "errors": received.errors,
        "duplicates": received.duplicates,
        "streams": received.summary(),
        "incidents": received.incidents,
        "cpu_s": cpu,
    }
    await asyncio.to_thread(out.write_bytes, orjson.dumps(body))
    print(f"DONE {out}", flush=True)


# -- services in one process -----------------------------------------------------------------------
def serve_main(args: argparse.Namespace) -> None:
    """``runstream`` services named by ``--services`` in this process, set up from the environment."""
    from runstream.cli.main import serve
    from runstream.settings import Settings

    serve(Settings.from_env(), args.services.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    roles = parser.add_subparsers(dest="role", required=True)
    jobs = roles.add_parser("jobs")
    jobs.add_argument("--experiment", required=True)
    jobs.add_argument("--first", type=int, required=True, help="index of this process's first run")
    jobs.add_argument("--runs", type=int, required=True)
    jobs.add_argument("--metrics", type=int, required=True)
    jobs.add_argument("--hz", type=float, required=True)
    jobs.add_argument("--duration", type=float, required=True)
    jobs.add_argument("--spool-dir", required=True)
    jobs.add_argument("--out", required=True)
    subscribers = roles.add_parser("subscribers")
    subscribers.add_argument("--port", type=int, required=True)
    subscribers.add_argument("--token", required=True)
    subscribers.add_argument("--plan", required=True, help="JSON list of {index, runs}")
    subscribers.add_argument("--slow", action="store_true")
    subscribers.add_argument("--slow-bytes-per-s", type=float, default=16 * 1024)
    subscribers.add_argument("--slow-receive-buffer", type=int, default=16 * 1024)
    subscribers.add_argument("--out", required=True)
    serve = roles.add_parser("serve")
    serve.add_argument("--services", required=True, help="comma-separated, e.g. projector,query")
    args = parser.parse_args()
    if args.role == "jobs":
        jobs_main(args)
    elif args.role == "subscribers":
        asyncio.run(subscribers_main(args, orjson.loads(Path(args.plan).read_bytes())))
    else:
        serve_main(args)


if __name__ == "__main__":
    main()
