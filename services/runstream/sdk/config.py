"""The SDK's settings, read once from the environment.

RUNSTREAM_URI        http://127.0.0.1:8555   where events go: http(s)://ingest or kafka://host:port[,host:port]
RUNSTREAM_API        RUNSTREAM_URI if http(s), else http://127.0.0.1:8555   query API and gateway (reads)
RUNSTREAM_TOKEN      (unset: <RUNSTREAM_DATA_DIR>/token if it exists)   bearer token
RUNSTREAM_WORKSPACE  default
RUNSTREAM_SPOOL_DIR  <RUNSTREAM_DATA_DIR>/spool   durable spool of unsent batches
RUNSTREAM_TOPIC_PREFIX runstream                  topic prefix for kafka://
RUNSTREAM_FLUSH_INTERVAL 0.2                      seconds a record may wait in memory before it is spooled
RUNSTREAM_MAX_BUFFERED  1000000                   records held in memory before logging calls wait
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClientConfig:
    uri: str = "http://127.0.0.1:8555"
    api: str = "http://127.0.0.1:8555"
    token: str | None = None
    workspace: str = "default"
    spool_dir: Path = Path.home() / ".runstream" / "spool"
    topic_prefix: str = "runstream"
    flush_interval: float = 0.2
    max_buffered: int = 1_000_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientConfig:
        env = os.environ if env is None else env
        data_dir = Path(env.get("RUNSTREAM_DATA_DIR") or Path.home() / ".runstream").expanduser()
        uri = env.get("RUNSTREAM_URI") or "http://127.0.0.1:8555"
        default_api = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:8555"
        token = env.get("RUNSTREAM_TOKEN") or None
        token_file = data_dir / "token"
        if token is None and token_file.is_file():
            token = token_file.read_text("utf-8").strip() or None
        return cls(
            uri=uri.rstrip("/"),
            api=(env.get("RUNSTREAM_API") or default_api).rstrip("/"),
            token=token,
            workspace=env.get("RUNSTREAM_WORKSPACE") or "default",
            spool_dir=Path(env.get("RUNSTREAM_SPOOL_DIR") or data_dir / "spool").expanduser(),
            topic_prefix=env.get("RUNSTREAM_TOPIC_PREFIX") or "runstream",
            flush_interval=float(env.get("RUNSTREAM_FLUSH_INTERVAL") or 0.2),
            max_buffered=int(env.get("RUNSTREAM_MAX_BUFFERED") or 1_000_000),
        )
