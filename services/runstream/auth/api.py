"""``/api/v1/tokens``: issue, list and revoke tokens (an ``admin`` token is needed).

- ``POST /api/v1/tokens`` with ``{"workspace": "vision", "role": "read", "name": "dashboard",
  "expires_in": 86400}`` answers 201 with the grant and its ``token``, shown this once;
- ``GET /api/v1/tokens`` lists every grant (never a token or a digest);
- ``DELETE /api/v1/tokens/{token_id}`` revokes one: from then on it gets 401, and the
  gateway closes its live connections.

An admin token scoped to one workspace issues and sees tokens of that workspace only.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runstream.auth.grants import Grant, GrantError, Principal, Role, check_workspace
from runstream.auth.middleware import principal_of
from runstream.auth.registry import TokenRegistry
from runstream.errors import AuthError, EventLogError
from runstream.http import BodyTooLargeError, JSONResponse, error_response, read_capped_body

MAX_BODY = 4096


class TokenAdmin:
    def __init__(self, registry: TokenRegistry) -> None:
        self.registry = registry

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/tokens", self.list_or_issue, methods=["GET", "POST"]),
            Route("/api/v1/tokens/{token_id}", self.revoke, methods=["DELETE"]),
        ]

    async def list_or_issue(self, request: Request) -> Response:
        principal = principal_of(request.scope)
        if request.method == "GET":
            grants = [g.public() for g in self.registry.grants() if _visible(principal, g)]
            return JSONResponse({"tokens": grants})
        try:
            spec = await _issue_spec(request)
            principal.require_workspace(spec["workspace"])
            grant, token = await self.registry.issue(
                spec["workspace"], spec["role"], name=spec["name"], ttl_seconds=spec["expires_in"]
            )
        except GrantError as exc:
            return error_response(400, "bad parameter", exc.detail, parameter=exc.field)
        except AuthError as exc:
            return error_response(403, "forbidden", str(exc))
        except EventLogError as exc:
            return error_response(503, "event log unavailable", str(exc), retriable=True)
        return JSONResponse({**grant.public(), "token": token}, status_code=201)

    async def revoke(self, request: Request) -> Response:
        principal = principal_of(request.scope)
        token_id = request.path_params["token_id"]
        grant = self.registry.grant(token_id)
        if grant is None or not _visible(principal, grant):
            return error_response(404, "not found", f"no token {token_id[:40]!r}")
        try:
            revoked = await self.registry.revoke(token_id)
        except EventLogError as exc:
            return error_response(503, "event log unavailable", str(exc), retriable=True)
        return JSONResponse(revoked.public())


def _visible(principal: Principal, grant: Grant) -> bool:
    return principal.may_access(grant.workspace) and (grant.workspace != "*" or principal.workspace == "*")


async def _issue_spec(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await read_capped_body(request, MAX_BODY))
    except BodyTooLargeError:
        raise GrantError("body", f"at most {MAX_BODY} bytes") from None
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise GrantError("body", f"not a JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise GrantError("body", "expected a JSON object with workspace and role")
    unknown = set(body) - {"workspace", "role", "name", "expires_in"}
    if unknown:
        raise GrantError(
            sorted(unknown)[0], "not a field of a token request (workspace, role, name, expires_in)"
        )
    workspace, role, name, ttl = (
        body.get("workspace"),
        body.get("role"),
        body.get("name", ""),
        body.get("expires_in"),
    )
    if not isinstance(workspace, str):
        raise GrantError("workspace", f"required, a workspace name or '*'; got {workspace!r}")
    if not isinstance(role, str):
        raise GrantError("role", f"required, one of read, ingest, admin; got {role!r}")
    if not isinstance(name, str):
        raise GrantError("name", f"must be a string; got {type(name).__name__}")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)):
        raise GrantError("expires_in", f"must be a number of seconds; got {ttl!r}")
    return {
        "workspace": check_workspace(workspace),
        "role": Role.parse(role),
        "name": name,
        "expires_in": ttl,
    }
