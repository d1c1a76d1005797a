"""Pure ASGI middleware requiring a bearer token on every HTTP and websocket request.

HTTP requests without a valid token get 401 with a one-line reason. Websockets
send the token in the ``Authorization`` header or, for browsers, which cannot
set headers on a websocket, in the ``token`` query parameter; a refused
websocket gets an HTTP 401 where the server supports the denial-response
extension, else it is closed with 1008 and the reason.

Open without a token: ``/healthz`` and the studio's pages and assets
(``runstream.studio.is_studio_path``), which hold no data: the studio reads
everything through ``/api/``. Everything else needs the token: every ``/api/``
route, the live websocket included.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from runstream.auth.tokens import TokenStore
from runstream.errors import AuthError
from runstream.studio.routes import is_studio_path

OPEN_PATHS = frozenset({"/healthz"})


def is_open(scope: Scope) -> bool:
    """Whether a request may go without a token: health checks and the studio's static files."""
    path: str = scope["path"]
    if path in OPEN_PATHS:
        return True
    return scope["type"] == "http" and not path.startswith("/api") and is_studio_path(path)


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
    def __init__(self, app: ASGIApp, tokens: TokenStore) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_open(scope):
            await self.app(scope, receive, send)
            return
        try:
            self.tokens.check(bearer_token(scope))
        except AuthError as exc:
            if scope["type"] == "http":
                await _deny_http(send, str(exc))
            else:
                await _deny_websocket(scope, receive, send, str(exc))
            return
        await self.app(scope, receive, send)


async def _deny_http(send: Send, reason: str, prefix: str = "http") -> None:
    body = orjson.dumps({"error": "unauthorized", "detail": reason})
    await send(
        {
            "type": f"{prefix}.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="runstream"'),
            ],
        }
    )
    await send({"type": f"{prefix}.response.body", "body": body})


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, reason: str) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await _deny_http(send, reason, prefix="websocket.http")
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": reason})
