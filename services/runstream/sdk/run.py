"""``Run``: the handle a training script logs through."""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from runstream.sdk.batching import EVENT, LINE, POINT, RunRef
from runstream.sdk.capture import OutputCapture
from runstream.sdk.client import Client, get_client
from runstream.sdk.lifecycle import RunStateError, RunStatus, check_open, check_transition
from runstream.sdk.reader import Reader
from runstream.sdk.snapshot import DEFAULT_MAX_BYTES, SnapshotTooLargeError, build_snapshot
from runstream.sdk.values import (
    LoggingError,
    check_column,
    check_name,
    check_properties,
    check_step,
    check_tags,
    to_float,
    wire,
)
from runstream.types import DEFAULT_WORKSPACE

EXPERIMENT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _./-]{0,255}\Z")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
CHUNK_BYTES = 512 * 1024
MAX_VALUES_BYTES = 850_000

_active: weakref.WeakSet[Run] = weakref.WeakSet()
_capturing: list[Run] = []


def new_run_id(experiment: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment).strip("-.")[:48] or "run"
    return f"{slug}_{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}_{uuid.uuid4().hex[:8]}"


class Run:
    """A run: log metrics, values, tags and output to it; read its state back.

    Logging calls check their arguments at once (a bad name or value raises
    ``LoggingError`` in the calling thread, nothing is sent) and return without
    waiting for the network.
    """

    def __init__(
        self,
        client: Client,
        run_id: str,
        experiment: str,
        *,
        workspace: str,
        name: str | None = None,
        parent: Run | None = None,
        status: RunStatus = RunStatus.CREATED,
    ) -> None:
        self._client = client
        self.run_id = run_id
        self.experiment = experiment
        self.workspace = workspace
        self.name = name
        self.parent = parent
        self._status = status
        self._ref: RunRef = client.ref(run_id, experiment, workspace)
        self._lock = threading.Lock()
        self._next_step: dict[str, int] = {}
        self._next_row: dict[str, int] = {}
        self._line_no = {"stdout": 0, "stderr": 0}
        self._names: set[str] = set()
        self._capture: OutputCapture | None = None

    def __repr__(self) -> str:
        return f"Run(run_id={self.run_id!r}, experiment={self.experiment!r}, status={self._status.value!r})"

    @property
    def status(self) -> str:
        return self._status.value

    def _continue_sequence(self) -> None:
        """Number this process's events of the run after those of earlier processes.

        A run given by id (a job restarted from its checkpoint, ``get_run``) may have
        events from a process that counted ``seq`` from 0 before this one: a step it
        logs again must replace that process's value, which is decided by ``seq``. So
        the first event this process sends gets the microseconds of this host's clock
        (an earlier process of the run cannot have counted that far since it began).
        Only the start of the count reads the clock; events are still ordered by it.
        """
        if self._ref.seq == 0:  # nothing of this run numbered by this process yet
            self._ref.seq = time.time_ns() // 1000

    # -- logging --------------------------------------------------------------------------------
    def log(self, name: str, value: Any, step: int | None = None) -> None:
        """Log one value of a series; ``step`` defaults to one more than the name's last step."""
        if self._status.terminal:
            check_open(self.run_id, self._status)
        if name not in self._names:
            check_name(name)
            self._names.add(name)
        number = value if type(value) is float else to_float(value, f"value of {name!r}")
        with self._lock:
            if step is None:
                step = self._next_step.get(name, 0)
            elif type(step) is not int or step < 0 or step > 9007199254740991:
                step = check_step(step)
            self._next_step[name] = step + 1
        self._client.add((POINT, self._ref, name, number, step, int(time.time() * 1000)))

    def log_list(self, name: str, values: Sequence[Any]) -> None:
        """Log one list of values, charted by index (logging the name again replaces it)."""
        check_open(self.run_id, self._status)
        check_name(name, "list name")
        if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
            raise LoggingError(f"values of {name!r} must be a list of numbers; got {type(values).__name__}")
        encoded = [wire(to_float(v, f"{name}[{i}]")) for i, v in enumerate(values)]
        self._check_size(name, {"name": name, "values": encoded})
        self._event("list.logged", {"name": name, "values": encoded})

    def log_row(self, name: str, **columns: Any) -> None:
        """Log one row of numeric columns; repeated rows make a table (e.g. angle and cos)."""
        check_open(self.run_id, self._status)
        check_name(name, "row name")
        if not columns:
            raise LoggingError(f"log_row({name!r}) needs at least one column, e.g. log_row(name, x=1, y=2)")
        row = {check_column(c): wire(to_float(v, f"{name}.{c}")) for c, v in columns.items()}
        with self._lock:
            index = self._next_row.get(name, 0)
            self._next_row[name] = index + 1
        self._event("row.logged", {"name": name, "index": index, "row": row})

    def log_table(self, name: str, table: Mapping[str, Sequence[Any]]) -> None:
        """Log a table as columns of equal length, e.g. ``{"angle": [...], "sine": [...]}``."""
        check_open(self.run_id, self._status)
        check_name(name, "table name")
        if not isinstance(table, Mapping) or not table:
            raise LoggingError(f"table {name!r} must be a non-empty dict of columns")
        columns: dict[str, list[float | str]] = {}
        for column, values in table.items():
            check_column(column)
            if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
                raise LoggingError(f"column {column!r} of {name!r} must be a list of numbers")
            columns[column] = [wire(to_float(v, f"{name}.{column}[{i}]")) for i, v in enumerate(values)]
        lengths = {c: len(v) for c, v in columns.items()}
        if len(set(lengths.values())) > 1:
            raise LoggingError(f"columns of table {name!r} must have the same length; got {lengths}")
        self._check_size(name, {"name": name, "columns": columns})
        self._event("table.logged", {"name": name, "columns": columns})

    def set_tags(self, **tags: Any) -> None:
        check_open(self.run_id, self._status)
        if tags:
            payload = {"tags": check_tags(tags)}
            self._check_size("tags", payload)
            self._event("run.tags_set", payload)

    def set_properties(self, **properties: Any) -> None:
        check_open(self.run_id, self._status)
        if properties:
            payload = {"properties": check_properties(properties)}
            self._check_size("properties", payload)
            self._event("run.properties_set", payload)

    def upload_file(self, path: str | Path, name: str | None = None) -> None:
        """Upload a file as an output of the run (stored with the run, downloadable)."""
        check_open(self.run_id, self._status)
        data = Path(path).read_bytes()
        self._upload(data, name or Path(path).name, "output", "application/octet-stream")

    def _upload(self, data: bytes, path: str, kind: str, content_type: str) -> None:
        file_id = str(uuid.uuid4())
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
        for index, chunk in enumerate(chunks):
            self._event(
                "file.chunk",
                {"file_id": file_id, "index": index, "data": base64.b64encode(chunk).decode("ascii")},
            )
        self._event(
            "file.uploaded",
            {
                "file_id": file_id,
                "kind": kind,
                "path": path,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "chunks": len(chunks),
                "content_type": content_type,
            },
        )

    def _check_size(self, name: str, payload: dict[str, Any]) -> None:
        size = len(orjson.dumps(payload))
        if size > MAX_VALUES_BYTES:
            raise LoggingError(
                f"{name!r} is {size} bytes encoded, over the {MAX_VALUES_BYTES}-byte limit of one event "
                "(Kafka's message limit); log it in parts or as a series with run.log()"
            )

    def _event(self, type_: str, payload: dict[str, Any]) -> None:
        self._client.add((EVENT, self._ref, type_, payload, int(time.time() * 1000)))

    def _line(self, stream: str, text: str) -> None:
        with self._lock:
            line_no = self._line_no[stream]
            self._line_no[stream] = line_no + 1
        self._client.add((LINE, self._ref, stream, line_no, text, int(time.time() * 1000)))

    # -- lifecycle ------------------------------------------------------------------------------
    def _transition(self, target: RunStatus, type_: str, payload: dict[str, Any] | None = None) -> None:
        with self._lock:
            check_transition(self.run_id, self._status, target)
            self._status = target
        if target.terminal:
            self._stop_capture()
        self._event(type_, payload or {})
        if target.terminal:
            _active.discard(self)

    def queue(self) -> None:
        """The run waits for its compute target."""
        self._transition(RunStatus.QUEUED, "run.queued")

    def start(self) -> None:
        self._transition(RunStatus.RUNNING, "run.started")

    def complete(self) -> None:
        self._transition(RunStatus.COMPLETED, "run.completed")

    def fail(self, error: str | BaseException | None = None) -> None:
        if isinstance(error, BaseException):
            error = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self._transition(RunStatus.FAILED, "run.failed", {"error": error[-65536:]} if error else {})

    def cancel(self) -> None:
        self._transition(RunStatus.CANCELED, "run.canceled")

    def child(self, name: str | None = None, **kwargs: Any) -> Run:
        """A child run of this one (same experiment unless given), started."""
        check_open(self.run_id, self._status)
        kwargs.setdefault("capture_output", False)
        kwargs.setdefault("snapshot", False)
        experiment = kwargs.pop("experiment", self.experiment)
        child = start_run(experiment, name=name, parent=self, **kwargs)
        self._event("run.child_linked", {"child_run_id": child.run_id, **({"name": name} if name else {})})
        return child

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._status.terminal:
            return
        if exc is None:
            if self._status is not RunStatus.RUNNING:
                self.start()
            self.complete()
        elif isinstance(exc, KeyboardInterrupt):
            self.cancel()
        else:
            self.fail(exc)
        self.flush(timeout=30.0)

    # -- output and snapshot ---------------------------------------------------------------------
    def _start_capture(self) -> None:
        if _capturing:
            return
        self._capture = OutputCapture(self._line)
        self._capture.start()
        _capturing.append(self)

    def _stop_capture(self) -> None:
        if self._capture is not None:
            self._capture.stop()
            self._capture = None
            if self in _capturing:
                _capturing.remove(self)

    def _snapshot(self, folder: Path, max_bytes: int) -> None:
        try:
            data = build_snapshot(folder, max_bytes)
        except SnapshotTooLargeError as exc:
            print(f"runstream: {exc}", file=sys.stderr)
            return
        self._upload(data, "snapshot.zip", "snapshot", "application/zip")

    # -- reading --------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Send everything logged so far; True once the server has acknowledged all of it."""
        return self._client.flush(timeout)

    def _read(self) -> Reader:
        return self._client.reader()

    def _consistent(self, timeout: float = 30.0) -> None:
        if not self.flush(timeout):
            raise RunStateError(f"could not deliver run {self.run_id}'s events: {self._client.last_error}")
        self._read().wait_projected(dict(self._ref.acked), timeout)

    def get_details(self) -> dict[str, Any]:
        """The run's state as the server knows it (status, timestamps, tags, ...)."""
        self._consistent()
        return self._read().details(self.run_id, self.workspace) or {}

    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        """``{name: [values in step order]}``; lists as lists, rows and tables as dicts of columns."""
        self._consistent()
        return self._read().metrics(self.run_id, self.workspace, name)

    def get_portal_url(self) -> str:
        """Where the run's page is in the studio."""
        page = f"{self._client.config.api}/runs/{self.run_id}"
        return page if self.workspace == DEFAULT_WORKSPACE else f"{page}?workspace={self.workspace}"

    def wait_for_completion(self, show_output: bool = False, timeout: float | None = None) -> str:
        """Block until the run ends (pushed over the websocket, not polled); returns its status.

        With ``show_output`` print its log lines, from the first, and its status changes as
        they arrive. Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        from runstream.live.sync import wait_for_completion

        if self in _active:
            self.flush(timeout=30.0)
        config = self._client.config
        return wait_for_completion(
            config.api,
            config.token,
            self.run_id,
            workspace=self.workspace,
            show_output=show_output,
            timeout=timeout,
        )


def start_run(
    experiment: str,
    *,
    name: str | None = None,
    compute: str | None = None,
    tags: Mapping[str, Any] | None = None,
    parent: Run | None = None,
    run_id: str | None = None,
    queued: bool = False,
    capture_output: bool = True,
    snapshot: bool = True,
    snapshot_dir: str | Path | None = None,
    snapshot_max_bytes: int = DEFAULT_MAX_BYTES,
) -> Run:
    """Start a run of ``experiment`` (use as a context manager to end it automatically).

    ``queued=True`` leaves it queued on ``compute`` until ``run.start()``.
    ``capture_output`` copies stdout/stderr into the run's log; ``snapshot`` zips
    ``snapshot_dir`` (the script's folder by default) and uploads it.
    """
    if not isinstance(experiment, str) or not EXPERIMENT_PATTERN.match(experiment):
        raise LoggingError(
            f"experiment {experiment!r} breaks the naming rule: 1-256 letters, digits, space and _ . / -, "
            "starting with a letter or digit"
        )
    if run_id is not None and not RUN_ID_PATTERN.match(run_id):
        raise LoggingError(f"run_id {run_id!r} must be 1-128 letters, digits and _ . -")
    client = get_client()
    run = Run(
        client,
        run_id or new_run_id(experiment),
        experiment,
        workspace=client.config.workspace,
        name=name,
        parent=parent,
    )
    payload: dict[str, Any] = {}
    if name:
        payload["name"] = name
    if compute:
        payload["compute"] = compute
    if parent is not None:
        payload["parent_run_id"] = parent.run_id
    if tags:
        payload["tags"] = check_tags(dict(tags))
    if run_id is not None:
        run._continue_sequence()
    run._check_size("run.created", payload)
    run._event("run.created", payload)
    _active.add(run)
    if queued:
        run.queue()
    else:
        run.start()
    if capture_output:
        run._start_capture()
    if snapshot:
        folder = Path(snapshot_dir) if snapshot_dir else _script_folder()
        run._snapshot(folder, snapshot_max_bytes)
    return run


def get_run(run_id: str) -> Run:
    """A handle on a run started elsewhere (read its state, wait for it, or log more to it)."""
    client = get_client()
    details = client.reader().details(run_id, client.config.workspace)
    if details is None:
        raise LoggingError(f"no run {run_id!r} in workspace {client.config.workspace!r}")
    status = (
        RunStatus(details["status"])
        if details.get("status") in RunStatus._value2member_map_
        else RunStatus.RUNNING
    )
    run = Run(
        client,
        run_id,
        details["experiment"],
        workspace=client.config.workspace,
        name=details.get("name"),
        status=status,
    )
    run._continue_sequence()
    return run


def _script_folder() -> Path:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return Path(path).resolve().parent if path else Path.cwd()


def finish_active_runs() -> None:
    """At exit: end runs the script left open (failed if it died of an exception)."""
    error = getattr(sys, "last_value", None)
    for run in list(_active):
        if run._status.terminal:
            continue
        try:
            if isinstance(error, KeyboardInterrupt):
                run.cancel()
            elif error is not None:
                run.fail(error)
            else:
                if run._status is not RunStatus.RUNNING:
                    run.start()
                run.complete()
        except RunStateError:
            pass
