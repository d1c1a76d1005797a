"""Tokens: made once in embedded mode, kept only as a hash in memory by the server."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from runstream.errors import AuthError


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


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


class TokenStore:
    """The tokens a server accepts, held as SHA-256 digests."""

    def __init__(self, tokens: list[str]) -> None:
        self._digests = [_digest(t) for t in tokens if t]

    def check(self, token: str | None) -> None:
        if not token:
            raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = _digest(token)
        if not any(hmac.compare_digest(digest, known) for known in self._digests):
            raise AuthError("invalid bearer token")
