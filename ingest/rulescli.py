"""`ingestd rules check` and `ingestd rules test`: the support lead's tools."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ingest.config import Config, DatabaseConfig
from ingest.message import InboundAttachment, InboundMessage
from ingest.ruleset import RuleBook
from ingest.yamlsource import SourceError

EXIT_INVALID = 1
IDENTITY_KINDS = {"email": "email", "sms": "phone", "telegram": "telegram", "twitter": "x"}


def register(commands: Any, console: Any) -> None:
    rules = commands.add_parser("rules", help="check and try the record-creation and routing rules")
    sub = rules.add_subparsers(title="rules commands", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate a rules directory (exit 1 with the report)")
    check.add_argument("dir", nargs="?", type=Path, help="default: rules_dir from config")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(handler=_check, console=console)
    test = sub.add_parser("test", help="show what a message would become, writing nothing")
    test.add_argument("message", type=Path, help="an .eml file, or a .json message")
    test.add_argument("--rules", type=Path, metavar="DIR", help="default: rules_dir from config")
    test.add_argument("--at", metavar="TIME", help="evaluate at this ISO time (default: now)")
    test.add_argument("--json", action="store_true", help="print JSON")
    test.set_defaults(handler=_test, console=console)


def _load(config: Config, rules_dir: Path | None) -> RuleBook | SourceError:
    from ingest.rulewatch import load_book

    try:
        return load_book(config, rules_dir)
    except SourceError as exc:
        return exc


def _report_problems(exc: SourceError, as_json: bool, rules_dir: Path) -> int:
    if as_json:
        print(
            json.dumps(
                {
                    "valid": False,
                    "rules_dir": str(rules_dir),
                    "problems": [p.as_dict() for p in exc.problems],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        count = len(exc.problems)
        print(f"{rules_dir}: {count} problem{'s' if count != 1 else ''}; the rules are not valid")
        for problem in exc.problems:
            print(f"  {problem}")
    return EXIT_INVALID


def _check(config: Config, args: argparse.Namespace) -> int:
    rules_dir = args.dir or config.rules_dir
    book = _load(config, args.dir)
    if isinstance(book, SourceError):
        return _report_problems(book, args.json, rules_dir)
    summary = {"valid": True, "rules_dir": str(rules_dir), **book.summary()}
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    print(
        f"{rules_dir}: valid, version {book.version}: {len(book.files)} files, "
        f"{len(book.record_creation)} record-creation and {len(book.routing)} routing items, "
        f"{len(book.templates.templates)} template(s)"
    )
    if not book.files:
        print(f"  note: no *.yaml files in {rules_dir}: every message follows rules_unmatched")
    return 0


def read_message(path: Path) -> InboundMessage:
    """An .eml file through the real email parser, or a JSON message for other channels."""
    from channels import mime

    data = path.read_bytes()
    if path.suffix.lower() != ".json":
        return mime.parse(data)
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("a JSON message is an object with channel, from, text, ...")
    channel = str(doc.get("channel", "email"))
    if channel not in IDENTITY_KINDS:
        raise ValueError(f"unknown channel {channel!r} (one of {', '.join(IDENTITY_KINDS)})")
    sender = str(doc.get("from") or "")
    if not sender:
        raise ValueError("a JSON message needs 'from'")
    return InboundMessage(
        channel=channel,
        external_id=str(doc.get("id") or f"test:{path.name}"),
        identity_kind=IDENTITY_KINDS[channel],
        sender=sender.lower() if channel == "email" else sender,
        sender_name=doc.get("from_name"),
        recipients=[str(r).lower() for r in doc.get("to") or []],
        subject=str(doc.get("subject") or ""),
        text=str(doc.get("text") or ""),
        attachments=[
            InboundAttachment(filename=str(name), content_type="application/octet-stream", data=b"")
            for name in doc.get("attachments") or []
        ],
        headers={str(k).lower(): str(v) for k, v in (doc.get("headers") or {}).items()},
        language=doc.get("language"),
        message_id=doc.get("message_id"),
        in_reply_to=doc.get("in_reply_to"),
        # Channel-specific fields, e.g. {"telegram.chat_type": "private"}.
        fields=dict(doc.get("fields") or {}),
    )


@contextmanager
def _read_session(config: Config, console: Console) -> Iterator[tuple[Session, str]]:
    """A read session on the real store, or on an empty one when it cannot be read."""
    from ingest.store import Store, StoreUnavailable
    from ingest.store.migrate import current

    store = Store(config.database)
    try:
        # Probe first: an error raised later, inside the caller's block, must
        # not be taken for an unreadable store.
        if current(store.read_engine) is None:
            raise StoreUnavailable("the database has no schema yet (ingestd migrate)")
    except (StoreUnavailable, SQLAlchemyError) as exc:
        console.print(f"note: customers and cases unknown ({exc}); using an empty store")
        store.dispose()
    else:
        try:
            with store.read() as session:
                yield session, "the store"
        finally:
            store.dispose()
        return
    with tempfile.TemporaryDirectory(prefix="ingestd-rules-test-") as tmp:
        empty = Store(DatabaseConfig(url=f"sqlite:///{tmp}/empty.db"))
        empty.migrate()
        try:
            with empty.read() as session:
                yield session, "an empty store"
        finally:
            empty.dispose()


def _test(config: Config, args: argparse.Namespace) -> int:
    from ingest import intake
    from ingest.pipeline import environment

    console: Console = args.console
    rules_dir = args.rules or config.rules_dir
    book = _load(config, args.rules)
    if isinstance(book, SourceError):
        return _report_problems(book, args.json, rules_dir)
    try:
        msg = read_message(args.message)
    except (OSError, ValueError) as exc:
        print(f"ingestd: cannot read {args.message}: {exc}", file=sys.stderr)
        return 2
    try:
        now = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    except ValueError:
        print(f"ingestd: --at {args.at!r} is not an ISO time (2026-11-23T09:30)", file=sys.stderr)
        return 2
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    err = Console(stderr=True)
    with _read_session(config, err) as (session, source):
        signer = _known_signer(config, session)
        decision = intake.decide(session, book, msg, now, environment(config, signer))
        report = _report(book, decision, msg, now, source)
        session.rollback()  # nothing is written, even by accident
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    else:
        _print_report(console, report)
    return 0


def _known_signer(config: Config, session: Session) -> Any:
    """The store's signer, so `rules test` follows reply tokens as the daemon does."""
    from ingest import signing

    secret = config.signing.secret
    try:
        return signing.known_signer(secret.get_secret_value() if secret else None, session)
    except SQLAlchemyError:
        return None  # an empty or older store: tokens are simply not followed


