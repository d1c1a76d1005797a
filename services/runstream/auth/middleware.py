"""Pure ASGI middleware: every HTTP and websocket request under ``/api`` needs a token.

The token rides in ``Authorization: Bearer <token>`` or, for websockets from
browsers (which cannot set headers on them), in the ``token`` query parameter. The
registry turns it into a ``Principal`` (grant id, workspace, role) which the
middleware puts in the ASGI scope for the endpoints: each checks the workspace it
serves with ``principal_of(scope).require_workspace(...)``. Here only the role is
checked, by route: ``POST /api/v1/events`` needs ``ingest``, ``/api/v1/tokens``
needs ``admin``, everything else ``read``.

A missing, unknown, expired or revoked token gets 401, a role too low 403, each
with a one-line reason. A refused websocket gets the HTTP answer where the server
supports the denial-response extension, else it is accepted and closed with 1008
and the reason. Each token may hold at most ``max_sockets_per_token`` websockets at
once in this process; one more is refused with 429 (or closed with 1013).

Open without a token: ``/healthz`` and the studio's pages and assets
(``runstream.studio.is_studio_path``), which hold no data: the studio reads
everything through ``/api/``.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qs

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from runstream.auth.grants import ForbiddenError, Principal, Role
from runstream.auth.registry import TokenRegistry
from runstream.errors import AuthError
from runstream.studio.routes import is_studio_path

OPEN_PATHS = frozenset({"/healthz"})
PRINCIPAL_KEY = "runstream.principal"
DEFAULT_SOCKETS_PER_TOKEN = 1000


def is_open(scope: Scope) -> bool:
    """Whether a request may go without a token: health checks and the studio's static files."""
    path: str = scope["path"]
    if path in OPEN_PATHS:
        return True
    return scope["type"] == "http" and not path.startswith("/api") and is_studio_path(path)


def required_role(scope: Scope) -> Role:
    path: str = scope["path"]
    if path == "/api/v1/tokens" or path.startswith("/api/v1/tokens/"):
        return Role.ADMIN
    if path == "/api/v1/events" and scope["type"] == "http" and scope.get("method") != "GET":
        return Role.INGEST
    return Role.READ


def principal_of(scope: Scope) -> Principal:
    """Who the request acts as (set by ``BearerAuthMiddleware``)."""
    principal = scope.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise AuthError("request was not authenticated")
    return principal


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin-1")
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip() or None
            return None
    if scope["type"] == "websocket":
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if values:
            return str(values[0])
    return None


class BearerAuthMiddleware:
    def __init__(
        self, app: ASGIApp, registry: TokenRegistry, max_sockets_per_token: int = DEFAULT_SOCKETS_PER_TOKEN
    ) -> None:
        self.app = app
        self.registry = registry
        self.max_sockets_per_token = max_sockets_per_token
        self.sockets: Counter[str] = Counter()
        """Open websockets per grant id, in this process."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_open(scope):
            await self.app(scope, receive, send)
            return
        try:
            principal = self.registry.authenticate(bearer_token(scope))
            principal.require(required_role(scope))
        except AuthError as exc:
            await _deny(scope, receive, send, 403 if isinstance(exc, ForbiddenError) else 401, str(exc))
            return
        scope = {**scope, PRINCIPAL_KEY: principal}
        if scope["type"] == "http":
            await self.app(scope, receive, send)
            return
        key = principal.token_id
        if self.sockets[key] >= self.max_sockets_per_token:
            reason = f"token {key} already holds {self.max_sockets_per_token} live connections here"
            await _deny(scope, receive, send, 429, reason)
            return
        self.sockets[key] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.sockets[key] -= 1
            if self.sockets[key] <= 0:
                del self.sockets[key]


_TITLES = {401: "unauthorized", 403: "forbidden", 429: "too many connections"}
_CLOSE_CODES = {401: 1008, 403: 1008, 429: 1013}


async def _deny(scope: Scope, receive: Receive, send: Send, status: int, reason: str) -> None:
    if scope["type"] == "http":
        await _deny_http(send, status, reason)
    else:
        await _deny_websocket(scope, receive, send, status, reason)


async def _deny_http(send: Send, status: int, reason: str, prefix: str = "http") -> None:
    body = orjson.dumps({"error": _TITLES[status], "detail": reason})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="runstream"'))
    await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, status: int, reason: str) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await _deny_http(send, status, reason, prefix="websocket.http")
    else:
        await send({"type": "websocket.close", "code": _CLOSE_CODES[status], "reason": reason})
