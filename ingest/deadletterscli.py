"""`ingestd dead-letters list|show|retry|drop`: the operator's tools for unprocessable messages."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ingest import deadletters
from ingest.config import Config

EXIT_NOT_FOUND = 3
EXIT_USAGE = 2


def register(commands: Any, console: Console) -> None:
    dead = commands.add_parser(
        "dead-letters", help="messages that could not be processed: look, retry, drop"
    )
    sub = dead.add_subparsers(title="dead-letters commands", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="dead letters, newest first, with their error")
    _filters(listing)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list, console=console)

    show = sub.add_parser("show", help="one dead letter: error, attempts, key headers")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument(
        "--raw", metavar="FILE", help="write the message's raw bytes to FILE ('-': stdout)"
    )
    show.set_defaults(handler=_show, console=console)

    retry = sub.add_parser(
        "retry", help="put dead letters back for processing (by id, or --all matching filters)"
    )
    retry.add_argument("ids", type=int, nargs="*", metavar="ID")
    retry.add_argument("--all", action="store_true", help="every dead letter the filters match")
    _filters(retry)
    retry.set_defaults(handler=_retry, console=console)

    drop = sub.add_parser("drop", help="retire a dead letter; its raw bytes and error are kept")
    drop.add_argument("id", type=int)
    drop.add_argument("--reason", default="dropped by an operator", help="kept with the row")
    drop.set_defaults(handler=_drop, console=console)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channel", help="only this channel (email, telegram, ...)")
    parser.add_argument("--error", metavar="TEXT", help="only errors containing TEXT")
    parser.add_argument("--since", metavar="TIME", help="only received at or after (ISO 8601)")
    parser.add_argument("--dropped", action="store_true", help="the dropped ones instead")


def _filter(args: argparse.Namespace, ids: tuple[int, ...] = ()) -> deadletters.Filter:
    since = None
    if args.since:
        since = datetime.fromisoformat(args.since)
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    return deadletters.Filter(
        ids=ids, channel=args.channel, error=args.error, since=since, dropped=args.dropped
    )


def _store(config: Config) -> Any:
    from ingest.store import Store

    store = Store(config.database)
    store.migrate()
    return store


def _list(config: Config, args: argparse.Namespace) -> int:
    try:
        which = _filter(args)
    except ValueError as exc:
        return _usage(f"--since: {exc}")
    store = _store(config)
    with store.read() as session:
        rows = [
            deadletters.view(r)
            for r in deadletters.find(session, which, limit=args.limit, offset=args.offset)
        ]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    kind = "Dropped letters" if args.dropped else "Dead letters"
    table = Table(title=f"{kind} ({len(rows)} shown)")
    for column in ("Id", "Received", "Channel", "Attempts", "From", "Subject", "Error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        headers = row["headers"]
        table.add_row(
            str(row["id"]),
            row["received_at"][:19].replace("T", " "),
            row["channel"],
            f"{row['attempts']}" + (f" (+{row['requeues']} retries)" if row["requeues"] else ""),
            headers.get("From", ""),
            headers.get("Subject", ""),
            _summary(row["error"]),
        )
    args.console.print(table)
    return 0


def _show(config: Config, args: argparse.Namespace) -> int:
    store = _store(config)
    with store.read() as session:
        row = deadletters.get(session, args.id)
        if row is None:
            print(f"ingestd: no dead letter {args.id}", file=sys.stderr)
            return EXIT_NOT_FOUND
        data = deadletters.view(row, full=True)
        raw = bytes(row.raw)
    if args.raw:
        if args.raw == "-":
            sys.stdout.buffer.write(raw)
            sys.stdout.buffer.flush()
            return 0
        Path(args.raw).write_bytes(raw)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    console: Console = args.console
    console.print(f"[bold]Dead letter {data['id']}[/bold]  ({data['outcome']})", highlight=False)
    facts = [
        ("Channel", data["channel"]),
        ("Key", data["external_id"]),
        ("Received", data["received_at"]),
        ("Attempts", f"{data['attempts']} (requeued {data['requeues']} times)"),
        ("Size", f"{data['size']} bytes"),
        *[(name, value) for name, value in data["headers"].items()],
    ]
    if data["reason"]:
        facts.append(("Reason", data["reason"]))
    if args.raw:
        facts.append(("Raw", f"written to {args.raw}"))
    for label, value in facts:
        console.print(f"  {label:<11} {value}", highlight=False, markup=False)
    console.print("  Error:", highlight=False)
    for line in (data["error"] or "-").splitlines():
        console.print(f"    {line}", highlight=False, markup=False)
    return 0


def _retry(config: Config, args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all):
        return _usage("name dead letters by id, or use --all (with filters) for every match")
    try:
        which = _filter(args, tuple(args.ids))
    except ValueError as exc:
        return _usage(f"--since: {exc}")
    store = _store(config)
    with store.write() as session:
        done = deadletters.retry(session, which, datetime.now(UTC))
    missing = sorted(set(args.ids) - set(done))
    if done:
        ids = ", ".join(map(str, done))
        print(f"{len(done)} put back for processing: {ids}")
    else:
        print("nothing to retry")
    if missing:
        print(f"ingestd: not dead letters: {', '.join(map(str, missing))}", file=sys.stderr)
        return EXIT_NOT_FOUND
    return 0


def _drop(config: Config, args: argparse.Namespace) -> int:
    store = _store(config)
    with store.write() as session:
        dropped = deadletters.drop(session, args.id, args.reason, datetime.now(UTC))
    if not dropped:
        print(f"ingestd: no dead letter {args.id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"dead letter {args.id} dropped; its raw bytes are kept (journal outcome 'dropped')")
    return 0


def _summary(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1][:200] if lines else ""


def _usage(message: str) -> int:
    print(f"ingestd: {message}", file=sys.stderr)
    return EXIT_USAGE
