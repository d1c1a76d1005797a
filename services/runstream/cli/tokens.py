"""``runstream tokens create|list|revoke``: manage scoped tokens through a running server.

They call ``/api/v1/tokens`` with an admin token (``--token``, ``RUNSTREAM_TOKEN``, or
the server's own token in the data folder), so they work the same against
``runstream up`` on this machine and a cluster.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import httpx


def add_parser(commands: Any) -> None:
    tokens = commands.add_parser(
        "tokens", help="issue, list and revoke tokens scoped to a workspace and a role"
    )
    actions = tokens.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="issue a token; it is printed once")
    create.add_argument("--workspace", required=True, help="the workspace it may use, or '*' for every one")
    create.add_argument("--role", required=True, choices=["read", "ingest", "admin"])
    create.add_argument("--name", default="", help="a label to recognise it by")
    create.add_argument("--expires-in", type=float, metavar="SECONDS", help="lifetime (default: no expiry)")
    actions.add_parser("list", help="every token's id, workspace, role and state (never the token)")
    revoke = actions.add_parser("revoke", help="revoke a token: from now on it gets 401")
    revoke.add_argument("token_id")
    for action in actions.choices.values():
        action.add_argument("--api", help="Runstream's address (RUNSTREAM_API, else RUNSTREAM_URI)")
        action.add_argument("--token", help="an admin token (RUNSTREAM_TOKEN, else the data folder's)")


def run(args: argparse.Namespace) -> int:
    from runstream.widgets.terminal import Target

    target = Target.resolve(args.api, args.token, None)
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    url = f"{target.api}/api/v1/tokens"
    try:
        if args.action == "create":
            body: dict[str, Any] = {"workspace": args.workspace, "role": args.role, "name": args.name}
            if args.expires_in is not None:
                body["expires_in"] = args.expires_in
            response = httpx.post(url, json=body, headers=headers, timeout=15.0)
        elif args.action == "list":
            response = httpx.get(url, headers=headers, timeout=15.0)
        else:
            response = httpx.delete(f"{url}/{args.token_id}", headers=headers, timeout=15.0)
    except httpx.HTTPError as exc:
        print(f"runstream: cannot reach Runstream at {target.api} ({exc}); is it running?", file=sys.stderr)
        return 2
    if response.status_code not in (200, 201):
        print(f"runstream: HTTP {response.status_code}: {_detail(response)}", file=sys.stderr)
        return 1
    data = response.json()
    if args.action == "create":
        print(data["token"])
        print(
            f"runstream: token {data['token_id']} ({_describe(data)}); it is not shown again", file=sys.stderr
        )
    elif args.action == "list":
        for grant in data["tokens"]:
            print(f"{grant['token_id']}  {_describe(grant)}")
    else:
        print(f"runstream: token {data['token_id']} revoked")
    return 0


def _describe(grant: dict[str, Any]) -> str:
    parts = [f"workspace {grant['workspace']}", f"role {grant['role']}"]
    if grant.get("name"):
        parts.append(f"name {grant['name']!r}")
    if grant.get("revoked_ms") is not None:
        parts.append(f"revoked {_when(grant['revoked_ms'])}")
    elif grant.get("expires_ms") is not None:
        parts.append(f"expires {_when(grant['expires_ms'])}")
    return ", ".join(parts)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail") or body)
