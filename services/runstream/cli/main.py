"""``runstream``: run the services, alone or all together, and manage the store.

    runstream up         [--host H] [--port P] [--data-dir D]   every service in one process
    runstream ingest|query|gateway|projector [same options]     one service alone
    runstream migrate                                           apply the ClickHouse DDL
    runstream token                                             print the embedded token

Settings come from the environment (see ``runstream.settings``); flags override them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

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
    token = commands.add_parser("token", help="print the server token (created if missing)")
    token.add_argument("--data-dir", type=Path)
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
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level="info",
        ws_max_size=1024 * 1024,
        lifespan="on",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    if args.command == "token":
        from runstream.server.app import resolve_token

        token, _ = resolve_token(settings)
        print(token)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
