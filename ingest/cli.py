"""The `ingestd` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from ingest import config as config_module
from ingest import logs
from ingest.config import Config
from ingest.yamlsource import SourceError

EXIT_CONFIG = 2
EXIT_NOT_FOUND = 3
EXIT_STORE = 4


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        config = config_module.load(config_module.resolve_path(args.config))
    except SourceError as exc:
        print("ingestd: the configuration is not valid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    from ingest.store import StoreUnavailable

    try:
        result: int = args.handler(config, args)
    except StoreUnavailable as exc:
        print(f"ingestd: the store is unavailable: {exc}", file=sys.stderr)
        return EXIT_STORE
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingestd", description=__doc__)
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $INGESTD_CONFIG or config/ingestd.yaml)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.set_defaults(handler=_run)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(handler=_migrate)

    check = commands.add_parser("config", help="validate the configuration and print it")
    check.set_defaults(handler=_config)

    case_cmd = commands.add_parser("cases", help="look at cases")
    case_sub = case_cmd.add_subparsers(title="cases commands", metavar="ACTION", required=True)
    listing = case_sub.add_parser("list", help="list cases, newest first")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument("--state", choices=["Active", "Resolved", "Cancelled"])
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    listing.set_defaults(handler=_cases_list)
    show = case_sub.add_parser("show", help="one case with its activities")
    show.add_argument("number")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_cases_show)

    journal = commands.add_parser("journal", help="look at received messages and their outcome")
    journal_sub = journal.add_subparsers(title="journal commands", metavar="ACTION", required=True)
    entries = journal_sub.add_parser("list", help="messages, newest first, with what decided them")
    entries.add_argument(
        "--outcome",
        choices=[
            "pending",
            "created",
            "appended",
            "duplicate",
            "skipped",
            "failed",
            "dead",
            "dropped",
        ],
    )
    entries.add_argument("--limit", type=int, default=50)
    entries.add_argument("--offset", type=int, default=0)
    entries.add_argument("--json", action="store_true", help="print JSON")
    entries.set_defaults(handler=_journal_list)

    from ingest import deadletterscli, rulescli

    rulescli.register(commands, _console())
    from ingest import importcli  # IMAP back-fill (issue 4)

    importcli.register(commands)
    from ingest import entitlementscli, slacli

    slacli.register(commands, _console())
    entitlementscli.register(commands, _console())
    deadletterscli.register(commands, _console())
    return parser


def _run(config: Config, args: argparse.Namespace) -> int:
    from ingest.daemon import Daemon

    logs.configure(config.logging.level, config.logging.format)
    asyncio.run(Daemon(config).run())
    return 0


def _store(config: Config) -> Any:
    from ingest.store import Store

    store = Store(config.database)
    store.migrate()
    return store


def _migrate(config: Config, args: argparse.Namespace) -> int:
    from ingest.store.migrate import current

    store = _store(config)
    print(f"database at revision {current(store.write_engine)}")
    return 0


def _config(config: Config, args: argparse.Namespace) -> int:
    from ingest.store.session import redacted

    data = config.model_dump(mode="json")
    data["database"]["url"] = redacted(config.database.url)
    print(json.dumps(data, indent=2))
    return 0


def _cases_list(config: Config, args: argparse.Namespace) -> int:
    from ingest.caseviews import list_cases

    store = _store(config)
    with store.read() as session:
        rows = list_cases(session, state=args.state, limit=args.limit, offset=args.offset)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    table = Table(title=f"Cases ({len(rows)} shown)")
    for column in (
        "Number",
        "Title",
        "State",
        "Status",
        "Priority",
        "Queue",
        "Channel",
        "Customer",
        "Created",
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        customer = row["customer"] or {}
        table.add_row(
            row["number"],
            row["title"],
            row["state"],
            row["status_reason"],
            row["priority"],
            row["queue"] or "",
            row["channel"],
            customer.get("email") or customer.get("name") or "",
            row["created_at"][:19].replace("T", " "),
        )
    _console().print(table)
    return 0


def _journal_list(config: Config, args: argparse.Namespace) -> int:
    from ingest.caseviews import list_journal

    store = _store(config)
    with store.read() as session:
        rows = list_journal(session, outcome=args.outcome, limit=args.limit, offset=args.offset)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    table = Table(title=f"Journal ({len(rows)} shown)")
    for column in ("Id", "Received", "Channel", "Outcome", "Case", "Decided by", "Reason"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["id"]),
            (row["received_at"] or "")[:19].replace("T", " "),
            row["channel"],
            row["outcome"],
            row["case"] or "",
            row["decided_by"] or "",
            row["reason"] or row["last_error"] or "",
        )
    _console().print(table)
    return 0


def _cases_show(config: Config, args: argparse.Namespace) -> int:
    from ingest.caseviews import case_detail, find_case
    from ingest.clock import from_environment
    from ingest.pipeline import sla_book

    store = _store(config)
    with store.read() as session:
        case = find_case(session, args.number)
        if case is None:
            print(f"ingestd: no case {args.number}", file=sys.stderr)
            return EXIT_NOT_FOUND
        detail = case_detail(session, case, sla_book(config), from_environment().now())
    if args.json:
        print(json.dumps(detail, indent=2, ensure_ascii=False))
        return 0
    _print_case(detail)
    return 0


def _console() -> Console:
    # Piped output (grep, less, tests) has no terminal width; folding a
    # case number across lines there would make it unsearchable.
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    return console


def _print_case(detail: dict[str, Any]) -> None:
    console = _console()
    customer = detail["customer"] or {}
    console.print(f"[bold]{detail['number']}[/bold]  {detail['title']}")
    facts = [
        ("State", f"{detail['state']} / {detail['status_reason']}"),
        ("Priority", detail["priority"]),
        ("Queue", detail["queue"] or "-"),
        ("Channel", detail["channel"]),
        (
            "Customer",
            " ".join(
                filter(
                    None,
                    [
                        customer.get("name"),
                        f"<{customer.get('email')}>" if customer.get("email") else None,
                    ],
                )
            )
            or "-",
        ),
        ("Decided by", detail["decided_by"] or "-"),
        ("Rules", detail["rules_version"] or "-"),
        ("Category", detail["category"] or "-"),
        ("Created", detail["created_at"]),
    ]
    if detail.get("entitlement"):
        facts.append(("Entitlement", detail["entitlement"]))
    if detail["previous_case"]:
        facts.append(("Follows", detail["previous_case"]))
    for label, value in facts:
        console.print(f"  {label:<11} {value}", highlight=False)
    table = Table(title="Activities")
    for column in ("When", "Type", "Dir", "From", "Subject", "Text"):
        table.add_column(column, overflow="fold")
    for a in detail["activities"]:
        text = (a["new_text"] or "").strip().replace("\n", " ")
        table.add_row(
            a["created_at"][:19].replace("T", " "),
            a["type"],
            "in" if a["direction"] == "incoming" else "out",
            a["sender"] or "",
            a["subject"] or "",
            text[:120] + ("…" if len(text) > 120 else ""),
        )
    console.print(table)
    if detail.get("sla"):
        sla = Table(title=f"SLA ({detail['sla_policy'] or '-'})")
        for column in ("KPI", "Item", "Status", "Warning", "Deadline", "Time left"):
            sla.add_column(column, overflow="fold")
        for kpi in detail["sla"]:
            sla.add_row(
                kpi["name"],
                kpi["item"],
                kpi["status"],
                (kpi["warn_at_local"] or "-")[:16].replace("T", " "),
                f"{kpi['fail_at_local'][:16].replace('T', ' ')} {kpi['timezone'] or ''}",
                kpi["time_left"],
            )
        console.print(sla)
