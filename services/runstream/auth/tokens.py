"""The server's own token: made once in the data folder (mode 0600) unless one is set."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """The token stored at ``path``, creating it (mode 0600) on first use; ``(token, created)``."""
    if path.exists():
        token = path.read_text("utf-8").strip()
        if token:
            return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "rs_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token, True
