"""`ingestd entitlements add|list|show|cancel|activate|import`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.table import Table

from ingest.config import Config
from ingest.store.models import EntitlementState
from ingest.yamlsource import Problem, SourceError, YamlDocument

EXIT_INVALID = 1
EXIT_NOT_FOUND = 3
STATES = [s.value for s in EntitlementState]


def register(commands: Any, console: Any) -> None:
    ent = commands.add_parser("entitlements", help="what customers are owed: terms and SLA")
    sub = ent.add_subparsers(title="entitlements commands", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="add an entitlement for an account or a contact")
    add.add_argument("name")
    who = add.add_mutually_exclusive_group(required=True)
    who.add_argument("--account", metavar="NAME", help="an account (every contact of it)")
    who.add_argument("--contact", metavar="EMAIL", help="one contact (created if new)")
    add.add_argument(
        "--contacts", metavar="EMAIL,...", help="narrow an account's entitlement to these"
    )
    add.add_argument("--start", type=date.fromisoformat, help="YYYY-MM-DD (default: today)")
    add.add_argument("--end", type=date.fromisoformat, required=True, help="YYYY-MM-DD")
    add.add_argument("--terms", type=int, help="cases allowed (default: unlimited)")
    add.add_argument(
        "--channel-terms",
        action="append",
        default=[],
        metavar="CHANNEL=N",
        help="terms for one channel (repeat); channels left out get none",
    )
    add.add_argument("--decrement-on", choices=["creation", "resolution"], default="creation")
    add.add_argument(
        "--allow-negative",
        action="store_true",
        help="cases may still open when the terms are used up (default: restrict)",
    )
    add.add_argument("--sla", metavar="POLICY", help="the SLA policy its cases get")
    add.add_argument("--default", action="store_true", help="preferred among the customer's")
    add.add_argument("--draft", action="store_true", help="add as Draft (activate later)")
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(handler=_add, console=console)

    listing = sub.add_parser("list", help="entitlements, with their state today")
    listing.add_argument("--state", choices=STATES)
    listing.add_argument("--customer", metavar="TEXT", help="account name or contact address")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list, console=console)

    show = sub.add_parser("show", help="one entitlement, its terms and its cases")
    show.add_argument("ref", metavar="ID|NAME")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show, console=console)

    for verb, text in (("cancel", "no new cases under it"), ("activate", "activate a draft")):
        parser = sub.add_parser(verb, help=text)
        parser.add_argument("ref", metavar="ID|NAME")
        parser.set_defaults(handler=_change, verb=verb, console=console)

    load = sub.add_parser("import", help="add the entitlements of a YAML file (all or none)")
    load.add_argument("file", type=Path)
    load.add_argument("--json", action="store_true", help="print JSON")
    load.set_defaults(handler=_import, console=console)


def _today() -> date:
    from ingest.clock import from_environment

    return from_environment().now().date()


def _add(config: Config, args: argparse.Namespace) -> int:
    from ingest.entitlementadmin import EntitlementSpec

    try:
        channels = dict(_channel_terms(item) for item in args.channel_terms)
        spec = EntitlementSpec(
            name=args.name,
            account=args.account,
            contact=args.contact,
            contacts=[c for c in (args.contacts or "").split(",") if c.strip()],
            start=args.start or _today(),
            end=args.end,
            terms=args.terms,
            channels=channels,
            decrement_on=args.decrement_on,
            restrict=not args.allow_negative,
            sla=args.sla,
            default=args.default,
            state="Draft" if args.draft else "Active",
        )
    except (ValidationError, ValueError) as exc:
        return _invalid(_messages(exc))
    return _create(config, [spec], args, single=True)


def _channel_terms(item: str) -> tuple[str, int | None]:
    channel, sep, terms = item.partition("=")
    if not sep:
        raise ValueError(f"--channel-terms {item!r}: write CHANNEL=N, e.g. email=10")
    value = terms.strip().lower()
    if value in ("", "unlimited"):
        return channel.strip(), None
    try:
        return channel.strip(), int(value)
    except ValueError:
        raise ValueError(f"--channel-terms {item!r}: {terms!r} is not a number") from None


def _import(config: Config, args: argparse.Namespace) -> int:
    from ingest import yamlsource
    from ingest.entitlementadmin import EntitlementSpec

    try:
        doc = yamlsource.load(args.file, env={})
    except SourceError as exc:
        return _invalid([str(p) for p in exc.problems])
    entries = doc.data.get("entitlements") if isinstance(doc.data, dict) else None
    if not isinstance(entries, list) or not entries:
        problem = Problem(doc.path, 1, "entitlements", "the file needs a list `entitlements:`")
        return _invalid([str(problem)])
    specs, problems = [], []
    for index, entry in enumerate(entries):
        try:
            specs.append(EntitlementSpec.model_validate(entry))
        except ValidationError as exc:
            problems.extend(doc.problems_from(exc, prefix=("entitlements", index)))
    if problems:
        return _invalid([str(p) for p in problems])
    return _create(config, specs, args, single=False, source=doc)


def _create(
    config: Config,
    specs: list[Any],
    args: argparse.Namespace,
    *,
    single: bool,
    source: YamlDocument | None = None,
) -> int:
    from ingest.cli import _store
    from ingest.clock import from_environment
    from ingest.entitlementadmin import EntitlementError, create, exists, view

    store = _store(config)
    now = from_environment().now()
    created: list[dict[str, Any]] = []
    skipped: list[str] = []
    notes: list[str] = []
    try:
        with store.write() as session:
            for index, spec in enumerate(specs):
                try:
                    if not single and exists(session, spec) is not None:
                        skipped.append(spec.name)
                        continue
                    entitlement, more = create(session, spec, now, config.sla.policies)
                except EntitlementError as exc:
                    where = ""
                    if source is not None:
                        line = source.line_of(("entitlements", index))
                        where = f"{source.path}:{line}: entitlements[{index}]: "
                    raise EntitlementError(where + str(exc)) from exc
                notes.extend(more)
                created.append(view(session, entitlement, now.date()))
    except EntitlementError as exc:
        return _invalid([str(exc)])
    if args.json:
        out: Any = created[0] if single else {"created": created, "skipped": skipped}
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    for note in notes:
        print(note)
    for item in created:
        print(f"entitlement {item['id']} {item['name']!r} added ({item['state']})")
    for name in skipped:
        print(f"entitlement {name!r} already there: left as it is")
    return 0


def _list(config: Config, args: argparse.Namespace) -> int:
    from ingest.cli import _store
    from ingest.entitlementadmin import list_all

    store = _store(config)
    with store.read() as session:
        rows = list_all(session, _today(), state=args.state, customer=args.customer)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    table = Table(title=f"Entitlements ({len(rows)})")
    for column in ("Id", "Name", "Customer", "State", "From", "To", "Terms left", "SLA"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["name"] + (" (default)" if row["default"] else ""),
            _customer(row),
            row["state"],
            row["start"],
            row["end"],
            _terms(row),
            row["sla"] or "default",
        )
    args.console.print(table)
    return 0


def _show(config: Config, args: argparse.Namespace) -> int:
    from ingest.cli import _store
    from ingest.entitlementadmin import EntitlementError, cases_of, find, view

    store = _store(config)
    with store.read() as session:
        try:
            entitlement = find(session, args.ref)
        except EntitlementError as exc:
            print(f"ingestd: {exc}", file=sys.stderr)
            return EXIT_NOT_FOUND
        detail = {**view(session, entitlement, _today()), "cases": cases_of(session, entitlement)}
    if args.json:
        print(json.dumps(detail, indent=2, ensure_ascii=False))
        return 0
    console = args.console
    console.print(f"[bold]{detail['name']}[/bold]  (entitlement {detail['id']})")
    facts = [
        ("Customer", _customer(detail)),
        ("State", detail["state"]),
        ("Dates", f"{detail['start']} to {detail['end']}"),
        ("Terms left", _terms(detail)),
        ("Counted on", f"case {detail['decrement_on']}"),
        ("Restrict", "yes: no case once used up" if detail["restrict"] else "no: may go below 0"),
        ("SLA", detail["sla"] or "the default policy"),
        ("Default", "yes" if detail["default"] else "no"),
        ("Cases", str(len(detail["cases"]))),
    ]
    if detail["contacts"]:
        facts.insert(1, ("Only for", ", ".join(detail["contacts"])))
    for label, value in facts:
        console.print(f"  {label:<11} {value}", highlight=False)
    if detail["cases"]:
        table = Table(title="Cases")
        for column in ("Case", "State", "Channel", "Term counted", "Created"):
            table.add_column(column)
        for case in detail["cases"]:
            table.add_row(
                case["number"],
                case["state"],
                case["channel"],
                "yes" if case["charged"] else "no",
                case["created_at"][:19].replace("T", " "),
            )
        console.print(table)
    return 0


def _change(config: Config, args: argparse.Namespace) -> int:
    from ingest.cli import _store
    from ingest.clock import from_environment
    from ingest.entitlementadmin import EntitlementError, activate, cancel, find

    store = _store(config)
    now = from_environment().now()
    try:
        with store.write() as session:
            entitlement = find(session, args.ref)
            (cancel if args.verb == "cancel" else activate)(entitlement, now)
            label = f"entitlement {entitlement.id} {entitlement.name!r}"
    except EntitlementError as exc:
        print(f"ingestd: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND if "no entitlement" in str(exc) else EXIT_INVALID
    print(f"{label} {'cancelled' if args.verb == 'cancel' else 'activated'}")
    return 0


def _customer(row: dict[str, Any]) -> str:
    customer = row["customer"]
    return str(customer["account"] or customer["contact"] or "-")


def _terms(row: dict[str, Any]) -> str:
    def pair(remaining: int | None, total: int | None) -> str:
        return "unlimited" if total is None else f"{remaining} of {total}"

    text = pair(row["terms"]["remaining"], row["terms"]["total"])
    if row["channels"]:
        text += "; " + ", ".join(
            f"{c['channel']} {pair(c['remaining'], c['total'])}" for c in row["channels"]
        )
    return text


def _messages(exc: Exception) -> list[str]:
    if isinstance(exc, ValidationError):
        return [
            (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "")
            + str(e["msg"]).removeprefix("Value error, ")
            for e in exc.errors()
        ]
    return [str(exc)]


def _invalid(problems: list[str]) -> int:
    print("ingestd: the entitlement is not valid:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_INVALID
