"""Read a stopped projector's embedded ClickHouse from a process of its own, for the fault tests.

Usage: python -m tests.reliability.clickhouse_probe DSN DATABASE JOURNAL GROUP TOPIC

Prints one JSON line: the checker's report (``DeliveryLedger.report_clickhouse``) of
the acknowledged events in JOURNAL, and the positions recorded in ``projector_offsets``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

from runstream.store.clickhouse import ProjectionStore
from tests.reliability.checker import DeliveryLedger


async def main(dsn: str, database: str, journal: Path, group: str, topic: str) -> None:
    ledger = DeliveryLedger.from_journal(journal)
    store = ProjectionStore(dsn, database)
    await store.start(migrate=False)
    try:
        report = await ledger.report_clickhouse(store)
        rows = await store.query(
            "SELECT partition, max(next_offset) FROM projector_offsets"
            " WHERE grp = {grp:String} AND topic = {topic:String} GROUP BY partition",
            {"grp": group, "topic": topic},
        )
    finally:
        await store.close()
    print(
        orjson.dumps(
            {
                "figures": report.figures(),
                "text": str(report),
                "positions": {str(p): int(o) for p, o in rows},
            }
        ).decode()
    )


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], Path(a[2]), a[3], a[4]))
