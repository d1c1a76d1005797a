"""Bad input through the SDK, the ingest API, the log and the websocket (issue 7): refused
clearly, never half-written, and never at the cost of the good input beside it.

Each refusal names the field, the rule and the value received. The tables below are the
cases. What they add to the suites that already check input
(``tests/integration/test_ingest_bad_input.py``, ``tests/unit/test_validation.py``,
``tests/unit/test_sdk_pure.py``, ``tests/sdk/test_logging.py``,
``tests/integration/test_gateway_protocol.py``, ``tests/integration/test_projector.py``):
the value in every message, the proof in ClickHouse that a refused event left nothing
behind, the rules for input that is *accepted* (README, "Input rules"), bodies that are not
UTF-8, a 200 MB upload cut early, events over Kafka's message limit, malformed records as
the last ones of a partition, and websocket frames that are not frames of the protocol.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

import runstream
from runstream.sdk.client import Client, set_client
from runstream.sdk.config import ClientConfig
from runstream.sdk.run import Run
from runstream.settings import Settings
from tests.conftest import unique
from tests.sdk.conftest import ThreadServer, make_client, run_events
from tests.support import RunningServer, event, eventually, points, running_server

# ---------------------------------------------------------------------------------------------
# 1. The ingest API: each bad event refused by name, the good ones of the batch stored
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """A change that makes a good ``metrics.logged`` event bad, and the refusal it must get."""

    id: str
    path: str
    """Dotted path into the event (list indexes as numbers) set to ``value``."""
    value: Any
    field: str
    rule: str
    received: str | None
    """What the message shows of the value received (None: the rule names a field, not a value)."""


ABSENT = object()

INGEST_REFUSED = [
    Refused("empty name", "payload.points.0.name", "", "payload.points[0].name", "pattern", '""'),
    Refused(
        "over-long name", "payload.points.0.name", "n" * 257, "payload.points[0].name", "pattern", "n" * 257
    ),
    Refused(
        "control character in name",
        "payload.points.0.name",
        "lo\x07ss",
        "payload.points[0].name",
        "pattern",
        "lo\\u0007ss",
    ),
    Refused(
        "newline ending a name",
        "payload.points.0.name",
        "loss\n",
        "payload.points[0].name",
        "pattern",
        "loss\\n",
    ),
    Refused("name not a string", "payload.points.0.name", 7, "payload.points[0].name", "type", "7"),
    Refused("value a string", "payload.points.0.value", "high", "payload.points[0].value", "anyOf", "'high'"),
    Refused(
        "value a numeric string",
        "payload.points.0.value",
        "0.25",
        "payload.points[0].value",
        "anyOf",
        "'0.25'",
    ),
    Refused("value null", "payload.points.0.value", None, "payload.points[0].value", "anyOf", "None"),
    Refused("value a boolean", "payload.points.0.value", True, "payload.points[0].value", "anyOf", "True"),
    Refused(
        "value an object", "payload.points.0.value", {"v": 1}, "payload.points[0].value", "anyOf", "{'v': 1}"
    ),
    Refused("value an array", "payload.points.0.value", [1, 2], "payload.points[0].value", "anyOf", "[1, 2]"),
    Refused(
        "value 'nan' in lower case",
        "payload.points.0.value",
        "nan",
        "payload.points[0].value",
        "anyOf",
        "'nan'",
    ),
    Refused("negative step", "payload.points.0.step", -3, "payload.points[0].step", "minimum", "-3"),
    Refused("fractional step", "payload.points.0.step", 1.5, "payload.points[0].step", "type", "1.5"),
    Refused("huge step", "payload.points.0.step", 2**60, "payload.points[0].step", "maximum", str(2**60)),
    Refused("step as a string", "payload.points.0.step", "7", "payload.points[0].step", "type", '"7"'),
    Refused(
        "one bad point among good ones",
        "payload.points.1.value",
        "oops",
        "payload.points[1].value",
        "anyOf",
        "'oops'",
    ),
    Refused("unknown event type", "type", "run.exploded", "type", "enum", "'run.exploded'"),
    Refused("future schema_version", "schema_version", 2, "schema_version", "maximum", "2"),
    Refused("run_id with a space", "run_id", "run 1", "run_id", "pattern", '"run 1"'),
    Refused("negative seq", "seq", -1, "seq", "minimum", "-1"),
    Refused("unexpected envelope field", "colour", "blue", "colour", "additionalProperties", None),
    Refused("missing payload", "payload", ABSENT, "payload", "required", None),
]


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``base`` with ``path`` set to ``value`` (removed for ``ABSENT``)."""
    copy: dict[str, Any] = orjson.loads(orjson.dumps(base))
    node: Any = copy
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last: Any = int(keys[-1]) if isinstance(node, list) else keys[-1]
    if value is ABSENT:
        del node[last]
    else:
        node[last] = value
    return copy


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_each_refused_event_is_named_and_leaves_nothing_while_the_good_ones_are_stored(
    settings: Settings,
) -> None:
    """One batch: a good event, then a bad one, for every case of ``INGEST_REFUSED`` (plus an
    event over the size limit). Each bad event is refused with its field, rule and value; every
    good event is stored; no point of a refused event is in ClickHouse (the bad ones log the
    metric ``bad``, which must not exist)."""
    run_id = unique("run")
    batch: list[dict[str, Any]] = []
    expected: dict[int, Refused] = {}
    for step, case in enumerate(INGEST_REFUSED):
        batch.append(
            event("metrics.logged", run_id, points("good", [step / 4], start_step=step), seq=2 * step)
        )
        bad = event("metrics.logged", run_id, points("bad", [1.0, 2.0], start_step=step), seq=2 * step + 1)
        expected[len(batch)] = case
        batch.append(changed(bad, case.path, case.value))
    oversize = event("metrics.logged", run_id, points("bad", list(range(5000))), seq=999)
    batch.append(oversize)

    async with (
        running_server(settings.with_changes(max_event_bytes=50_000)) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        response = await http.post("/api/v1/events", content=orjson.dumps(batch))
        assert response.status_code == 207, response.text
        body = response.json()
        rejected = {r["index"]: r for r in body["rejected"]}
        assert sorted(rejected) == [*sorted(expected), len(batch) - 1]
        for index, case in expected.items():
            refusal = rejected[index]
            assert (refusal["field"], refusal["rule"]) == (case.field, case.rule), (case.id, refusal)
            assert refusal["event_id"] == batch[index]["event_id"], case.id
            assert refusal["message"].startswith(case.field.split("[")[0].split(".")[0]), (case.id, refusal)
            if case.received is not None:
                assert case.received in refusal["message"], (case.id, refusal["message"])
        too_big = rejected[len(batch) - 1]
        assert (too_big["field"], too_big["rule"]) == ("event", "maxBytes")
        assert "limit is 50000 bytes" in too_big["message"]
        assert len(body["accepted"]) == len(INGEST_REFUSED)

        async def stored() -> dict[str, Any] | None:
            r = await http.get(f"/api/v1/runs/{run_id}/metrics")
            metrics: dict[str, Any] = r.json()["metrics"] if r.status_code == 200 else {}
            return metrics if len(metrics.get("good", [])) == len(INGEST_REFUSED) else None

        metrics = await eventually(stored, timeout=60)
        assert [p["value"] for p in metrics["good"]] == [s / 4 for s in range(len(INGEST_REFUSED))]
        assert "bad" not in metrics

        async def raw_count() -> int:
            rows = await server.app.state.runtime.store.query(
                "SELECT count() FROM raw_events WHERE run_id = {run:String}", {"run": run_id}
            )
            return int(rows[0][0])

        # Each table is written by an insert of its own: wait for raw_events too, then hold it.
        async def all_raw() -> bool:
            return await raw_count() == len(INGEST_REFUSED)

        await eventually(all_raw, timeout=30)
        await asyncio.sleep(0.5)
        assert await raw_count() == len(INGEST_REFUSED)


# ---------------------------------------------------------------------------------------------
# 2. Bodies that are not a JSON array of events: refused whole, with the byte offset
# ---------------------------------------------------------------------------------------------

GOOD_BODY = orjson.dumps([event("run.created", "r1"), event("run.started", "r1", seq=1)])

# (id, body, status, what the detail says, the byte offset it names)
BAD_BODIES: list[tuple[str, bytes, int, str, int | None]] = [
    ("truncated JSON", GOOD_BODY[:-9], 400, f"at byte {len(GOOD_BODY) - 9}", len(GOOD_BODY) - 9),
    ("a byte that is not UTF-8 in a name", b'[{"name": "lo\xffss"}]', 400, "not valid UTF-8", 13),
    ("a UTF-8 sequence cut short", b'[{"name": "lo\xe2\x82"}]', 400, "not valid UTF-8", 13),
    ("an unpaired surrogate escape", b'[{"name": "lo\\ud800ss"}]', 400, "surrogate", None),
    ("an object, not an array", b'{"type": "run.created"}', 400, "must be a JSON array", None),
    ("an empty body", b"", 400, "at byte 0", 0),
    ("more than 10,000 events", b"[" + b",".join([b"{}"] * 10_001) + b"]", 413, "at most 10000 events", None),
]


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_bodies_that_are_not_an_array_of_events_are_refused_whole_with_the_offset(
    settings: Settings,
) -> None:
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        for case_id, body, status, detail, position in BAD_BODIES:
            response = await http.post("/api/v1/events", content=body)
            assert response.status_code == status, (case_id, response.text)
            answer = response.json()
            assert detail in answer["detail"], (case_id, answer)
            if position is not None:
                assert f"at byte {position}" in answer["detail"], (case_id, answer)
        ends = await server.app.state.runtime.log.end_offsets(settings.events_topic)
        assert sum(ends.values()) == 0, "a refused body appended something"


# ---------------------------------------------------------------------------------------------
# 3. Input that is accepted by a documented rule (README, "Input rules")
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_accepted_input_is_stored_by_its_documented_rule(settings: Settings) -> None:
    """NaN and +-inf (and the extremes of a double) round-trip exactly; ``Loss`` and ``loss`` are two
    metrics; a lower step is stored; a step logged again keeps the later value; a value that
    turns into a string is refused while the number stays; a run never created takes events;
    events after a terminal status are stored and the status stays terminal."""
    run_id, unknown, ended = unique("run"), unique("never-created"), unique("ended")
    special = ["NaN", "Infinity", "-Infinity", 1.7976931348623157e308, 5e-324, -0.0]
    seq = iter(range(1000))
    batch = [
        event("run.created", run_id, seq=next(seq)),
        event("metrics.logged", run_id, points("special", special), seq=next(seq)),
        event("metrics.logged", run_id, points("loss", [0.5]) | {}, seq=next(seq)),
        event("metrics.logged", run_id, points("Loss", [7.0]), seq=next(seq)),
        event("metrics.logged", run_id, points("steps", [5.0], start_step=5), seq=next(seq)),
        event("metrics.logged", run_id, points("steps", [3.0], start_step=3), seq=next(seq)),
        event("metrics.logged", run_id, points("relogged", [1.0], start_step=2), seq=next(seq)),
        event("metrics.logged", run_id, points("relogged", [9.0], start_step=2), seq=next(seq)),
        event("metrics.logged", run_id, points("kind", [0.5], start_step=0), seq=next(seq)),
        event("metrics.logged", run_id, points("kind", ["0.25"], start_step=1), seq=next(seq)),
        event("metrics.logged", unknown, points("orphan", [1.0]), seq=0),
        event("run.created", ended, seq=0),
        event("run.started", ended, seq=1),
        event("run.completed", ended, seq=2),
        event("metrics.logged", ended, points("late", [4.0]), seq=3),
        event("run.started", ended, seq=4),
    ]
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        response = await http.post("/api/v1/events", content=orjson.dumps(batch))
        assert response.status_code == 207, response.text
        assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [
            (9, "payload.points[0].value")
        ]

        async def metrics_of(run: str, wanted: int) -> dict[str, Any] | None:
            r = await http.get(f"/api/v1/runs/{run}/metrics")
            found: dict[str, Any] = r.json()["metrics"] if r.status_code == 200 else {}
            return found if len(found) >= wanted else None

        metrics = await eventually(lambda: metrics_of(run_id, 6), timeout=60)
        values = {name: [(p["step"], p["value"]) for p in series] for name, series in metrics.items()}
        assert values["special"] == list(enumerate(special))
        assert math.copysign(1.0, values["special"][5][1]) == -1.0  # -0.0 kept its sign
        assert values["loss"] == [(0, 0.5)] and values["Loss"] == [(0, 7.0)]
        assert values["steps"] == [(3, 3.0), (5, 5.0)]
        assert values["relogged"] == [(2, 9.0)]
        assert values["kind"] == [(0, 0.5)]
        stored = await server.app.state.runtime.store.query(
            "SELECT value FROM analytics_metric_points WHERE run_id = {run:String} AND name = 'special'"
            " ORDER BY step",
            {"run": run_id},
        )
        column = [row[0] for row in stored]
        assert math.isnan(column[0]) and column[1:] == [math.inf, -math.inf, *special[3:]]

        assert (await eventually(lambda: metrics_of(unknown, 1)))["orphan"][0]["value"] == 1.0
        orphan = await http.get(f"/api/v1/runs/{unknown}")
        assert orphan.status_code == 404 and "no run" in orphan.json()["detail"]
        late = await eventually(lambda: metrics_of(ended, 1))
        assert late["late"][0]["value"] == 4.0
        state = (await http.get(f"/api/v1/runs/{ended}")).json()
        assert state["status"] == "completed", state


# ---------------------------------------------------------------------------------------------
# 4. The SDK: refused at the call, naming what was wrong and the value, nothing sent
# ---------------------------------------------------------------------------------------------

# (id, the call, a fragment of the message naming the rule, one naming the value received)
SDK_REFUSED: list[tuple[str, Callable[[Run], object], str, str]] = [
    ("empty name", lambda run: run.log("", 1.0), "naming rule", "''"),
    ("over-long name", lambda run: run.log("n" * 257, 1.0), "1-256 characters", "'nnnn"),
    ("control character in name", lambda run: run.log("lo\x07ss", 1.0), "naming rule", r"'lo\x07ss'"),
    (
        "invalid UTF-8 in name",
        lambda run: run.log(b"lo\xffss".decode(errors="surrogateescape"), 1.0),
        "naming rule",
        r"'lo\udcffss'",
    ),
    ("name as bytes", lambda run: run.log(b"loss", 1.0), "must be a string", "b'loss'"),  # type: ignore[arg-type]
    ("value a string", lambda run: run.log("loss", "0.5"), "must be a number", "'0.5'"),
    ("value None", lambda run: run.log("loss", None), "must be a number", "None"),
    ("value a boolean", lambda run: run.log("loss", True), "must be a number", "True"),
    ("value a dict", lambda run: run.log("loss", {"v": 1}), "must be a number", "{'v': 1}"),
    ("value an int too big for a float", lambda run: run.log("loss", 10**400), "too large", "1000000"),
    ("negative step", lambda run: run.log("loss", 1.0, step=-1), "between 0 and", "-1"),
    ("fractional step", lambda run: run.log("loss", 1.0, step=1.5), "whole number", "1.5"),  # type: ignore[arg-type]
    ("huge step", lambda run: run.log("loss", 1.0, step=2**60), "between 0 and", str(2**60)),
    ("property NaN", lambda run: run.set_properties(lr=math.nan), "finite number", "nan"),
    (
        "table over Kafka's message limit",
        lambda run: run.log_table("t", {"x": list(range(120_000))}),
        "limit of one event",
        "bytes encoded",
    ),
    (
        "tags over Kafka's message limit",
        lambda run: run.set_tags(**{f"k{i}": "v" * 4000 for i in range(300)}),
        "limit of one event",
        "bytes encoded",
    ),
]


@pytest.fixture(scope="module")
def offline_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """An SDK client whose server never answers: the refusals below happen before any sending."""
    config = ClientConfig(
        uri="http://127.0.0.1:9",
        api="http://127.0.0.1:9",
        token="t",
        spool_dir=tmp_path_factory.mktemp("offline-spool"),
        flush_interval=60,
    )
    client = Client(config)
    old = set_client(client)
    try:
        yield client
    finally:
        client.close(timeout=0.1)
        set_client(old)


@pytest.mark.parametrize(
    ("call", "rule", "received"), [c[1:] for c in SDK_REFUSED], ids=[c[0] for c in SDK_REFUSED]
)
def test_the_sdk_refuses_bad_calls_naming_the_rule_and_the_value(
    offline_client: Client,
    call: Callable[[Run], object],
    rule: str,
    received: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = runstream.start_run("bad-input", capture_output=False, snapshot=False)
    buffered: list[Any] = []  # every record the call hands the client (its sender drains the buffer)
    add = offline_client.add

    def recording_add(record: Any) -> None:
        buffered.append(record)
        add(record)

    monkeypatch.setattr(offline_client, "add", recording_add)
    with pytest.raises(runstream.LoggingError) as refused:
        call(run)
    monkeypatch.undo()
    assert rule in str(refused.value) and received in str(refused.value), str(refused.value)
    assert buffered == [], "a refused call buffered something"
    run.complete()
    with pytest.raises(runstream.RunStateError, match="completed"):
        run.log("loss", 1.0)


# ---------------------------------------------------------------------------------------------
# 5. A 200 MB body is cut early: the ingest process's memory stays flat
# ---------------------------------------------------------------------------------------------

UPLOAD_BYTES = 200 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def chunked_upload(port: int, token: str, total: int) -> tuple[int, bytes]:
    """POST ``total`` bytes as a chunked body until the server answers or closes; (bytes sent, answer)."""
    chunk = b"[" + b" " * (1024 * 1024 - 1)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            b"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        sock.setblocking(False)
        answer = b""
        while sent < total:
            try:
                answer = sock.recv(65536)  # an answer, or b"" once the server closed
            except BlockingIOError:
                pass
            else:
                break
            try:
                view = memoryview(frame)
                while view:
                    try:
                        view = view[sock.send(view) :]
                    except BlockingIOError:
                        time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.setblocking(True)
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in answer:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
    return sent, answer


def test_a_200_mb_chunked_body_is_cut_early_and_the_ingest_memory_stays_flat(tmp_path: Path) -> None:
    """A chunked upload of 200 MB (no Content-Length to refuse it by) to a ``runstream ingest``
    process: it answers 413 once the body passes the 16 MiB limit and drops the connection, the
    client cannot push the rest, and the process's peak memory grows by far less than 200 MB."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update(RUNSTREAM_DATA_DIR=str(tmp_path / "data"), RUNSTREAM_TOKEN="upload-token")
    log = (tmp_path / "ingest.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "runstream"), "ingest", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "ingest.log").read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "ingest did not start"
            time.sleep(0.1)
        before = memory_kib(process.pid, "VmRSS")
        sent, answer = chunked_upload(port, "upload-token", UPLOAD_BYTES)
        peak = memory_kib(process.pid, "VmHWM")
        after = memory_kib(process.pid, "VmRSS")
        print(
            f"\n200 MB chunked upload: {sent / 2**20:.0f} MiB sent before the server cut it;"
            f" ingest RSS {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB,"
            f" {after / 1024:.0f} MiB after"
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < UPLOAD_BYTES / 2, f"the server read {sent} bytes of a body it had refused"
        assert (peak - before) * 1024 < 64 * 2**20, f"peak memory grew by {(peak - before) / 1024:.0f} MiB"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(30)


# ---------------------------------------------------------------------------------------------
# 6. Websocket frames that are not the protocol's: that socket is closed, the gateway serves on
# ---------------------------------------------------------------------------------------------


def client_frame(
    payload: bytes, opcode: int = 0x1, *, rsv: int = 0, masked: bool = True, length: int | None = None
) -> bytes:
    """One websocket frame as a client writes it (RFC 6455, section 5.2); ``length`` may lie."""
    size = len(payload) if length is None else length
    head = bytes([0x80 | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# (id, the frame, the close code the socket must get; None: an error frame, the socket stays open)
BAD_FRAMES: list[tuple[str, bytes, int | None]] = [
    ("text that is not JSON", client_frame(b"{oops"), None),
    ("a JSON array", client_frame(b"[1, 2]"), None),
    ("text that is not UTF-8", client_frame(b'{"op": "ping", "id": "\xff"}'), 1007),
    ("a binary frame", client_frame(b'{"op": "ping"}', 0x2), 1003),
    ("a reserved opcode", client_frame(b"x", 0x3), 1002),
    ("a reserved bit set", client_frame(b'{"op": "ping"}', rsv=0b100), 1002),
    ("an unmasked frame", client_frame(b'{"op": "ping"}', masked=False), 1002),
    ("a message over 64 KiB", client_frame(b'{"op": "ping", "id": "' + b"x" * 70_000 + b'"}'), 1009),
    ("a frame announcing 2 GiB", client_frame(b"", length=2**31), 1009),
]


async def raw_socket(server: RunningServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A websocket opened by hand, to write frames no websocket library would."""
    port = int(server.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /api/v1/live?token={server.token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    assert response.startswith(b"HTTP/1.1 101"), response
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next frame from the server (never masked): (opcode, payload)."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", await reader.readexactly(8))[0]
    return head[0] & 0x0F, await reader.readexactly(size)


async def answer_to(frame: bytes, server: RunningServer) -> int | dict[str, Any]:
    """Send ``frame`` on a fresh socket: the close code it gets, or the JSON frame answering it."""
    reader, writer = await raw_socket(server)
    try:
        writer.write(frame)
        await writer.drain()
        while True:
            opcode, payload = await asyncio.wait_for(read_frame(reader), 20)
            if opcode == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code
            if opcode == 0x1:
                message: dict[str, Any] = orjson.loads(payload)
                if message["type"] != "heartbeat":
                    return message
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_frames_outside_the_protocol_close_only_their_socket(settings: Settings) -> None:
    """Each bad frame on a socket of its own: a protocol error closes that socket with the RFC 6455
    code (1002 framing, 1003 binary, 1007 not UTF-8, 1009 too big), a text frame that is not a
    request gets an ``error`` frame; meanwhile a subscriber on another socket keeps its stream."""
    run_id = unique("run")
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
        websockets.connect(f"{server.ws_url}/api/v1/live", additional_headers=server.headers) as watcher,
    ):
        await watcher.send(
            orjson.dumps({"op": "subscribe", "sub": "w", "run_id": run_id, "cursor": -1}).decode()
        )
        assert orjson.loads(await asyncio.wait_for(watcher.recv(), 20))["type"] == "subscribed"
        for step, (case_id, frame, code) in enumerate(BAD_FRAMES):
            answer = await answer_to(frame, server)
            if code is None:
                assert isinstance(answer, dict) and answer["type"] == "error", (case_id, answer)
                assert answer["code"] == "bad_request", (case_id, answer)
            else:
                assert answer == code, (case_id, answer)
            sent = event("metrics.logged", run_id, points("x", [step], start_step=step), seq=step)
            assert (await http.post("/api/v1/events", content=orjson.dumps([sent]))).status_code == 200
            got = orjson.loads(await asyncio.wait_for(watcher.recv(), 20))
            assert got["type"] == "event" and got["event"]["event_id"] == sent["event_id"], (case_id, got)


# ---------------------------------------------------------------------------------------------
# 7. Events over Kafka's message limit: the SDK refuses or splits them, the producer goes on
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ["kafka"], indirect=True)
def test_nothing_over_kafkas_message_limit_is_sent_and_later_events_still_go(
    settings: Settings, tmp_path: Path
) -> None:
    """Straight to Kafka (``kafka://``, 1 MiB messages): a table and tags over the limit are refused
    at the call, 2.4 MB of output lines in one flush are split into events under it, and every
    event logged afterwards reaches the log (the producer is not stuck behind a refused message)."""
    server = ThreadServer(settings).start()
    client = make_client(server, tmp_path, uri=f"kafka://{settings.kafka_bootstrap}")
    old = set_client(client)
    try:
        run = runstream.start_run("limits", capture_output=True, snapshot=False)
        with pytest.raises(runstream.LoggingError, match="limit of one event"):
            run.log_table("t", {"x": list(range(120_000))})
        with pytest.raises(runstream.LoggingError, match="limit of one event"):
            run.set_tags(**{f"k{i}": "v" * 4000 for i in range(300)})
        line = "y" * 60_000
        for _ in range(40):
            print(line)
        run.log("after", 1.0)
        run.complete()
        assert run.flush(120), f"not delivered: {client.last_error}"
        events = run_events(settings, run.run_id)
    finally:
        client.close(timeout=10)
        set_client(old)
        server.stop()
    outputs = [e for e in events if e["type"] == "logs.appended"]
    lines = [x["text"] for e in outputs for x in e["payload"]["lines"]]
    assert lines == [line] * 40
    assert max(len(orjson.dumps(e)) for e in events) < settings.max_event_bytes
    assert len(outputs) > 1
    assert [e["type"] for e in events][-2:] == ["metrics.logged", "run.completed"]


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
def test_large_values_logged_back_to_back_all_arrive_over_the_ingest_api(
    settings: Settings, tmp_path: Path
) -> None:
    """30 lists of about 630 KB each logged back to back (19 MB, more than the ingest API takes in
    one request): every one arrives, in order, and so does the point logged after them."""
    server = ThreadServer(settings).start()
    client = make_client(server, tmp_path)
    old = set_client(client)
    try:
        run = runstream.start_run("big-lists", capture_output=False, snapshot=False)
        values = [i + 0.123456789 for i in range(40_000)]
        for i in range(30):
            run.log_list(f"list {i}", values)
        run.log("after", 1.0)
        run.complete()
        assert run.flush(120), f"not delivered: {client.last_error}"
        events = run_events(settings, run.run_id)
    finally:
        client.close(timeout=10)
        set_client(old)
        server.stop()
    assert [e["payload"]["name"] for e in events if e["type"] == "list.logged"] == [
        f"list {i}" for i in range(30)
    ]
    assert [e["type"] for e in events][-2:] == ["metrics.logged", "run.completed"]


# ---------------------------------------------------------------------------------------------
# 8. Malformed records that reach the log some other way: dead-lettered, the projector's lag to 0
# ---------------------------------------------------------------------------------------------


async def test_malformed_records_last_on_the_log_are_dead_lettered_and_the_lag_returns_to_0(
    settings: Settings,
) -> None:
    """Written straight to the topic, as the last records of their partition: a future
    ``schema_version``, an unknown type, bytes that are not UTF-8 and a JSON array. Each goes to the
    dead-letter topic with its field and rule (the bytes kept, base64 when not text), and the
    projector's applied position reaches the end of the partition: nothing stalls behind them."""
    run_id = unique("run")
    future = event("metrics.logged", run_id, points("loss", [0.5]), seq=1) | {"schema_version": 2}
    unknown = event("run.exploded", run_id, seq=2)
    records = [
        orjson.dumps(event("run.created", run_id)),
        orjson.dumps(future),
        orjson.dumps(unknown),
        b'{"run_id": "lo\xffss"}',
        b"[1, 2]",
    ]
    async with running_server(settings) as server:
        runtime = server.app.state.runtime
        positions = await runtime.log.append(settings.events_topic, [(run_id.encode(), r) for r in records])
        partition, last = positions[-1].partition, positions[-1].offset

        async def applied_to_the_end() -> bool:
            rows = await runtime.store.query(
                "SELECT max(next_offset) FROM projector_offsets"
                " WHERE topic = {t:String} AND partition = {p:UInt32}",
                {"t": settings.events_topic, "p": partition},
            )
            return bool(rows) and int(rows[0][0]) == last + 1

        await eventually(applied_to_the_end, timeout=60)
        consumer = runtime.log.consumer([settings.deadletter_topic])
        await consumer.start()
        dead: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + 30
            while len(dead) < 4 and time.monotonic() < deadline:
                dead += [orjson.loads(r.value) for r in await consumer.fetch(100, timeout=1.0)]
        finally:
            await consumer.close()
    assert [(d["partition"], d["offset"]) for d in dead] == [(partition, p.offset) for p in positions[1:]]
    reasons = [d["reason"] for d in dead]
    assert (reasons[0]["field"], reasons[0]["rule"]) == ("schema_version", "maximum")
    assert (reasons[1]["field"], reasons[1]["rule"]) == ("type", "enum")
    assert "invalid JSON" in reasons[2]["message"] and dead[2]["value_encoding"] == "base64"
    assert base64.b64decode(dead[2]["value"]) == records[3]
    assert (reasons[3]["field"], reasons[3]["rule"]) == ("event", "type")
