"""Token grants: what a bearer token may do, and in which workspace. Pure logic, no I/O.

A token is ``rs_<id>_<secret>``: the id names its grant (and is safe to show and
log), the secret is 32 random bytes. Only the SHA-256 digest of the whole token is
kept; a grant holds the workspace it is scoped to (``*`` for every workspace), its
role, when it expires and whether it was revoked.

Roles, each including the one before it:

- ``read``: the query API and live subscriptions;
- ``ingest``: also append events (a training job reads its own runs back);
- ``admin``: also issue, list and revoke tokens.

The server's own token (``RUNSTREAM_TOKEN``, or the one made in the data folder on
first start) is an ``admin`` token for every workspace.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from runstream.errors import AuthError, RunstreamError
from runstream.types import WORKSPACE_NAME

EVERY_WORKSPACE = "*"
TOKEN_PREFIX = "rs_"
BOOTSTRAP_ID = "server"
"""The grant id of the server's own token."""

_TOKEN = re.compile(r"rs_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NAME_LIMIT = 200


class Role(enum.IntEnum):
    """What a token may do; a higher role may do everything a lower one may."""

    READ = 1
    INGEST = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise GrantError("role", f"must be one of read, ingest, admin; got {text!r}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class GrantError(RunstreamError):
    """A token request broke a rule: ``field`` names what, the message says which rule."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id_of(token: str) -> str | None:
    """The grant id a token names, or None when it is not of the ``rs_<id>_<secret>`` form."""
    match = _TOKEN.fullmatch(token)
    return match.group(1) if match else None


def mint() -> tuple[str, str]:
    """A new ``(token_id, token)``."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secret}"


def check_workspace(workspace: str) -> str:
    if workspace == EVERY_WORKSPACE or WORKSPACE_NAME.fullmatch(workspace):
        return workspace
    raise GrantError(
        "workspace",
        f"must be '*' or 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit; "
        f"got {workspace[:80]!r}",
    )


@dataclass(frozen=True)
class Grant:
    """One token's rights, as stored (by digest) on the tokens topic."""

    token_id: str
    digest: str
    workspace: str
    role: Role
    name: str = ""
    created_ms: int = 0
    expires_ms: int | None = None
    revoked_ms: int | None = None

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(self.digest, digest(token))

    def public(self) -> dict[str, Any]:
        """The grant without its digest, as the admin API shows it."""
        return {
            "token_id": self.token_id,
            "workspace": self.workspace,
            "role": self.role.label,
            "name": self.name,
            "created_ms": self.created_ms,
            "expires_ms": self.expires_ms,
            "revoked_ms": self.revoked_ms,
        }

    def encode(self) -> bytes:
        return orjson.dumps({**self.public(), "digest": self.digest})

    @classmethod
    def decode(cls, raw: bytes) -> Grant:
        data = orjson.loads(raw)
        return cls(
            token_id=str(data["token_id"]),
            digest=str(data["digest"]),
            workspace=str(data["workspace"]),
            role=Role.parse(str(data["role"])),
            name=str(data.get("name") or ""),
            created_ms=int(data.get("created_ms") or 0),
            expires_ms=None if data.get("expires_ms") is None else int(data["expires_ms"]),
            revoked_ms=None if data.get("revoked_ms") is None else int(data["revoked_ms"]),
        )


def new_grant(
    workspace: str, role: Role, *, name: str = "", now_ms: int, ttl_seconds: float | None = None
) -> tuple[Grant, str]:
    """A fresh grant and its token (shown once; only the digest is kept)."""
    check_workspace(workspace)
    if len(name) > _NAME_LIMIT:
        raise GrantError("name", f"at most {_NAME_LIMIT} characters; got {len(name)}")
    if ttl_seconds is not None and ttl_seconds <= 0:
        raise GrantError("expires_in", f"must be a positive number of seconds; got {ttl_seconds!r}")
    token_id, token = mint()
    expires = None if ttl_seconds is None else now_ms + int(ttl_seconds * 1000)
    grant = Grant(token_id, digest(token), workspace, role, name, now_ms, expires)
    return grant, token


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: an authenticated grant."""

    token_id: str
    workspace: str
    role: Role

    def may_access(self, workspace: str) -> bool:
        return self.workspace == EVERY_WORKSPACE or self.workspace == workspace

    def may(self, role: Role) -> bool:
        return self.role >= role

    def require(self, role: Role) -> None:
        if not self.may(role):
            raise ForbiddenError(f"this token's role is {self.role.label}; this needs {role.label}")

    def require_workspace(self, workspace: str) -> None:
        if not self.may_access(workspace):
            raise ForbiddenError(
                f"this token is scoped to workspace {self.workspace!r}; not {workspace[:80]!r}"
            )


class ForbiddenError(AuthError):
    """A valid token asked for something its role or workspace does not allow (403)."""


def authenticate(grant: Grant | None, token: str, now_ms: int) -> Principal:
    """The principal of ``token`` given the grant its id names; AuthError says why not."""
    if grant is None or not grant.matches(token):
        raise AuthError("invalid bearer token")
    if grant.revoked_ms is not None:
        raise AuthError(f"token {grant.token_id} was revoked")
    if grant.expires_ms is not None and now_ms >= grant.expires_ms:
        raise AuthError(f"token {grant.token_id} expired")
    return Principal(grant.token_id, grant.workspace, grant.role)
