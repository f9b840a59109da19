"""Rules driven through the running daemon: real YAML files, real SMTP, real stores."""

from __future__ import annotations

import json
import smtplib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session as DbSession

from ingest.store.models import Case, Contact, Entitlement, OutboxMessage
from tests import mail
from tests.support import Daemon, Database, free_port, wait_until

QUEUES = [{"name": "General Support"}, {"name": "Billing"}, {"name": "Gold Support"}]
CALENDARS = {"Always": {"always_open": True}}

# One item per operator: the x-test header picks the item, the operator decides
# whether it matches; a miss falls through to the catch-all (category None).
OPERATORS = """
kind: record_creation
defaults: {create_contact: true}
items:
  - name: equals (shorthand, case-insensitive domain)
    when: {message.header.x-test: equals, message.from_domain: Contoso.COM}
    then: {create_case: {category: equals}}
  - name: not_equals
    when: {message.header.x-test: not_equals, message.language: {not_equals: de}}
    then: {create_case: {category: not_equals}}
  - name: in (list field, any recipient)
    when:
      message.header.x-test: in
      message.to: {in: [billing@example.com, sales@example.com]}
    then: {create_case: {category: in}}
  - name: not_in
    when: {message.header.x-test: not_in, message.from_domain: {not_in: [spam.example]}}
    then: {create_case: {category: not_in}}
  - name: contains (any of a list)
    when: {message.header.x-test: contains, message.subject: {contains: [invoice, refund]}}
    then: {create_case: {category: contains}}
  - name: not_contains
    when: {message.header.x-test: not_contains, message.text: {not_contains: unsubscribe}}
    then: {create_case: {category: not_contains}}
  - name: starts_with
    when: {message.header.x-test: starts_with, message.subject: {starts_with: urgent}}
    then: {create_case: {category: starts_with}}
  - name: ends_with
    when: {message.header.x-test: ends_with, message.from: {ends_with: "@partner.example"}}
    then: {create_case: {category: ends_with}}
  - name: matches (compiled once)
    when: {message.header.x-test: matches, message.text: {matches: 'order\\s+#?\\d{5}\\b'}}
    then: {create_case: {category: matches}}
  - name: case_sensitive
    when:
      message.header.x-test: case_sensitive
      message.subject: {contains: VIP, case_sensitive: true}
    then: {create_case: {category: case_sensitive}}
  - name: exists
    when: {message.header.x-test: exists, message.header.x-priority: {exists: true}}
    then: {create_case: {category: exists}}
  - name: gt
    when: {message.header.x-test: gt, message.attachment_count: {gt: 1}}
    then: {create_case: {category: gt}}
  - name: lt
    when: {message.header.x-test: lt, message.attachment_count: {lt: 1}}
    then: {create_case: {category: lt}}
  - name: nested all, any, not
    when:
      message.header.x-test: nested
      all:
        - any:
            - message.subject: {contains: printer}
            - message.subject: {contains: scanner}
        - not: {message.text: {contains: resolved}}
    then: {create_case: {category: nested}}
  - name: business hours
    when: {message.header.x-test: business_hours, business_hours: Always}
    then: {create_case: {category: business_hours}}
  - name: not in business hours
    when: {message.header.x-test: closed, not: {business_hours: Always}}
    then: {create_case: {category: closed}}
  - name: weekday
    when:
      message.header.x-test: weekday
      time.weekday: [mon, tue, wed, thu, fri, sat, sun]
    then: {create_case: {category: weekday}}
  - name: Catch-all
    then: {create_case: true}
"""


def _mail(
    test: str,
    *,
    sender: str = "Ann <ann@customer.example>",
    subject: str = "Hello",
    body: str = "Some text.",
    to: str = mail.SUPPORT,
    headers: dict[str, str] | None = None,
    attachments: int = 0,
) -> EmailMessage:
    msg = mail.message(subject=subject, body=body, sender=sender, to=to)
    msg["X-Test"] = test
    for name, value in (headers or {}).items():
        msg[name] = value
    for i in range(attachments):
        msg.add_attachment(b"data", maintype="application", subtype="pdf", filename=f"a{i}.pdf")
    return msg


