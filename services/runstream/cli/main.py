"""``runstream``: run the services, alone or all together, and manage the store.

    runstream up         [--host H] [--port P] [--data-dir D]   every service in one process
    runstream ingest|query|gateway|projector [same options]     one service alone
    runstream migrate                                           apply the ClickHouse DDL
    runstream replay [--drop-previous]                          rebuild every projection from the log
    runstream token                                             print the server's own (admin) token
    runstream tokens create|list|revoke                         tokens scoped to a workspace and a role
    runstream tail RUN_ID                                       follow a run's output; exit with its outcome
    runstream runs --compute NAME [--watch]                     queued and active runs of a compute target

Settings come from the environment (see ``runstream.settings``); flags override them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from runstream.cli import tokens
from runstream.settings import Settings

SERVICE_COMMANDS = {
    "up": ("ingest", "projector", "query", "gateway"),
    "ingest": ("ingest",),
    "projector": ("projector",),
    "query": ("query",),
    "gateway": ("gateway",),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runstream", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, services in SERVICE_COMMANDS.items():
        sub = commands.add_parser(name, help=f"run {', '.join(services)}")
        sub.add_argument("--host", help="listen address (RUNSTREAM_HOST, default 127.0.0.1)")
        sub.add_argument("--port", type=int, help="listen port (RUNSTREAM_PORT, default 8555)")
        sub.add_argument("--data-dir", type=Path, help="data folder (RUNSTREAM_DATA_DIR)")
    migrate = commands.add_parser("migrate", help="apply the ClickHouse migrations")
    migrate.add_argument("--data-dir", type=Path)
    replay = commands.add_parser(
        "replay", help="rebuild every projection from the start of the log into a new generation, then switch"
    )
    replay.add_argument("--data-dir", type=Path)
    replay.add_argument(
        "--drop-previous", action="store_true", help="drop the previous generation once the switch is made"
    )
    token = commands.add_parser("token", help="print the server token (created if missing)")
    token.add_argument("--data-dir", type=Path)
    tokens.add_parser(commands)
    tail = commands.add_parser(
        "tail", help="follow a run's log lines and status live; exit 0 completed, 1 failed, 130 canceled"
    )
    tail.add_argument("run_id")
    runs = commands.add_parser("runs", help="list the queued and active runs of a compute target")
    runs.add_argument("--compute", required=True, metavar="NAME", help="the compute target")
    runs.add_argument("--watch", action="store_true", help="keep the list live until Ctrl-C")
    for client_command in (tail, runs):
        client_command.add_argument("--api", help="Runstream's address (RUNSTREAM_API, else RUNSTREAM_URI)")
        client_command.add_argument("--token", help="bearer token (RUNSTREAM_TOKEN)")
        client_command.add_argument("--workspace", help="workspace (RUNSTREAM_WORKSPACE, default 'default')")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    changes: dict[str, object] = {}
    if getattr(args, "data_dir", None):
        changes["data_dir"] = args.data_dir.expanduser()
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        changes["port"] = args.port
    return settings.with_changes(**changes) if changes else settings


def studio_url(settings: Settings, token: str | None) -> str:
    """The studio's address; the token rides in the fragment, which no server or log ever sees."""
    host = settings.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    fragment = f"#token={quote(token, safe='')}" if token else ""
    return f"http://{host}:{settings.port}/{fragment}"


def studio_line(settings: Settings, token: str, *, with_token: bool) -> str:
    from runstream.studio import DIST_DIR

    if not (DIST_DIR / "index.html").is_file():
        return "runstream: the studio is not built (run scripts/install, which needs Node.js); the API works"
    return f"runstream: studio at {studio_url(settings, token if with_token else None)}"


def serve(settings: Settings, services: Sequence[str]) -> None:
    import uvicorn

    from runstream.server.app import Service, create_app

    app = create_app(settings, [Service(s) for s in services])
    runtime = app.state.runtime
    where = "Kafka at " + settings.kafka_bootstrap if settings.kafka_bootstrap else "the local event log"
    print(f"runstream: {', '.join(services)} on http://{settings.host}:{settings.port}", flush=True)
    print(
        f"runstream: data in {settings.data_dir}; events on {where};"
        f" ClickHouse {settings.resolved_clickhouse_dsn}",
        flush=True,
    )
    if not settings.token:
        made = "created" if runtime.token_created else "read"
        print(f"runstream: token {made} at {settings.token_file}", flush=True)
    if "query" in services:
        everything = tuple(services) == SERVICE_COMMANDS["up"]
        print(studio_line(settings, runtime.token, with_token=everything), flush=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level="info",
        ws_max_size=1024 * 1024,
        # No permessage-deflate: each socket would compress its own copy of every frame,
        # so fan-out to N watchers costs N compressions (see gateway/PROTOCOL.md, Limits).
        ws_per_message_deflate=False,
        lifespan="on",
    )


async def _replay(settings: Settings, *, drop_previous: bool) -> int:
    from runstream.errors import RunstreamError
    from runstream.eventlog.factory import open_event_log
    from runstream.projector.replay import replay
    from runstream.store.clickhouse import ProjectionStore

    store = ProjectionStore(settings.resolved_clickhouse_dsn, settings.clickhouse_database)
    event_log = open_event_log(settings)
    try:
        await store.start(migrate=True)
        await event_log.start()
        result = await replay(
            settings, event_log, store, drop_previous=drop_previous, progress=lambda m: print(m, flush=True)
        )
    except RunstreamError as exc:
        print(f"runstream: replay failed: {exc}", file=sys.stderr)
        if store.embedded:
            print(
                "runstream: with the embedded engine, stop `runstream up` first: one process at a time "
                "can open its data folder",
                file=sys.stderr,
            )
        return 1
    finally:
        await event_log.close()
        await store.close()
    print(
        f"runstream: replayed {result.events} records into {result.generation.database} "
        f"in {result.seconds:.1f} s; services switch to it within a few seconds"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "tokens":
        return tokens.run(args)
    if args.command in ("tail", "runs"):
        from runstream.widgets import terminal

        target = terminal.Target.resolve(args.api, args.token, args.workspace)
        if args.command == "tail":
            return terminal.tail(args.run_id, target)
        return terminal.runs(args.compute, target, watch=args.watch)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = _settings(args)
    if args.command in SERVICE_COMMANDS:
        serve(settings, SERVICE_COMMANDS[args.command])
        return 0
    if args.command == "migrate":
        from runstream.store.clickhouse import ProjectionStore

        async def migrate() -> None:
            store = ProjectionStore(settings.resolved_clickhouse_dsn, settings.clickhouse_database)
            await store.start(migrate=True)
            await store.close()

        asyncio.run(migrate())
        print(f"runstream: migrations applied to {settings.clickhouse_database}")
        return 0
    if args.command == "replay":
        return asyncio.run(_replay(settings, drop_previous=args.drop_previous))
    if args.command == "token":
        from runstream.server.app import resolve_token

        token, _ = resolve_token(settings)
        print(token)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