def _report(
    book: RuleBook, decision: Any, msg: InboundMessage, now: datetime, source: str
) -> dict[str, Any]:
    from ingest import intake

    facts = decision.facts
    trace = [
        {
            "rule": t.item.name,
            "file": t.item.file,
            "line": t.item.line,
            "matched": t.matched,
            "why_not": t.why_not,
        }
        for t in book.trace(facts, "record_creation")
    ]
    routing = []
    if decision.new_case is not None and facts.case is not None:
        routing = [
            {
                "rule": t.item.name,
                "file": t.item.file,
                "line": t.item.line,
                "matched": t.matched,
                "why_not": t.why_not,
                "queue": t.item.queue,
            }
            for t in book.trace(facts, "routing")
        ]
    report: dict[str, Any] = {
        "rules_version": book.version,
        "evaluated_at": now.isoformat(),
        "customers_from": source,
        "message": {"channel": msg.channel, "from": msg.sender, "subject": msg.subject},
        "customer": {
            "known": facts.known,
            "name": facts.contact.full_name if facts.contact else None,
        },
        "record_creation": trace,
        "routing": routing,
        "outcome": decision.outcome.value,
        "decided_by": decision.decided_by,
        "reason": decision.reason,
        "appended_to": decision.case.number if decision.case is not None else None,
        "reopens": decision.reopen,
        "case": None,
        "auto_response": None,
    }
    spec = decision.new_case
    if spec is not None:
        report["case"] = {
            "title": spec.title,
            "priority": spec.priority,
            "queue": spec.queue,
            "routed_by": spec.routed_by,
            "product": spec.product,
            "category": spec.category,
            "custom": spec.custom,
            "follows": decision.previous.number if decision.previous else None,
            "contact_created": decision.create_contact,
            "expression_errors": spec.problems,
        }
    if decision.auto_response is not None:
        answer: dict[str, Any] = {"template": decision.auto_response, "to": msg.sender}
        if decision.auto_response_blocked:
            answer["withheld"] = decision.auto_response_blocked
        else:
            context = intake.template_context(msg, facts.contact, now, facts.known)
            context["case"] = {
                "number": "CAS-(new)",
                "title": spec.title if spec else "",
                "priority": spec.priority if spec else "",
                "queue": spec.queue if spec else None,
            }
            try:
                rendered = book.templates.get(decision.auto_response).render(context)
                answer.update(subject=rendered.subject, text=rendered.text)
            except Exception as exc:
                answer["error"] = str(exc)
        report["auto_response"] = answer
    return report


def _print_report(console: Console, report: dict[str, Any]) -> None:
    msg = report["message"]
    console.print(
        f"[bold]{msg['channel']}[/bold] from {msg['from']}: {msg['subject']!r}", highlight=False
    )
    customer = report["customer"]
    console.print(
        f"customer: {customer['name'] + ' (known)' if customer['known'] else 'unknown'}"
        f"  ·  rules {report['rules_version']}  ·  at {report['evaluated_at']}",
        highlight=False,
    )
    for title, rows in (
        ("Record creation", report["record_creation"]),
        ("Routing", report["routing"]),
    ):
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        for column in ("Rule", "Where", "Result"):
            table.add_column(column, overflow="fold")
        for row in rows:
            where = f"{Path(row['file']).name}:{row['line']}"
            result = "[green]matched[/green]" if row["matched"] else f"no: {row['why_not']}"
            table.add_row(row["rule"], where, result)
        console.print(table)
    outcome = report["outcome"]
    console.print(f"[bold]outcome:[/bold] {outcome}  ({report['decided_by']})", highlight=False)
    if report["reason"]:
        console.print(f"reason: {report['reason']}", highlight=False)
    if report["appended_to"]:
        reopen = " (and reopens it)" if report["reopens"] else ""
        console.print(f"added to case {report['appended_to']}{reopen}", highlight=False)
    case = report["case"]
    if case:
        console.print("[bold]the case that would be created:[/bold]")
        for key in ("title", "priority", "queue", "routed_by", "category", "product", "follows"):
            if case[key]:
                console.print(f"  {key:<10} {case[key]}", highlight=False)
        for key, value in case["custom"].items():
            console.print(f"  custom.{key} {value}", highlight=False)
        for problem in case["expression_errors"]:
            console.print(f"  [red]expression failed:[/red] {problem}", highlight=False)
    answer = report["auto_response"]
    if answer:
        if "withheld" in answer:
            console.print(f"auto-response {answer['template']!r} withheld: {answer['withheld']}")
        elif "error" in answer:
            console.print(
                f"[red]auto-response {answer['template']!r} fails:[/red] {answer['error']}"
            )
        else:
            console.print(
                f"auto-response {answer['template']!r} to {answer['to']}: {answer['subject']}",
                highlight=False,
            )