# (test header, the message that matches, the message that does not)
OPERATOR_CASES: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = [
    ("equals", {"sender": "x@contoso.com"}, {"sender": "x@contoso.com.evil.example"}),
    (
        "not_equals",
        {"headers": {"Content-Language": "en"}},
        {"headers": {"Content-Language": "de"}},
    ),
    ("in", {"to": "support@example.com, Billing@Example.com"}, {"to": "support@example.com"}),
    ("not_in", {"sender": "a@ok.example"}, {"sender": "a@SPAM.example"}),
    ("contains", {"subject": "Where is my REFUND?"}, {"subject": "Where is my parcel?"}),
    ("not_contains", {"body": "Help please"}, {"body": "Please UNSUBSCRIBE me"}),
    ("starts_with", {"subject": "URGENT: down"}, {"subject": "Not urgent"}),
    ("ends_with", {"sender": "bo@Partner.example"}, {"sender": "bo@partner.example.org"}),
    ("matches", {"body": "About order #12345 today"}, {"body": "About order 1234"}),
    ("case_sensitive", {"subject": "VIP guest"}, {"subject": "vip guest"}),
    ("exists", {"headers": {"X-Priority": "1"}}, {}),
    ("gt", {"attachments": 2}, {"attachments": 1}),
    ("lt", {}, {"attachments": 1}),
    ("nested", {"subject": "Scanner broken"}, {"subject": "Scanner", "body": "now resolved"}),
    ("business_hours", {}, None),
    ("closed", None, {}),
    ("weekday", {}, None),
]


def _rules_daemon(
    tmp_path: Path, database: Database, files: dict[str, str], **overrides: Any
) -> Daemon:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    for name, text in files.items():
        (rules / name).write_text(text)
    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    (templates / "ack.txt").write_text(
        "Subject: [{{ case.number }}] Received: {{ case.title }}\n\n"
        "Hello {{ customer.name }}, your case is {{ case.number }}.\n"
    )
    config: dict[str, Any] = {
        "queues": QUEUES,
        "calendars": CALENDARS,
        "rules_reload_interval": 0.2,
        **overrides,
    }
    return Daemon(tmp_path, database, config).start()


def _engine(database: Database) -> Any:
    return create_engine(database.url)


def _by_subject(daemon: Daemon) -> dict[str, dict[str, Any]]:
    return {c["title"]: c for c in daemon.cases()}


def _journal(daemon: Daemon, outcome: str | None = None) -> list[dict[str, Any]]:
    args = ["journal", "list", "--json", "--limit", "500"]
    if outcome:
        args += ["--outcome", outcome]
    return list(json.loads(daemon.cli(*args).stdout))


def test_each_operator_matches_and_misses(tmp_path: Path, database: Database) -> None:
    daemon = _rules_daemon(tmp_path, database, {"intake.yaml": OPERATORS})
    try:
        expected: dict[str, str | None] = {}
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
            for test, hit, miss in OPERATOR_CASES:
                for outcome, kwargs in (("hit", hit), ("miss", miss)):
                    if kwargs is None:
                        continue
                    title = f"{test} {outcome}"
                    kw = dict(kwargs)
                    kw["subject"] = f"{kw.get('subject', '')} [{title}]".strip()
                    msg = _mail(test, **kw)
                    rcpts = [a.strip() for a in msg["To"].split(",")]
                    client.send_message(msg, to_addrs=rcpts)
                    expected[kw["subject"]] = test if outcome == "hit" else None
        daemon.wait_settled()
        cases = _by_subject(daemon)
        got = {title: cases[title]["category"] for title in expected}
        assert got == expected
        hit = cases["URGENT: down [starts_with hit]"]
        assert hit["decided_by"].startswith("rule 'starts_with' (intake.yaml)")
        assert hit["rules_version"]
        missed = cases["Not urgent [starts_with miss]"]
        assert missed["decided_by"].startswith("rule 'Catch-all' (intake.yaml)")
    finally:
        assert daemon.stop() == 0


