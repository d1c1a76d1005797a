#!/usr/bin/env python3
"""Run a real single-node Apache Kafka 4.x broker (KRaft, broker+controller) on loopback.

Standard library only, so it works before anything is installed.

The broker's jars come from Maven Central through ``infra/kafka/pom.xml`` (``mvn
dependency:copy-dependencies``) into ``<repo>/.cache/kafka/libs`` and are reused after
that. Each broker lives in its own data directory (default
``<repo>/.cache/kafka/broker-<port>``) holding its config, KRaft storage, logs and pid file.

CLI::

    python infra/kafka/broker.py fetch                 # only resolve the jars
    python infra/kafka/broker.py start [--port 19092] [--controller-port 19093] [--data-dir DIR]
    python infra/kafka/broker.py status [--port 19092 | --data-dir DIR]   # exit 0 running, 1 not
    python infra/kafka/broker.py stop   [--port 19092 | --data-dir DIR]
    python infra/kafka/broker.py kill   [--port 19092 | --data-dir DIR]   # SIGKILL, keeps data

From Python (e.g. a pytest fixture)::

    from broker import start, stop            # with infra/kafka on sys.path
    bootstrap = start(port=19092, data_dir=tmp_dir)   # "127.0.0.1:19092", ready to serve
    ...
    stop(data_dir=tmp_dir)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator, Mapping, Sequence

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"

#: Tried newest first; the first one Maven resolves is used.
KAFKA_VERSIONS: tuple[str, ...] = ("4.4.0", "4.3.1", "4.2.0", "4.1.2")
HOST = "127.0.0.1"
DEFAULT_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_TIMEOUT = 90.0
NODE_ID = 1

MARKER = ".complete"  # in libs/, holds the Kafka version once resolution succeeded
PID_FILE = "broker.pid"
STATE_FILE = "broker.json"
CONFIG_FILE = "server.properties"
CONSOLE_LOG = "broker.out"  # JVM stdout/stderr (WARN+ log lines, crashes)
LOG_DIR = "logs"  # log4j server.log
KAFKA_LOG_DIR = "kafka-logs"  # log.dirs: KRaft metadata + topic partitions

JVM_HEAP = ("-Xms256m", "-Xmx512m")
# What kafka-run-class.sh uses, minus JMX.
JVM_OPTS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)

# Java processes started by this Python process, kept so they can be reaped (no zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


class BrokerError(RuntimeError):
    """Fetching, starting or stopping the broker failed."""


# --------------------------------------------------------------------------- paths


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The jar cache: ``path``, else $RUNSTREAM_KAFKA_CACHE, else ``<repo>/.cache/kafka``."""
    if path is not None:
        return Path(path).resolve()
    env = os.environ.get("RUNSTREAM_KAFKA_CACHE")
    return Path(env).resolve() if env else REPO_ROOT / ".cache" / "kafka"


def libs_dir(cache: str | os.PathLike | None = None) -> Path:
    return cache_dir(cache) / "libs"


def default_data_dir(port: int = DEFAULT_PORT, cache: str | os.PathLike | None = None) -> Path:
    return cache_dir(cache) / f"broker-{port}"


def _data_dir(data_dir: str | os.PathLike | None, port: int, cache: str | os.PathLike | None = None) -> Path:
    return Path(data_dir).resolve() if data_dir is not None else default_data_dir(port, cache)


def bootstrap_servers(port: int = DEFAULT_PORT) -> str:
    return f"{HOST}:{port}"


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[kafka] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- fetch


