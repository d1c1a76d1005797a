"""``runstream tail`` and ``runstream runs --compute`` as a user runs them, against real jobs."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

import runstream
from runstream.sdk.client import Client
from tests.sdk.conftest import ThreadServer

BIN = Path(sys.executable).parent
JOB = """
import sys, time
import runstream

run_id, outcome = sys.argv[1], sys.argv[2]
with runstream.start_run("tail-test", run_id=run_id, snapshot=False) as run:
    for i in range(5):
        print(f"line {i} of {run_id}", flush=True)
        run.log("loss", 1.0 / (i + 1))
        time.sleep(0.05)
    print("a warning", file=sys.stderr, flush=True)
    if outcome == "failed":
        raise RuntimeError("the job broke")
    if outcome == "canceled":
        raise KeyboardInterrupt
"""


def client_env(server: ThreadServer, tmp_path: Path, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update(
        RUNSTREAM_API=server.base_url,
        RUNSTREAM_URI=server.base_url,
        RUNSTREAM_TOKEN=token or server.token,
        RUNSTREAM_DATA_DIR=str(tmp_path / "client"),
        RUNSTREAM_FLUSH_INTERVAL="0.05",
    )
    return env


def wait_for_run(server: ThreadServer, run_id: str) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.get(f"{server.base_url}/api/v1/runs/{run_id}", headers=headers).status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never appeared")


def test_tail_follows_the_output_and_exits_with_the_outcome(server: ThreadServer, tmp_path: Path) -> None:
    outcomes = {"completed": 0, "failed": 1, "canceled": 130}
    env = client_env(server, tmp_path)
    jobs = {
        outcome: subprocess.Popen(
            [sys.executable, "-c", JOB, f"tail-{outcome}", outcome],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for outcome in outcomes
    }
    tails = {}
    for outcome in outcomes:
        wait_for_run(server, f"tail-{outcome}")
        tails[outcome] = subprocess.Popen(
            [str(BIN / "runstream"), "tail", f"tail-{outcome}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for outcome, code in outcomes.items():
        out, err = tails[outcome].communicate(timeout=60)
        jobs[outcome].wait(30)
        assert tails[outcome].returncode == code, (outcome, out, err)
        run_id = f"tail-{outcome}"
        printed = [line for line in out.splitlines() if line.startswith("line ")]
        assert printed == [f"line {i} of {run_id}" for i in range(5)], out
        assert f"[runstream] {run_id}: running" in out
        assert out.rstrip().splitlines()[-1] == f"[runstream] {run_id}: {outcome}"
        assert "a warning" in err
        assert f"runstream: connecting to {server.base_url} for run {run_id}" in err


def test_a_clear_message_and_exit_code_2_when_it_cannot_follow(server: ThreadServer, tmp_path: Path) -> None:
    cases = [
        (["tail", "no-such-run"], None, "no run 'no-such-run'"),
        (["tail", "any-run"], "wrong-token", "refused the token (HTTP 401)"),
        (["runs", "--compute", "nowhere"], None, "no compute target 'nowhere'"),
    ]
    started = [
        subprocess.Popen(
            [str(BIN / "runstream"), *args],
            env=client_env(server, tmp_path, token),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, token, _ in cases
    ]
    for process, (args, _, message) in zip(started, cases, strict=True):
        _, err = process.communicate(timeout=30)
        assert process.returncode == 2, args
        assert message in err, (args, err)


def test_tail_says_when_the_server_cannot_be_reached(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    done = subprocess.run(
        [str(BIN / "runstream"), "tail", "x", "--api", "http://127.0.0.1:9", "--token", "t"],
        env=env | {"RUNSTREAM_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot reach Runstream at http://127.0.0.1:9" in done.stderr


def read_until(lines: queue.Queue[str], text: str, *, absent: str | None = None, timeout: float = 20) -> str:
    """Read --watch output until a table (blank-line separated) has ``text`` (and not ``absent``)."""
    deadline = time.monotonic() + timeout
    table: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line.strip():
            table.append(line)
            continue
        shown = "".join(table)
        table = []
        if text in shown and (absent is None or absent not in shown):
            return shown
    raise AssertionError(f"no table showed {text!r} within {timeout} s")


def test_runs_lists_a_compute_target_and_watch_follows_it(
    sdk: Client, server: ThreadServer, tmp_path: Path
) -> None:
    queued = runstream.start_run("cluster-work", compute="cli-gpu", queued=True, snapshot=False)
    running = runstream.start_run("cluster-work", compute="cli-gpu", snapshot=False, capture_output=False)
    child = running.child("shard-0")
    queued.get_details()
    running.get_details()
    child.get_details()
    env = client_env(server, tmp_path)
    listed = subprocess.run(
        [str(BIN / "runstream"), "runs", "--compute", "cli-gpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert listed.splitlines()[0] == "compute cli-gpu: 2 active, 1 queued"
    assert listed.splitlines()[1].split() == ["run", "id", "status", "experiment", "started", "parent"]
    rows = {line.split()[0]: line.split() for line in listed.splitlines()[2:]}
    assert rows[queued.run_id][1:3] == ["queued", "cluster-work"]
    assert rows[running.run_id][1:3] == ["running", "cluster-work"]
    assert rows[child.run_id][-1] == running.run_id  # the child, under its parent

    watch = subprocess.Popen(
        [str(BIN / "runstream"), "runs", "--compute", "cli-gpu", "--watch"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in watch.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        read_until(lines, queued.run_id)
        queued.start()
        queued.flush(timeout=10)
        shown = read_until(lines, "3 active, 0 queued")
        assert [line.split()[1] for line in shown.splitlines() if queued.run_id in line] == ["running"]
        child.complete()
        running.complete()
        queued.complete()
        for run in (child, running, queued):
            run.flush(timeout=10)
        shown = read_until(lines, "0 active, 0 queued")
        assert queued.run_id not in shown and running.run_id not in shown
    finally:
        watch.terminate()
        watch.wait(10)
        reader.join(10)
        if watch.stdout is not None:
            watch.stdout.close()