ACTIONS = """
kind: record_creation
name: Actions
defaults:
  create_contact: false
items:
  - name: Out of office
    when: {message.auto_reply: true}
    then: {ignore: true}
  - name: First of two that match
    when: {message.subject: {contains: order}}
    then:
      create_case:
        title: "Order: {{ message.subject | upper }}"
        priority: "{{ 'High' if 'urgent' in message.subject | lower else 'Low' }}"
        product: Webshop
        custom: {sender_domain: "{{ message.sender.split('@')[1] }}"}
      queue: Billing
      create_contact: true
      auto_response: ack
  - name: Second of two that match
    when: {message.subject: {contains: order}}
    then: {create_case: {category: never}}
  - name: Intro
    when: {message.header.x-test: intro}
    then: {create_case: true, create_contact: true}
  - name: Known customers only
    when: {message.header.x-test: known}
    then: {create_case: {category: known}}
  - name: Entitled only
    when: {message.header.x-test: entitled}
    then: {create_case: {category: entitled}, require_entitlement: true, create_contact: true}
  - name: Follow-ups only
    when: {message.header.x-test: followup}
    then: {existing_case_only: true}
  - name: Auto-answered
    when: {message.header.x-test: answer}
    then: {create_case: true, create_contact: true, auto_response: ack}
  - name: Window
    when: {message.header.x-test: window}
    then:
      create_case: true
      create_contact: true
      resolved_case_window: {hours: 48, reopen: true}
"""

ROUTING = """
kind: routing
items:
  - name: Entitled customers to gold
    when: {case.category: entitled}
    then: {queue: Gold Support}
"""


