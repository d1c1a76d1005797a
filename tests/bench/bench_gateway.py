"""The live gateway: latency from an event's append to a subscriber receiving it, and memory.

Prints, in one run, for 1,000 and 50,000 points/s in total, with 1 and with 1,000
subscribers on one gateway process:

- latency (p50, p99, max, ms) from "the append of the event holding the point returned"
  (``EventLog.append`` on the gateway's own log, in its process, as ingest does inside
  ``runstream up``; on the embedded log, the instant its COMMIT returned in the log's
  thread, see ``time_commits``) to "a subscriber's websocket received the frame holding it"
  (``recv()`` returned in a subscriber process on the same machine); both instants are
  CLOCK_MONOTONIC (``time.monotonic_ns``), which all processes of a Linux machine share.
  One sample per (subscriber, event); all points of an event share its latency;
- against a polling widget refreshing every 10-15 s (Azure ML's notebook widget),
  modelled: a point waits for the next refresh, uniform in [0, T), T uniform in
  [10, 15] s (not measured; the ratio says how many times sooner the push arrives);
- gateway memory per subscriber: RSS of the gateway process with the subscribers
  connected and subscribed, minus before they connected, divided by their number;
  and the same after the load;
- gateway CPU (fraction of one core) and resyncs during each load.

The load imitates the SDK: each run sends one ``metrics.logged`` event per flush
interval (``--flush-interval``, default 0.05 s) with the points logged meanwhile (at
most 2,000 per event). 1 subscriber watches 1 run; 1,000 subscribers watch 100 runs, 10
each (``--runs``). Subscribers ask for every event (no ``max_rate``) and no snapshot;
they are minimal websocket clients (``Subscriber``) in ``--client-processes`` processes
(2) on loopback, so that the load generator costs little next to the gateway on the
same machine. The gateway runs alone (``Service.GATEWAY``, without permessage-deflate
as ``runstream gateway`` serves it) on the embedded log (``--kafka host:port`` for a
Kafka broker instead).

    PYTHONPATH=. .venv/bin/python tests/bench/bench_gateway.py [--quick] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from runstream.eventlog.local import LocalEventLog  # noqa: E402
from tests.bench import report  # noqa: E402

TOKEN = "bench-token"
MAX_POINTS_PER_EVENT = 2000


# -- the gateway process ------------------------------------------------------------------------
def metrics_event(run_id: str, seq: int, step: int, count: int) -> bytes:
    now = int(time.time() * 1000)
    body = {
        "event_id": f"00000000-0000-4000-8000-{seq:012d}",
        "type": "metrics.logged",
        "schema_version": 1,
        "workspace": "default",
        "experiment": "bench",
        "run_id": run_id,
        "ts": now,
        "seq": seq,
        "payload": {"points": [{"name": "loss", "value": 0.5, "step": step + i} for i in range(count)]},
    }
    return orjson.dumps(body)


async def produce(log: Any, topic: str, args: argparse.Namespace, out: Path) -> None:
    """Every run flushes its points every ``flush_interval`` (phases spread), for ``duration``."""
    runs = [f"bench-r{i}" for i in range(args.runs)]
    per_flush = args.points * args.flush_interval / args.runs
    rng = random.Random(1)
    due = {r: time.monotonic() + rng.uniform(0, args.flush_interval) for r in runs}
    owed = dict.fromkeys(runs, 0.0)
    seq = dict.fromkeys(runs, 0)
    step = dict.fromkeys(runs, 0)
    times: list[tuple[str, int, int, int, int]] = []
    end = time.monotonic() + args.duration
    while (now := time.monotonic()) < end:
        records: list[tuple[bytes, bytes]] = []
        meta: list[tuple[str, int, int]] = []
        for run in runs:
            if due[run] > now:
                continue
            while due[run] <= now:  # a late tick still owes every flush that came due
                due[run] += args.flush_interval
                owed[run] += per_flush
            count = int(owed[run])
            owed[run] -= count
            while count > 0:
                n = min(count, MAX_POINTS_PER_EVENT)
                records.append((run.encode(), metrics_event(run, seq[run], step[run], n)))
                meta.append((run, seq[run], n))
                seq[run] += 1
                step[run] += n
                count -= n
        if records:
            before = time.monotonic_ns()
            await log.append(topic, records)
            after = getattr(log, "bench_committed_ns", None) or time.monotonic_ns()
            times += [(run, s, n, before, after) for run, s, n in meta]
        await asyncio.sleep(max(0.0, min(due.values()) - time.monotonic()))
    await asyncio.to_thread(out.write_bytes, orjson.dumps(times))


def time_commits(log: LocalEventLog) -> None:
    """Note when each write's COMMIT returns, in the log's own thread: that is when an append
    is durable and readable. The producer coroutine shares the gateway's event loop and may
    resume later than that under load; its own clock would then start the latency late."""
    original = log._run

    async def run(fn: Any, *, reader: bool = False) -> Any:
        if reader:
            return await original(fn, reader=True)

        def timed(db: Any) -> Any:
            result = fn(db)
            log.bench_committed_ns = time.monotonic_ns()  # type: ignore[attr-defined]
            return result

        return await original(timed)

    log._run = run  # type: ignore[method-assign]


async def gateway_main(args: argparse.Namespace) -> None:
    import uvicorn

    from runstream.server.app import Service, create_app
    from runstream.settings import Settings

    data = Path(args.data_dir)
    settings = Settings(
        data_dir=data,
        kafka_bootstrap=args.kafka,
        clickhouse_dsn=f"chdb://{data / 'clickhouse'}",
        topic_prefix=f"bench{os.getpid()}",
        partitions=4,
        token=TOKEN,
        port=0,
    )
    app = create_app(settings, [Service.GATEWAY])
    runtime = app.state.runtime
    if isinstance(runtime.log, LocalEventLog):
        time_commits(runtime.log)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        ws_max_size=1024 * 1024,
        ws_per_message_deflate=False,  # as `runstream gateway` serves it
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.02)
    commands: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(
        target=lambda: [loop.call_soon_threadsafe(commands.put_nowait, line.strip()) for line in sys.stdin],
        daemon=True,
    ).start()
    print(f"READY {server.servers[0].sockets[0].getsockname()[1]}", flush=True)
    while (command := await commands.get()) != "QUIT":
        if command == "GO":
            out = data / "appends.json"
            resyncs = runtime.hub.resyncs
            await produce(runtime.log, settings.events_topic, args, out)
            print(f"PRODUCED {out} {runtime.hub.resyncs - resyncs}", flush=True)
    server.should_exit = True
    await serving


# -- a subscriber process -------------------------------------------------------------------------
class Subscriber(asyncio.Protocol):
    """A minimal RFC 6455 client: the load generator must cost little next to the gateway.

    Frames from the server are unmasked and unfragmented (uvicorn sends each message
    in one frame); the client's own frames (subscribe, pong) are masked as required.
    """

    def __init__(self, index: int, run: str, received: list[Any], ready: asyncio.Future[None]) -> None:
        self.index, self.run, self.received, self.ready = index, run, received, ready
        self.buffer = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET /api/v1/live?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def send_text(self, text: bytes, opcode: int = 1) -> None:
        mask = os.urandom(4)
        assert self.transport is not None and len(text) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(text)]) + mask + masked)

    def data_received(self, data: bytes) -> None:
        at = time.monotonic_ns()
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(bytes(self.buffer[:200]))
            del self.buffer[: end + 4]
            self.open = True
            self.send_text(b'{"op":"subscribe","sub":"s","run_id":"%s","snapshot":false}' % self.run.encode())
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
                self.send_text(payload, opcode=10)  # pong
            elif opcode == 1:
                self.frame(payload, at)

    def frame(self, payload: bytes, at: int) -> None:
        message = orjson.loads(payload)
        kind = message["type"]
        if kind == "event":
            self.received.append((self.index, message["event"]["run_id"], message["event"]["seq"], at))
        elif kind == "subscribed" and not self.ready.done():
            self.ready.set_result(None)
        elif kind == "heartbeat":
            self.send_text(b'{"op":"pong"}')
        elif kind == "resync":
            self.received.append((self.index, "resync", -1, at))


async def subscribers_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    received: list[tuple[int, str, int, int]] = []
    stop = asyncio.Event()
    threading.Thread(
        target=lambda: (sys.stdin.readline(), loop.call_soon_threadsafe(stop.set)), daemon=True
    ).start()
    readies, transports = [], []
    for i in range(args.first, args.first + args.count):
        ready: asyncio.Future[None] = loop.create_future()
        run = f"bench-r{i % args.runs}"
        transport, _ = await loop.create_connection(
            lambda i=i, run=run, ready=ready: Subscriber(i, run, received, ready),  # type: ignore[misc]
            "127.0.0.1",
            int(args.port),
        )
        readies.append(ready)
        transports.append(transport)
    await asyncio.wait_for(asyncio.gather(*readies), 120)
    print("SUBSCRIBED", flush=True)
    await stop.wait()
    for transport in transports:
        transport.close()
    out = Path(args.out)
    await asyncio.to_thread(out.write_bytes, orjson.dumps(received))
    print(f"DONE {out}", flush=True)


# -- the orchestrator ------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(role_args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, __file__, *role_args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def expect(proc: subprocess.Popen[str], word: str) -> list[str]:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process {proc.args!r} ended before {word}")
        if line.startswith(word):
            return line.split()[1:]


def send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def scenario(points: int, subscribers: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    runs = 1 if subscribers == 1 else args.runs
    data = Path(tempfile.mkdtemp(dir=work))
    common = ["--runs", str(runs), "--points", str(points)]
    kafka = ["--kafka", args.kafka] if args.kafka else []
    gateway = spawn(
        ["--role", "gateway", "--data-dir", str(data), "--duration", str(args.duration),
         "--flush-interval", str(args.flush_interval), *common, *kafka]
    )  # fmt: skip
    try:
        port = expect(gateway, "READY")[0]
        time.sleep(1.0)
        rss_before = rss_kib(gateway.pid)
        procs = min(args.client_processes, subscribers)
        share = [subscribers // procs + (1 if i < subscribers % procs else 0) for i in range(procs)]
        clients = []
        first = 0
        for i, count in enumerate(share):
            out = data / f"received-{i}.json"
            clients.append(
                spawn(["--role", "subscribers", "--port", port, "--first", str(first), "--count", str(count),
                       "--out", str(out), *common])
            )  # fmt: skip
            first += count
        for client in clients:
            expect(client, "SUBSCRIBED")
        time.sleep(1.0)
        rss_subscribed = rss_kib(gateway.pid)
        cpu0, t0 = cpu_seconds(gateway.pid), time.monotonic()
        clients_cpu0 = sum(cpu_seconds(c.pid) for c in clients)
        send(gateway, "GO")
        appends_path, resyncs = expect(gateway, "PRODUCED")
        cpu = (cpu_seconds(gateway.pid) - cpu0) / (time.monotonic() - t0)
        clients_cpu = (sum(cpu_seconds(c.pid) for c in clients) - clients_cpu0) / (time.monotonic() - t0)
        time.sleep(1.0)  # the last frames land
        rss_after = rss_kib(gateway.pid)
        received: list[Any] = []
        for client in clients:
            send(client, "STOP")
            received += orjson.loads(Path(expect(client, "DONE")[0]).read_bytes())
            client.wait(30)
        send(gateway, "QUIT")
        gateway.wait(60)
    finally:
        for proc in [gateway, *locals().get("clients", [])]:
            if proc.poll() is None:
                proc.kill()
    appends = orjson.loads(Path(appends_path).read_bytes())
    returned = {(run, seq): after for run, seq, _, _, after in appends}
    called = {(run, seq): before for run, seq, _, before, _ in appends}
    start = min(after for *_, after in appends) + int(args.warmup * 1e9)
    latencies = [
        (at - returned[(run, seq)]) / 1e6
        for _, run, seq, at in received
        if (run, seq) in returned and returned[(run, seq)] >= start
    ]
    from_call = sorted(
        (at - called[(run, seq)]) / 1e6
        for _, run, seq, at in received
        if (run, seq) in returned and returned[(run, seq)] >= start
    )
    expected = sum(subscribers // runs for *_, after in appends if after >= start)
    return {
        "points_per_s": points,
        "subscribers": subscribers,
        "runs": runs,
        "events": len(appends),
        "points": sum(n for _, _, n, _, _ in appends),
        "latencies_ms": latencies,
        "from_append_called_p50_ms": report.percentile(from_call, 50),
        "from_append_called_p99_ms": report.percentile(from_call, 99),
        "delivered": len(latencies),
        "expected": expected,
        "resyncs": int(resyncs),
        "gateway_cpu": cpu,
        "subscriber_processes_cpu": clients_cpu,
        "mem_per_subscriber_kib": (rss_subscribed - rss_before) / subscribers,
        "mem_after_load_per_subscriber_kib": (rss_after - rss_before) / subscribers,
    }


def polling_model(n: int) -> list[float]:
    rng = random.Random(7)
    return [rng.uniform(0, rng.uniform(10.0, 15.0)) * 1000 for _ in range(n)]


def main() -> None:
    parser = report.common_parser(__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["main", "gateway", "subscribers"], default="main")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per scenario")
    parser.add_argument("--warmup", type=float, default=1.0, help="first seconds of each load not counted")
    parser.add_argument("--flush-interval", type=float, default=0.2, help="the SDK's default")
    parser.add_argument("--runs", type=int, default=100, help="runs the 1,000 subscribers watch")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--kafka", default=None, help="host:port of a Kafka broker (default: embedded log)")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--data-dir"), parser.add_argument("--port"), parser.add_argument("--out")
    parser.add_argument("--first", type=int, default=0), parser.add_argument("--count", type=int, default=0)
    args = report.parse_args(parser)
    if args.role == "gateway":
        asyncio.run(gateway_main(args))
        return
    if args.role == "subscribers":
        asyncio.run(subscribers_main(args))
        return
    if args.quick:
        args.duration, args.warmup = 3.0, 0.5
    many = 100 if args.quick else 1000
    figures: list[dict[str, Any]] = []
    results = []
    with tempfile.TemporaryDirectory() as work:
        for points in (1000, 50_000):
            for subscribers in (1, many):
                result = scenario(points, subscribers, args, Path(work))
                results.append(result)
                name = f"{points} points/s, {subscribers} subscriber{'s' if subscribers > 1 else ''}"
                lat = result["latencies_ms"]
                note = (
                    f"append durable -> frame read; {result['runs']} run(s), "
                    f"{result['delivered']}/{result['expected']} deliveries, resyncs {result['resyncs']}, "
                    f"gateway CPU {result['gateway_cpu']:.0%} of a core, "
                    f"subscriber processes {result['subscriber_processes_cpu']:.0%}"
                )
                figures.append(
                    report.figure(
                        f"latency {name}", "ms", lat, higher_is_better=False,
                        baseline_name="polling widget 10-15 s (modelled)",
                        baseline_samples=polling_model(len(lat)), note=note,
                    )
                )  # fmt: skip
                if subscribers > 1:
                    figures.append(
                        report.figure(
                            f"gateway memory per subscriber, {name}", "KiB",
                            [result["mem_per_subscriber_kib"], result["mem_after_load_per_subscriber_kib"]],
                            higher_is_better=False,
                            note="RSS delta / subscribers: [min, max] = [subscribed, after the load]",
                        )
                    )  # fmt: skip
    summary = [{k: v for k, v in r.items() if k != "latencies_ms"} for r in results]
    for r, s in zip(results, summary, strict=True):
        lat = r["latencies_ms"]
        s.update(p50_ms=report.percentile(lat, 50), p99_ms=report.percentile(lat, 99), max_ms=max(lat))
    extra = {
        "machine": report.machine(),
        "adapter": "kafka" if args.kafka else "local",
        "flush_interval_s": args.flush_interval,
        "duration_s": args.duration,
        "measured": "append durable (COMMIT returned, gateway process) -> frame read (subscriber process)",
        "scenarios": summary,
    }
    report.emit("gateway", figures, extra)


if __name__ == "__main__":
    main()