def fetched_version(cache: str | os.PathLike | None = None) -> str | None:
    """The Kafka version whose jars are complete in the cache, or None."""
    try:
        return (libs_dir(cache) / MARKER).read_text().strip() or None
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch(
    cache: str | os.PathLike | None = None,
    versions: Sequence[str] | None = None,
    quiet: bool = False,
) -> str:
    """Resolve the broker's runtime jars into ``<cache>/libs`` unless already there.

    ``versions``: Kafka versions to try in order (default $RUNSTREAM_KAFKA_VERSION if set,
    else KAFKA_VERSIONS). Returns the version in the cache. Safe to call concurrently.
    """
    if versions is None:
        env = os.environ.get("RUNSTREAM_KAFKA_VERSION")
        versions = (env,) if env else None
    # A pinned version must match the cache; otherwise any complete cache will do.
    pinned = versions is not None
    versions = tuple(versions) if versions is not None else KAFKA_VERSIONS

    def have() -> str | None:
        v = fetched_version(cache)
        return v if v is not None and (not pinned or v in versions) else None

    if v := have():
        return v
    root = cache_dir(cache)
    with _file_lock(root / ".fetch.lock"):
        if v := have():  # someone else finished while we waited
            return v
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("`mvn` not found on PATH: Maven is needed to fetch the Kafka jars")
        failures = []
        for version in versions:
            tmp = root / f"libs.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            _log(f"resolving org.apache.kafka:kafka_2.13:{version} from Maven Central ...", quiet)
            t0 = time.monotonic()
            cmd = [
                mvn, "-q", "-B", "-f", str(POM), f"-Dkafka.version={version}",
                "dependency:copy-dependencies", "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp}",
            ]
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            jars = sorted(tmp.glob("*.jar")) if tmp.is_dir() else []
            if proc.returncode == 0 and any(j.name == f"kafka_2.13-{version}.jar" for j in jars):
                final = libs_dir(cache)
                shutil.rmtree(final, ignore_errors=True)
                tmp.rename(final)
                (final / MARKER).write_text(version + "\n")
                _log(f"Kafka {version}: {len(jars)} jars in {final} ({time.monotonic() - t0:.1f}s)", quiet)
                return version
            shutil.rmtree(tmp, ignore_errors=True)
            out = (proc.stdout + proc.stderr).strip().splitlines()
            failures.append(f"--- {version} (mvn exit {proc.returncode}):\n" + "\n".join(out[-15:]))
            _log(f"Kafka {version} did not resolve, trying the next version", quiet)
        raise BrokerError("could not resolve any Kafka version from Maven Central:\n" + "\n".join(failures))


# --------------------------------------------------------------------------- process helpers


def _java() -> str:
    java = shutil.which("java")
    if java is None and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        java = str(candidate) if candidate.exists() else None
    if java is None:
        raise BrokerError("`java` (17+) not found on PATH")
    return java