class Sink:
    """A real SMTP relay that records what it is given."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"


@contextmanager
def relay() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def test_actions_through_the_daemon(tmp_path: Path, database: Database) -> None:
    with relay() as (sink, relay_port):
        daemon = _rules_daemon(
            tmp_path,
            database,
            {"10-actions.yaml": ACTIONS, "20-routing.yaml": ROUTING},
            outbound_email={
                "enabled": True,
                "host": "127.0.0.1",
                "port": relay_port,
                "security": "none",
            },
            outbox={"poll_interval": 0.2, "backoff_base_seconds": 0.2},
        )
        try:
            _check_actions(daemon, database, sink)
        finally:
            assert daemon.stop() == 0


def _send(daemon: Daemon, msg: EmailMessage) -> None:
    mail.send(daemon.smtp_port, msg)


def _check_actions(daemon: Daemon, database: Database, sink: Sink) -> None:
    engine = _engine(database)
    # First match wins; expressions render; the queue is set directly; the
    # auto-response goes out through the relay, threaded on the customer's mail.
    order = _send_and_settle(
        daemon, _mail("none", subject="urgent order missing", sender="Olga <olga@shop.example>")
    )
    case = _by_subject(daemon)["Order: URGENT ORDER MISSING"]
    assert (case["priority"], case["product"], case["queue"]) == ("High", "Webshop", "Billing")
    assert case["custom"] == {"sender_domain": "shop.example"}
    assert case["category"] is None
    assert case["decided_by"] == "rule 'First of two that match' (10-actions.yaml)"
    wait_until(lambda: len(sink.messages) == 1)
    ack = sink.messages[0]
    assert ack.rcpt_tos == ["olga@shop.example"]
    body = (ack.original_content or b"").decode()
    assert f"Subject: [{case['number']}] Received: Order: URGENT ORDER MISSING" in body
    assert f"In-Reply-To: {order['Message-ID']}" in body
    assert "Auto-Submitted: auto-replied" in body

    # Ignore: an out-of-office is skipped, kept in the journal with the rule's name.
    ooo = _mail("answer", subject="Out of office", headers={"Auto-Submitted": "auto-replied"})
    _send_and_settle(daemon, ooo)
    [skipped] = [j for j in _journal(daemon, "skipped") if j["external_id"] == _id(ooo)]
    assert skipped["decided_by"] == "rule 'Out of office' (10-actions.yaml)"
    assert skipped["reason"] == "ignored by rule 'Out of office'"

    # Unknown senders are skipped unless the rule creates contacts.
    stranger = _mail("known", subject="From a stranger", sender="bob@nowhere.example")
    _send_and_settle(daemon, stranger)
    [row] = [j for j in _journal(daemon, "skipped") if j["external_id"] == _id(stranger)]
    assert row["reason"] == "unknown sender, and the rule does not create contacts"
    assert row["decided_by"] == "rule 'Known customers only' (10-actions.yaml)"
    _send_and_settle(daemon, _mail("intro", subject="Hi, I am Carl", sender="carl@known.example"))
    _send_and_settle(daemon, _mail("known", subject="Carl again", sender="carl@known.example"))
    assert _by_subject(daemon)["Carl again"]["category"] == "known"

    # Require an entitlement: none yet, so skipped; with an active one, created
    # and routed by the routing rule set.
    _send_and_settle(
        daemon, _mail("entitled", subject="Carl needs help", sender="carl@known.example")
    )
    assert "Carl needs help" not in _by_subject(daemon)
    reasons = [j["reason"] for j in _journal(daemon, "skipped")]
    assert "no valid entitlement for this customer on email" in reasons
    with DbSession(engine) as session, session.begin():
        carl = session.execute(
            select(Contact).where(Contact.email == "carl@known.example")
        ).scalar_one()
        now = datetime.now(UTC)
        session.add(
            Entitlement(
                name="Carl's support plan",
                contact_id=carl.id,
                start_date=date.today() - timedelta(days=1),
                end_date=date.today() + timedelta(days=30),
                state="Active",
                total_terms=5,
                remaining_terms=5,
                created_at=now,
                updated_at=now,
            )
        )
    _send_and_settle(
        daemon, _mail("entitled", subject="Carl, entitled", sender="carl@known.example")
    )
    entitled = _by_subject(daemon)["Carl, entitled"]
    assert (entitled["category"], entitled["queue"]) == ("entitled", "Gold Support")
    assert entitled["decided_by"].endswith(
        "; routing: rule 'Entitled customers to gold' (20-routing.yaml)"
    )

    # Existing case only: a new thread is skipped, a reply lands on its case.
    new = _mail("followup", subject="New thread", sender="carl@known.example")
    _send_and_settle(daemon, new)
    assert "New thread" not in _by_subject(daemon)
    reply = _mail("followup", subject="Re: Carl again", sender="carl@known.example")
    carl_case = _by_subject(daemon)["Carl again"]
    first_id = daemon.case(carl_case["number"])["activities"][0]["external_id"]
    reply["In-Reply-To"] = f"<{first_id}>"
    _send_and_settle(daemon, reply)
    assert len(daemon.case(carl_case["number"])["activities"]) == 2

    # Never auto-answer auto-replies, bounces or no-reply senders.
    for msg in (
        _mail("answer", subject="Newsletter", headers={"Precedence": "bulk"}),
        _mail("answer", subject="Alert", sender="no-reply@vendor.example"),
    ):
        _send_and_settle(daemon, msg)
    _send_and_settle(daemon, _mail("answer", subject="A person", sender="dora@people.example"))
    wait_until(lambda: len(sink.messages) == 2)
    time.sleep(0.5)  # the outbox polls every 0.2 s: nothing else may follow
    assert [m.rcpt_tos for m in sink.messages] == [["olga@shop.example"], ["dora@people.example"]]
    with DbSession(engine) as session:
        rows = session.execute(select(OutboxMessage.recipient, OutboxMessage.state)).all()
    assert sorted(rows) == [("dora@people.example", "sent"), ("olga@shop.example", "sent")]

    # The resolved-case window: inside it a reply reopens the case, after it
    # a new case is opened and linked to the old one.
    _window(daemon, engine, hours_ago=47)
    _window(daemon, engine, hours_ago=49)


def _window(daemon: Daemon, engine: Any, hours_ago: int) -> None:
    subject = f"Window {hours_ago}"
    first = _mail("window", subject=subject, sender="eve@people.example")
    _send_and_settle(daemon, first)
    number = _by_subject(daemon)[subject]["number"]
    with DbSession(engine) as session, session.begin():
        session.execute(
            update(Case)
            .where(Case.number == number)
            .values(
                state="Resolved",
                status_reason="Problem Solved",
                resolved_at=datetime.now(UTC) - timedelta(hours=hours_ago),
            )
        )
    reply = _mail("window", subject=f"Re: {subject}", sender="eve@people.example")
    reply["In-Reply-To"] = first["Message-ID"]
    _send_and_settle(daemon, reply)
    old = daemon.case(number)
    if hours_ago < 48:
        assert (old["state"], old["status_reason"]) == ("Active", "In Progress")
        assert len(old["activities"]) == 2
    else:
        assert old["state"] == "Resolved"
        assert len(old["activities"]) == 1
        [follow] = [c for c in daemon.cases() if c["title"] == subject and c["number"] != number]
        assert daemon.case(follow["number"])["previous_case"] == number


def _id(msg: EmailMessage) -> str:
    return str(msg["Message-ID"]).strip("<>")


def _send_and_settle(daemon: Daemon, msg: EmailMessage) -> EmailMessage:
    _send(daemon, msg)
    wait_until(lambda: _processed(daemon, _id(msg)), timeout=15)
    return msg


def _processed(daemon: Daemon, external_id: str) -> bool:
    return any(
        j["external_id"] == external_id and j["outcome"] not in ("pending", "failed")
        for j in _journal(daemon)
    )


VERSIONED_RECORD = """
kind: record_creation
items:
  - name: Everything ({version})
    then:
      create_contact: true
      create_case: {{custom: {{version: {version}}}}}
