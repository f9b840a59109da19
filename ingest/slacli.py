"""`ingestd sla list`: which KPIs are nearing or past their deadline, in business time."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from ingest.config import Config
from ingest.slaviews import STATUS_WORDS


def register(commands: Any, console: Any) -> None:
    sla = commands.add_parser("sla", help="SLA KPIs of cases: deadlines and time left")
    sub = sla.add_subparsers(title="sla commands", metavar="ACTION", required=True)
    listing = sub.add_parser(
        "list",
        help="KPIs nearest their failure time first (default: open or failed, active cases)",
    )
    listing.add_argument("--status", choices=sorted(STATUS_WORDS), help="only KPIs in this status")
    listing.add_argument("--all", action="store_true", help="include resolved and cancelled cases")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list, console=console)


def _list(config: Config, args: argparse.Namespace) -> int:
    from ingest.cli import _store
    from ingest.clock import from_environment
    from ingest.pipeline import sla_book
    from ingest.slaviews import list_kpis

    book = sla_book(config)
    store = _store(config)
    with store.read() as session:
        rows = list_kpis(
            session,
            book,
            from_environment().now(),
            status=args.status,
            include_closed=args.all,
            limit=args.limit,
        )
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    table = Table(title=f"SLA KPIs ({len(rows)} shown)")
    for column in ("Case", "KPI", "Status", "Deadline", "Time left", "Priority", "Queue", "SLA"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["case"],
            row["name"],
            row["status"],
            _deadline(row),
            row["time_left"],
            row["priority"],
            row["queue"] or "",
            f"{row['policy']} / {row['item']}",
        )
    args.console.print(table)
    return 0


def _deadline(row: dict[str, Any]) -> str:
    local: str = row["fail_at_local"]
    return f"{local[:16].replace('T', ' ')} {row['timezone']}"
