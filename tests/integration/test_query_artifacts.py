"""List/row/table values, log lines and files of a run, on the real engine."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runstream.query import artifacts
from runstream.settings import Settings
from tests.integration.query_helpers import event, make_settings, post
from tests.support import running_server


@pytest.fixture
def settings(tmp_path: Path, chdb_path: Path) -> Settings:
    return make_settings(tmp_path, chdb_path)


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60) as client,
    ):
        yield client


async def test_values_lists_tables_and_rows(http: httpx.AsyncClient) -> None:
    await post(
        http,
        [
            event("run.created", "r1", seq=0),
            event("list.logged", "r1", {"name": "fib", "values": [9, 9]}, seq=1),
            event("list.logged", "r1", {"name": "fib", "values": [0, 1, 1, 2, "NaN"]}, seq=2),
            event(
                "table.logged", "r1", {"name": "sine", "columns": {"angle": [0, 1], "sine": [0, 0.84]}}, seq=3
            ),
            event("row.logged", "r1", {"name": "cos", "index": 1, "row": {"angle": 1, "cos": 0.54}}, seq=4),
            event("row.logged", "r1", {"name": "cos", "index": 0, "row": {"angle": 0, "cos": 9}}, seq=5),
            event(
                "row.logged",
                "r1",
                {"name": "cos", "index": 0, "row": {"angle": 0, "cos": 1, "x": "Infinity"}},
                seq=6,
            ),
        ],
    )
    body = (await http.get("/api/v1/runs/r1/values")).json()
    assert body["lists"] == {"fib": [0, 1, 1, 2, "NaN"]}
    assert body["tables"] == {"sine": {"angle": [0, 1], "sine": [0, 0.84]}}
    assert body["rows"] == {"cos": {"angle": [0, 1], "cos": [1, 0.54], "x": ["Infinity", None]}}
    assert (await http.get("/api/v1/runs/nobody/values")).status_code == 404


async def test_logs_page_from_a_line_number(http: httpx.AsyncClient) -> None:
    lines = [{"stream": "stdout", "line_no": n, "text": f"out {n}"} for n in range(25)]
    lines += [{"stream": "stderr", "line_no": n, "text": f"err {n}"} for n in range(0, 25, 5)]
    await post(
        http,
        [
            event("run.created", "r1", seq=0),
            event("logs.appended", "r1", {"lines": lines}, seq=1),
            event(
                "logs.appended",
                "r1",
                {"lines": [{"stream": "stdout", "line_no": 7, "text": "out 7 again"}]},
                seq=2,
            ),
        ],
    )
    got: list[tuple[str, int, str]] = []
    after: int | None = -1
    while after is not None:
        body = (await http.get("/api/v1/runs/r1/logs", params={"after_line": after, "limit": 4})).json()
        assert 0 < len(body["lines"]) <= 5
        got += [(x["stream"], x["line_no"], x["text"]) for x in body["lines"]]
        after = body["next_after_line"]
    expected = sorted(
        [("stdout", n, "out 7 again" if n == 7 else f"out {n}") for n in range(25)]
        + [("stderr", n, f"err {n}") for n in range(0, 25, 5)],
        key=lambda x: (x[1], x[0]),
    )
    assert got == expected
    stderr = (await http.get("/api/v1/runs/r1/logs", params={"stream": "stderr", "after_line": 5})).json()
    assert [x["line_no"] for x in stderr["lines"]] == [10, 15, 20] and stderr["next_after_line"] is None
    for params, parameter in (
        ({"limit": 10_001}, "limit"),
        ({"stream": "stdin"}, "stream"),
        ({"after_line": "x"}, "after_line"),
    ):
        response = await http.get("/api/v1/runs/r1/logs", params=params)
        assert response.status_code == 400 and response.json()["parameter"] == parameter


def upload(
    run_id: str,
    file_id: str,
    path: str,
    data: bytes,
    *,
    seq: int,
    kind: str = "output",
    chunk: int = 7,
    skip: int | None = None,
    sha: str | None = None,
) -> list[dict[str, Any]]:
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    events = [
        event(
            "file.chunk",
            run_id,
            {"file_id": file_id, "index": i, "data": base64.b64encode(p).decode()},
            seq=seq + i,
        )
        for i, p in enumerate(pieces)
        if i != skip
    ]
    events.append(
        event(
            "file.uploaded",
            run_id,
            {
                "file_id": file_id,
                "kind": kind,
                "path": path,
                "size": len(data),
                "sha256": sha or hashlib.sha256(data).hexdigest(),
                "chunks": len(pieces),
            },
            seq=seq + len(pieces),
        )
    )
    return events


async def test_files_are_listed_once_complete_and_downloaded_checked(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("train.py", "print('hi')\n" * 50)
    snapshot = archive.getvalue()
    big = bytes(range(256)) * 40
    ids = [f"5f0c6b5e-1b1a-4b8e-9d5a-9f1d2a3b4c5{i}" for i in range(5)]
    events = [event("run.created", "r1", seq=0)]
    events += upload("r1", ids[0], "snapshot.zip", snapshot, seq=100, kind="snapshot", chunk=500)
    events += upload("r1", ids[1], "outputs/model weights.bin", big, seq=200, chunk=100)
    events += upload("r1", ids[2], "outputs/partial.txt", b"never complete", seq=300, skip=1)
    events += upload("r1", ids[3], "outputs/bad.txt", b"tampered", seq=400, sha="0" * 64)
    events += upload(
        "r1", ids[4], "outputs/model weights.bin", big[::-1], seq=500, chunk=100
    )  # a newer upload
    await post(http, events)
    listing = (await http.get("/api/v1/runs/r1/files")).json()["files"]
    assert [f["path"] for f in listing] == ["outputs/bad.txt", "outputs/model weights.bin", "snapshot.zip"]
    snap = await http.get("/api/v1/runs/r1/snapshot")
    assert snap.status_code == 200 and snap.content == snapshot
    assert snap.headers["content-type"] == "application/zip"
    assert snap.headers["content-disposition"].startswith('attachment; filename="snapshot.zip"')
    assert zipfile.ZipFile(io.BytesIO(snap.content)).read("train.py").startswith(b"print")
    monkeypatch.setattr(artifacts, "CHUNKS_PER_READ", 4)  # force the verified, streamed path
    weights = await http.get("/api/v1/runs/r1/files/outputs/model%20weights.bin")
    assert weights.status_code == 200 and weights.content == big[::-1]
    assert weights.headers["x-content-sha256"] == hashlib.sha256(big[::-1]).hexdigest()
    bad = await http.get("/api/v1/runs/r1/files/outputs/bad.txt")
    assert bad.status_code == 500 and "sha256" in bad.json()["detail"]
    assert (await http.get("/api/v1/runs/r1/files/outputs/partial.txt")).status_code == 404
    only = (await http.get("/api/v1/runs/r1/files", params={"kind": "snapshot"})).json()["files"]
    assert [f["path"] for f in only] == ["snapshot.zip"]