def _jvm_common(data_dir: Path, cache: str | os.PathLike | None) -> list[str]:
    return [
        f"-Dkafka.logs.dir={data_dir / LOG_DIR}",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp", str(libs_dir(cache)) + "/*",
    ]


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _reap(pid: int) -> bool:
    """If pid is our child and has exited, reap it and return True."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return True
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    return False


def _pid_alive(pid: int) -> bool:
    """True if pid is a live (non-zombie) Kafka broker JVM."""
    if _reap(pid):
        return False
    child = _CHILDREN.get(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():  # Linux: reject zombies and recycled pids
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                # Exited (a zombie). If it is our child, reap it: a killed JVM's leader turns
                # zombie before its other threads are gone, so wait a little for that.
                if child is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.wait(10)
                        _CHILDREN.pop(pid, None)
                return False
            if child is not None:
                # Our own child, not yet reaped: alive. Its cmdline is not a test here: right
                # after exec it reads empty for a moment (the kernel sets the argument area
                # after close-on-exec descriptors close, which is when Popen returns).
                return True
            cmdline = (proc / "cmdline").read_bytes()
            return not cmdline or b"kafka.Kafka" in cmdline  # empty: mid-exec, see above
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
    return True


def _port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def log_tail(data_dir: str | os.PathLike, lines: int = 40) -> str:
    """The last lines of the broker's server.log and console output, for error messages."""
    d = Path(data_dir)
    return (
        f"--- {d / LOG_DIR / 'server.log'} (last {lines} lines):\n{_tail(d / LOG_DIR / 'server.log', lines)}\n"
        f"--- {d / CONSOLE_LOG} (last {lines} lines):\n{_tail(d / CONSOLE_LOG, lines)}"
    )


# --------------------------------------------------------------------------- Kafka wire protocol (minimal)

_API_METADATA = 3
_API_VERSIONS = 18
_METADATA_VERSION = 4  # lowest Metadata version Kafka 4.x still serves (KIP-896); non-flexible


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.buf[self.pos : self.pos + n].decode()
        self.pos += n
        return s


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        out += chunk
    return bytes(out)


def _request(sock: socket.socket, api_key: int, api_version: int, correlation_id: int, body: bytes) -> _Reader:
    client_id = b"runstream-infra"
    # Request header v1: api_key, api_version, correlation_id, client_id (nullable string).
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    r = _Reader(_recv_exact(sock, size))
    if r.take(">i") != correlation_id:  # response header v0
        raise ConnectionError("correlation id mismatch")
    return r


def probe(port: int = DEFAULT_PORT, host: str = HOST, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """Ask the broker on host:port for ApiVersions then Metadata; return the brokers it lists.

    Raises OSError/ConnectionError/struct.error when the broker does not answer properly.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        r = _request(sock, _API_VERSIONS, 0, 1, b"")
        error = r.take(">h")
        if error != 0:
            raise ConnectionError(f"ApiVersions error code {error}")
        ranges = {}
        for _ in range(r.take(">i")):
            key, lo, hi = r.take(">h"), r.take(">h"), r.take(">h")
            ranges[key] = (lo, hi)
        lo, hi = ranges.get(_API_METADATA, (0, -1))
        if not lo <= _METADATA_VERSION <= hi:
            raise ConnectionError(f"broker does not serve Metadata v{_METADATA_VERSION} (range {lo}..{hi})")
        # Metadata v4 body: topics = empty array (no topics), allow_auto_topic_creation = false.
        r = _request(sock, _API_METADATA, _METADATA_VERSION, 2, struct.pack(">ib", 0, 0))
        r.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(r.take(">i")):
            node_id = r.take(">i")
            bhost = r.string() or ""
            bport = r.take(">i")
            r.string()  # rack
            brokers.append((node_id, bhost, bport))
        return brokers


def is_ready(port: int = DEFAULT_PORT, host: str = HOST, timeout: float = 2.0) -> bool:
    """True if the broker on port answers Metadata and lists itself (i.e. it is unfenced)."""
    try:
        return any(node == NODE_ID and bport == port for node, _, bport in probe(port, host, timeout))
    except (OSError, ConnectionError, struct.error, UnicodeDecodeError):
        return False


# --------------------------------------------------------------------------- config + storage


def _config_text(data_dir: Path, port: int, controller_port: int, extra: Mapping[str, object] | None) -> str:
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        # Kafka 4 style dynamic quorum (KIP-853); storage is formatted with --standalone.
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / KAFKA_LOG_DIR),
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "num.partitions": 3,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 5,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 5,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        # After a crash (SIGKILL) the restarted broker can only register once the controller
        # has fenced its previous incarnation, i.e. after the session timeout (default 9 s).
        "broker.heartbeat.interval.ms": 1000,
        "broker.session.timeout.ms": 4000,
        "log.segment.bytes": 16 * 1024 * 1024,
        "log.retention.hours": 24,
        "log.retention.check.interval.ms": 60_000,
    }
    if extra:
        props.update(extra)
    lines = ["# Written by infra/kafka/broker.py; regenerated on every start."]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


def _random_cluster_id() -> str:
    while True:  # same shape as Kafka's Uuid.randomUuid().toString(): 22 base64url chars
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _format_storage(data_dir: Path, config: Path, cache: str | os.PathLike | None, quiet: bool) -> None:
    if (data_dir / KAFKA_LOG_DIR / "meta.properties").exists():
        return
    cid_file = data_dir / "cluster.id"
    if cid_file.exists():
        cluster_id = cid_file.read_text().strip()
    else:
        cluster_id = _random_cluster_id()
        cid_file.write_text(cluster_id + "\n")
    cmd = [_java(), "-Xmx256m", *_jvm_common(data_dir, cache), "kafka.tools.StorageTool",
           "format", "--cluster-id", cluster_id, "--config", str(config), "--standalone"]
    _log(f"formatting KRaft storage in {data_dir / KAFKA_LOG_DIR} (cluster id {cluster_id})", quiet)
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=data_dir)
    if proc.returncode != 0:
        raise BrokerError(f"kafka StorageTool format failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")


# --------------------------------------------------------------------------- lifecycle


def _state(data_dir: Path) -> dict:
    try:
        return json.loads((data_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _running_pid(data_dir: Path) -> int | None:
    pid = _read_pid(data_dir)
    if pid is not None and _pid_alive(pid):
        return pid
    return None


def _wait_ready(port: int, pid: int, data_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not _pid_alive(pid):
            raise BrokerError(f"Kafka broker (pid {pid}) exited during startup\n{log_tail(data_dir)}")
        if is_ready(port):
            return
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"Kafka broker (pid {pid}) not ready on {HOST}:{port} after {timeout:g}s\n{log_tail(data_dir)}"
            )
        time.sleep(0.2)


def start(
    port: int = DEFAULT_PORT,
    controller_port: int = DEFAULT_CONTROLLER_PORT,
    data_dir: str | os.PathLike | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    cache: str | os.PathLike | None = None,
    extra_config: Mapping[str, object] | None = None,
    quiet: bool = False,
) -> str:
    """Start the broker (if it is not already running) and wait until it serves requests.

    Returns the bootstrap address, e.g. ``"127.0.0.1:19092"``. ``data_dir`` defaults to
    ``<cache>/broker-<port>``; data in it survives stop/start. ``extra_config`` adds or
    overrides server.properties entries. Raises BrokerError (with the broker log's tail).
    """
    d = _data_dir(data_dir, port, cache)
    d.mkdir(parents=True, exist_ok=True)
    bootstrap = bootstrap_servers(port)

    with _file_lock(d / ".start.lock"):
        pid = _running_pid(d)
        if pid is not None:
            running_port = _state(d).get("port", port)
            if running_port != port:
                raise BrokerError(f"a broker (pid {pid}) already runs from {d} on port {running_port}, not {port}")
            if is_ready(port):
                _log(f"already running (pid {pid}) on {bootstrap}", quiet)
                return bootstrap
            _log(f"broker pid {pid} is running but not ready yet; waiting", quiet)
            _wait_ready(port, pid, d, timeout)
            return bootstrap
        (d / PID_FILE).unlink(missing_ok=True)

        state = _state(d)
        if state.get("controller_port") not in (None, controller_port) and (d / KAFKA_LOG_DIR).exists():
            raise BrokerError(
                f"{d} was formatted for controller port {state['controller_port']} (KRaft dynamic quorum); "
                f"use that port or a fresh --data-dir"
            )
        for p in (port, controller_port):
            if _port_open(p):
                raise BrokerError(f"port {HOST}:{p} is already in use by another process")

        version = fetch(cache, quiet=quiet)
        config = d / CONFIG_FILE
        config.write_text(_config_text(d, port, controller_port, extra_config))
        _format_storage(d, config, cache, quiet)

        (d / LOG_DIR).mkdir(exist_ok=True)
        extra_jvm = os.environ.get("RUNSTREAM_KAFKA_JVM_OPTS", "").split()
        cmd = [_java(), *JVM_HEAP, *JVM_OPTS, *extra_jvm, *_jvm_common(d, cache), "kafka.Kafka", str(config)]
        t0 = time.monotonic()
        with open(d / CONSOLE_LOG, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting Kafka {version}: {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd, cwd=d, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        _CHILDREN[proc.pid] = proc
        (d / PID_FILE).write_text(f"{proc.pid}\n")
        (d / STATE_FILE).write_text(json.dumps({
            "pid": proc.pid, "port": port, "controller_port": controller_port,
            "bootstrap": bootstrap, "kafka_version": version, "data_dir": str(d),
        }, indent=2) + "\n")
        _log(f"started Kafka {version} (pid {proc.pid}), waiting for it to serve on {bootstrap} ...", quiet)
        try:
            _wait_ready(port, proc.pid, d, timeout)
        except BaseException:
            _terminate(proc.pid, d, sig=signal.SIGKILL, timeout=10)
            raise
        _log(f"ready in {time.monotonic() - t0:.1f}s: bootstrap {bootstrap} (data in {d})", quiet)
        return bootstrap


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _terminate(pid: int, data_dir: Path, sig: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if not _wait_gone(pid, timeout) and sig != signal.SIGKILL:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 10)
    if _pid_alive(pid):
        raise BrokerError(f"Kafka broker pid {pid} did not exit")
    (data_dir / PID_FILE).unlink(missing_ok=True)


def stop(
    data_dir: str | os.PathLike | None = None,
    port: int = DEFAULT_PORT,
    timeout: float = 30.0,
    cache: str | os.PathLike | None = None,
    quiet: bool = False,
) -> bool:
    """SIGTERM the broker and wait for it to exit (SIGKILL after ``timeout``).

    Returns True if a broker was running. Data is kept.
    """
    d = _data_dir(data_dir, port, cache)
    pid = _running_pid(d)
    if pid is None:
        (d / PID_FILE).unlink(missing_ok=True)
        _log(f"not running ({d})", quiet)
        return False
    t0 = time.monotonic()
    _terminate(pid, d, signal.SIGTERM, timeout)
    _log(f"stopped pid {pid} in {time.monotonic() - t0:.1f}s", quiet)
    return True


def kill(
    data_dir: str | os.PathLike | None = None,
    port: int = DEFAULT_PORT,
    cache: str | os.PathLike | None = None,
    quiet: bool = False,
) -> bool:
    """SIGKILL the broker (a crash, for fault tests); data is kept. True if one was running."""
    d = _data_dir(data_dir, port, cache)
    pid = _running_pid(d)
    if pid is None:
        (d / PID_FILE).unlink(missing_ok=True)
        return False
    _terminate(pid, d, signal.SIGKILL, 10)
    _log(f"killed pid {pid}", quiet)
    return True


def is_running(
    data_dir: str | os.PathLike | None = None,
    port: int | None = None,
    cache: str | os.PathLike | None = None,
) -> bool:
    """True if the broker of data_dir (default: the one for ``port``) is alive and accepting on its port."""
    d = _data_dir(data_dir, port or DEFAULT_PORT, cache)
    if _running_pid(d) is None:
        return False
    return _port_open(_state(d).get("port", port or DEFAULT_PORT))


def status(
    data_dir: str | os.PathLike | None = None,
    port: int = DEFAULT_PORT,
    cache: str | os.PathLike | None = None,
) -> dict:
    """Broker status as a dict: running, ready, pid, port, bootstrap, data_dir, kafka_version."""
    d = _data_dir(data_dir, port, cache)
    state = _state(d)
    the_port = state.get("port", port)
    pid = _running_pid(d)
    return {
        "running": pid is not None and _port_open(the_port),
        "ready": pid is not None and is_ready(the_port),
        "pid": pid,
        "port": the_port,
        "controller_port": state.get("controller_port"),
        "bootstrap": bootstrap_servers(the_port),
        "data_dir": str(d),
        "kafka_version": state.get("kafka_version"),
    }


@contextlib.contextmanager
def running_broker(**kwargs) -> Iterator[str]:
    """``with running_broker(port=..., data_dir=...) as bootstrap:`` start, then stop on exit."""
    bootstrap = start(**kwargs)
    try:
        yield bootstrap
    finally:
        stop(data_dir=kwargs.get("data_dir"), port=kwargs.get("port", DEFAULT_PORT),
             cache=kwargs.get("cache"), quiet=kwargs.get("quiet", False))


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Single-node Kafka (KRaft) broker for Runstream dev and tests.")
    parser.add_argument("--cache-dir", default=None,
                        help="jar cache (default $RUNSTREAM_KAFKA_CACHE or <repo>/.cache/kafka)")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"client port (default {DEFAULT_PORT})")
        p.add_argument("--data-dir", default=None, help="broker data dir (default <cache>/broker-<port>)")
        p.add_argument("-q", "--quiet", action="store_true")

    p_start = sub.add_parser("start", help="fetch jars if needed, start the broker, wait until it serves")
    common(p_start)
    p_start.add_argument("--controller-port", type=int, default=DEFAULT_CONTROLLER_PORT,
                         help=f"KRaft controller port (default {DEFAULT_CONTROLLER_PORT})")
    p_start.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for readiness")
    p_stop = sub.add_parser("stop", help="SIGTERM the broker and wait for it to exit")
    common(p_stop)
    p_stop.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")
    common(sub.add_parser("kill", help="SIGKILL the broker (data kept)"))
    common(sub.add_parser("status", help="print status; exit 0 if running, 1 if not"))
    p_fetch = sub.add_parser("fetch", help="only resolve the broker jars from Maven Central")
    p_fetch.add_argument("--kafka-version", default=None, help="a specific version instead of newest-that-resolves")
    p_fetch.add_argument("-q", "--quiet", action="store_true")

    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            version = fetch(args.cache_dir, versions=(args.kafka_version,) if args.kafka_version else None,
                            quiet=args.quiet)
            print(f"Kafka {version} jars in {libs_dir(args.cache_dir)}")
        elif args.command == "start":
            print(start(args.port, args.controller_port, args.data_dir, args.timeout, args.cache_dir,
                        quiet=args.quiet))
        elif args.command == "stop":
            stop(args.data_dir, args.port, args.timeout, args.cache_dir, quiet=args.quiet)
        elif args.command == "kill":
            kill(args.data_dir, args.port, args.cache_dir, quiet=args.quiet)
        elif args.command == "status":
            st = status(args.data_dir, args.port, args.cache_dir)
            if st["running"]:
                print(f"running: pid {st['pid']}, bootstrap {st['bootstrap']}, "
                      f"{'ready' if st['ready'] else 'NOT ready'}, Kafka {st['kafka_version']}, data {st['data_dir']}")
                return 0
            print(f"not running (port {st['port']}, data {st['data_dir']})")
            return 1
    except BrokerError as exc:
        print(f"[kafka] error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