"""
VERSIONED_ROUTING = """
kind: routing
items:
  - name: Route ({version})
    when: {{case.custom.version: {version}}}
    then: {{queue: {queue}}}
"""
QUEUE_OF = {"v1": "Billing", "v2": "Gold Support"}


def _write_version(rules: Path, version: str) -> None:
    (rules / "10-record.yaml").write_text(VERSIONED_RECORD.format(version=version))
    (rules / "20-routing.yaml").write_text(
        VERSIONED_ROUTING.format(version=version, queue=QUEUE_OF[version])
    )


def test_hot_reload_under_incoming_mail(tmp_path: Path, database: Database) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    _write_version(rules, "v1")
    daemon = _rules_daemon(tmp_path, database, {})
    v1 = daemon.health()["rules"]["version"]
    sent: list[str] = []
    stop = threading.Event()

    def flood() -> None:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
            while not stop.is_set():
                msg = mail.message(subject=f"Mail {len(sent)}")
                client.send_message(msg)
                sent.append(msg["Subject"])
                time.sleep(0.02)

    sender = threading.Thread(target=flood)
    sender.start()
    try:
        time.sleep(1.0)
        # Both files change together; neither may be used with the other's old half.
        _write_version(rules, "v2")
        wait_until(lambda: daemon.health()["rules"]["version"] != v1, timeout=10)
        v2 = daemon.health()["rules"]["version"]
        time.sleep(1.0)
        # A broken edit: reported, and v2 stays in force while mail keeps coming.
        (rules / "10-record.yaml").write_text(
            VERSIONED_RECORD.format(version="v3").replace("create_case", "create_kase")
        )
        wait_until(lambda: daemon.health()["rules"]["ok"] is False, timeout=10)
        time.sleep(1.0)
    finally:
        stop.set()
        sender.join()
    try:
        daemon.wait_settled()
        health = daemon.health()
        assert health["rules"]["version"] == v2
        # Advisory: the daemon works on, so a health check must not restart it.
        assert (health["status"], health["warnings"]) == ("ok", ["rules"])
        assert "create_kase: unknown field" in health["rules"]["error"]
        assert "10-record.yaml:7: rule 'Everything (v3)'" in health["rules"]["error"]
        metrics = daemon.http_get("/metrics")[1].decode()
        assert f'ingestd_rules_info{{version="{v2}"}} 1.0' in metrics
        assert "ingestd_rules_last_reload_ok 0.0" in metrics

        cases = daemon.cases_all()
        assert sorted(c["title"] for c in cases) == sorted(sent)  # nothing lost or doubled
        versions = {c["custom"]["version"]: 0 for c in cases}
        for c in cases:
            version = c["custom"]["version"]
            assert c["queue"] == QUEUE_OF[version], c  # never a half-loaded set
            versions[version] += 1
        assert set(versions) == {"v1", "v2"}
        by_version = {c["rules_version"] for c in cases}
        assert by_version == {v1, v2}
        # The fix is picked up again.
        _write_version(rules, "v1")
        wait_until(lambda: daemon.health()["rules"]["ok"] is True, timeout=10)
        assert daemon.health()["rules"]["version"] == v1
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_invalid_rules_at_start_fall_back_and_lose_nothing(
    tmp_path: Path, database: Database
) -> None:
    daemon = Daemon(tmp_path, database, {"queues": QUEUES, "rules_reload_interval": 0.2})
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "bad.yaml").write_text("kind: record_creation\nitems: [{name: x}]\n")
    daemon.start(wait_healthy=False)
    try:
        wait_until(lambda: daemon.health().get("smtp", {}).get("ok") is True)
        rules = daemon.health()["rules"]
        assert (rules["version"], rules["ok"]) == ("fallback", False)
        assert "then: required field is missing" in rules["error"]
        mail.send(daemon.smtp_port, mail.message(subject="Still taken"))
        wait_until(lambda: [c["title"] for c in daemon.cases()] == ["Still taken"])
        assert daemon.cases()[0]["queue"] == "General Support"
    finally:
        assert daemon.stop() == 0
