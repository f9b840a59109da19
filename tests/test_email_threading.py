"""Threading, loops, bounces, suppressions, rate limits and dead letters, in-process on both stores.

The store, journal and pipeline run with the starter rules and templates, so
every new case gets an acknowledgement through `ingest/outmail.py`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from channels.email_out import EmailSender
from ingest import deadletters, failpoints, mailpolicy, outmail, signing
from ingest import outbox as outbox_module
from ingest.config import OutboxConfig
from ingest.outbox import OutboxDelivery
from ingest.pipeline import load_signer
from ingest.store.models import (
    Activity,
    Bounce,
    Case,
    JournalEntry,
    OutboxMessage,
    Outcome,
    Suppression,
)
from ingest.templating import Rendered
from tests.harness import Harness, email
from tests.support import REPO, Database
from tests.test_outbox import SinkHandler, email_config, relay

CORPUS = Path(__file__).parent / "corpus"
ANA = "Ana Lima <ana@customer.example>"


def make(database: Database, **config: Any) -> Harness:
    return Harness(
        database.url,
        rules_dir=str(REPO / "rules"),
        templates_dir=str(REPO / "templates"),
        queues=[{"name": q} for q in ("General Support", "Gold Support", "Billing")],
        pipeline={"max_attempts": 3, "retry_base_seconds": 60},
        **config,
    )


@pytest.fixture
def h(database: Database) -> Iterator[Harness]:
    harness = make(database, automatic_mail={"max_per_address": 3, "max_per_case": 3})
    try:
        yield harness
    finally:
        harness.close()


def run(h: Harness, msg: EmailMessage | bytes) -> JournalEntry:
    receipt = h.deliver(msg)
    h.process()
    return h.row(receipt.journal_id)


def outbox(h: Harness) -> list[OutboxMessage]:
    with h.store.read() as session:
        return list(session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars())


def activities(h: Harness, number: str) -> list[Activity]:
    return h.case(number).activities


def new_case(h: Harness, subject: str = "Printer shows E-42", sender: str = ANA) -> str:
    row = run(h, email(subject=subject, sender=sender))
    assert row.outcome == Outcome.CREATED.value, row.last_error
    assert row.case_number is not None
    return row.case_number


def ack_of(h: Harness, number: str) -> OutboxMessage:
    [row] = [r for r in outbox(h) if r.dedupe_key == f"auto_response:{number}"]
    return row


# -- our outbound mail ------------------------------------------------------------------


def test_acknowledgement_is_an_outgoing_activity_with_threading_headers(h: Harness) -> None:
    original = email(subject="Printer shows E-42", sender=ANA)
    row = run(h, original)
    number = row.case_number
    assert number is not None
    ack = ack_of(h, number)
    headers = ack.headers
    message_id = headers["Message-ID"]
    assert re.fullmatch(rf"<{number}\.[a-z2-7]{{30,40}}@example\.com>", message_id)
    local, _, domain = headers["Reply-To"].partition("@")
    assert domain == "example.com"
    assert local.startswith("support+")
    assert len(local) <= 64
    assert headers["Auto-Submitted"] == "auto-replied"
    assert headers["X-Loop"] == "ingestd"
    assert headers["X-Auto-Response-Suppress"] == "All"
    assert headers["In-Reply-To"] == original["Message-ID"]
    assert ack.automatic
    assert ack.recipient == "ana@customer.example"
    incoming, outgoing = activities(h, number)
    assert (outgoing.direction, outgoing.state, outgoing.id) == (
        "outgoing",
        "closed",
        ack.activity_id,
    )
    assert outgoing.external_id == message_id.strip("<>")
    assert outgoing.in_reply_to == incoming.external_id
    assert outgoing.subject == ack.subject
    assert outgoing.text == ack.body_text
    assert ack.body_html is not None
    assert number in ack.body_html  # text and HTML templates


def test_a_reply_to_the_token_address_finds_its_case_whatever_the_subject(h: Harness) -> None:
    number = new_case(h)
    reply_to = ack_of(h, number).headers["Reply-To"]
    reply = email(subject="something else entirely", sender=ANA)
    del reply["To"]
    reply["To"] = reply_to
    row = run(h, reply)
    assert (row.outcome, row.case_number, row.decided_by) == ("appended", number, "thread:token")


def test_a_forged_or_foreign_token_threads_nothing(h: Harness) -> None:
    number = new_case(h)
    token = ack_of(h, number).headers["Reply-To"].partition("+")[2].partition("@")[0]
    forged = token[:-2] + ("aa" if not token.endswith("aa") else "bb")
    with h.store.read() as session:
        signer = signing.known_signer(None, session)
        case_id = h.case(number).id
    assert signer is not None
    wrong_purpose = signer.sign_id("survey", case_id)
    for tag in (forged, wrong_purpose, "notatoken"):
        msg = email(subject="Hello again", sender="ana@customer.example")
        del msg["To"]
        msg["To"] = f"support+{tag}@example.com"
        row = run(h, msg)
        assert row.outcome == "created", tag  # a new case, not a misfire onto another one


def test_a_reply_to_our_message_id_threads_even_without_the_activity(h: Harness) -> None:
    number = new_case(h)
    ack_id = ack_of(h, number).headers["Message-ID"]
    row = run(h, email(subject="Thanks", sender=ANA, In_Reply_To=ack_id))
    assert (row.outcome, row.case_number, row.decided_by) == (
        "appended",
        number,
        "thread:in-reply-to",
    )
    # An older store without the outgoing activity: the signed Message-ID still says the case.
    with h.store.write() as session:
        session.execute(update(OutboxMessage).values(activity_id=None))
        session.execute(
            delete(Activity)
            .where(Activity.external_id == ack_id.strip("<>"))
            .execution_options(synchronize_session=False)
        )
    row = run(h, email(subject="Thanks again", sender=ANA, References=f"<x@y.z> {ack_id}"))
    assert (row.outcome, row.case_number, row.decided_by) == (
        "appended",
        number,
        "thread:references",
    )


def test_subject_numbers_thread_only_participants_and_never_forwards(h: Harness) -> None:
    number = new_case(h)
    stranger = run(h, email(subject=f"Re: [{number}] me too", sender="eve@elsewhere.example"))
    assert stranger.outcome == "created"
    assert stranger.case_number != number
    participant = run(h, email(subject=f"Re: [{number}] still broken", sender=ANA))
    assert (participant.outcome, participant.case_number) == ("appended", number)
    forward = (CORPUS / "forward_inline_with_case_number.eml").read_bytes()
    forward = forward.replace(b"CAS-01000-AAAAAA", number.encode())
    row = run(h, forward)
    assert row.outcome == "created"
    assert row.case_number != number
    # ... unless a header says it belongs: a forward that answers our mail.
    ack_id = ack_of(h, number).headers["Message-ID"]
    row = run(h, email(subject=f"Fwd: [{number}] see below", sender=ANA, In_Reply_To=ack_id))
    assert (row.outcome, row.case_number) == ("appended", number)


def test_our_own_mail_coming_back_is_a_loop_and_is_dropped(h: Harness) -> None:
    number = new_case(h)
    ack = ack_of(h, number)
    echo = email(
        subject=ack.subject or "",
        sender="support@example.com",
        message_id=ack.headers["Message-ID"],
    )
    row = run(h, echo)
    assert (row.outcome, row.decided_by) == ("skipped", "guard: mail loop")
    assert row.reason is not None
    assert "is one of ours" in row.reason
    relayed = email(subject="Anything", sender="list@lists.example", X_Loop="ingestd")
    row = run(h, relayed)
    assert row.reason == "it carries our X-Loop header (ingestd)"
    assert len(outbox(h)) == 1


def test_quoted_history_and_signature_are_kept_apart(h: Harness) -> None:
    number = new_case(h)
    body = (
        "It still fails after the restart.\n\n-- \nAna Lima\nACME\n\n"
        "On Wed, Mar 4, 2026 at 3:00 PM Example Support <support@example.com> wrote:\n"
        "> Please restart the printer.\n"
    )
    run(h, email(subject=f"Re: [{number}] Printer", sender=ANA, body=body))
    reply = activities(h, number)[-1]
    assert reply.new_text == "It still fails after the restart."
    assert reply.signature == "Ana Lima\nACME"
    assert reply.text is not None
    assert "> Please restart the printer." in reply.text


# -- the signing secret ---------------------------------------------------------------


def test_the_secret_is_made_once_and_shared_by_every_daemon_on_the_store(
    database: Database,
) -> None:
    first, second = make(database), make(database)
    try:
        with first.store.write() as session:
            a = load_signer(first.config, session, first.clock.now())
        with second.store.write() as session:
            b = load_signer(second.config, session, second.clock.now())
        token = a.sign_id("reply-to", 42)
        assert b.verify_id("reply-to", token, now=first.clock.now()) == 42
    finally:
        first.close()
        second.close()
    configured = make(
        database, signing={"secret": "s" * 32, "previous_secrets": ["old-secret-0123456"]}
    )
    try:
        with configured.store.write() as session:
            c = load_signer(configured.config, session, configured.clock.now())
        with pytest.raises(signing.InvalidToken):
            c.verify_id("reply-to", token, now=configured.clock.now())
        rotated = signing.Signer(b"old-secret-0123456").sign_id("reply-to", 7)
        assert c.verify_id("reply-to", rotated, now=configured.clock.now()) == 7
    finally:
        configured.close()


# -- bounces and suppressions ---------------------------------------------------------


def dsn(original_id: str, recipient: str, status: str, action: str = "failed") -> bytes:
    """A Postfix-shaped DSN for one of our mails (tests/corpus/dsn_hard_bounce_postfix.eml)."""
    raw = (CORPUS / "dsn_hard_bounce_postfix.eml").read_bytes()
    raw = raw.replace(b"<CAS-01000-AAAAAA.original@example.com>", original_id.encode())
    raw = raw.replace(b"gone@customer.example", recipient.encode())
    raw = raw.replace(b"Status: 5.1.1", f"Status: {status}".encode())
    raw = raw.replace(b"Action: failed", f"Action: {action}".encode())
    unique = f"<dsn-{status}-{abs(hash(original_id))}@".encode()
    return raw.replace(b"<dsn-hard@", unique)


def test_a_hard_bounce_lands_on_the_case_and_suppresses_automatic_mail(h: Harness) -> None:
    number = new_case(h)
    ack_id = ack_of(h, number).headers["Message-ID"]
    row = run(h, dsn(ack_id, "ana@customer.example", "5.1.1"))
    assert (row.outcome, row.case_number) == ("appended", number)
    assert row.decided_by == "bounce: hard bounce 5.1.1 for ana@customer.example"
    assert activities(h, number)[-1].subject == "Undelivered Mail Returned to Sender"
    with h.store.read() as session:
        [bounce] = session.execute(select(Bounce)).scalars().all()
        suppression = session.get(Suppression, "ana@customer.example")
    assert (bounce.hard, bounce.status, bounce.original_message_id) == (
        True,
        "5.1.1",
        ack_id.strip("<>"),
    )
    assert suppression is not None
    assert suppression.until == h.clock.now() + timedelta(days=30)
    assert len(outbox(h)) == 1  # the bounce itself is never answered
    # A new case from the same address: no acknowledgement while suppressed ...
    second = new_case(h, subject="Another problem")
    assert [r.case_id for r in outbox(h)] == [h.case(number).id]
    assert h.case(second).activities[-1].direction == "incoming"
    # ... and again once the suppression has run out.
    h.advance(days=31)
    third = new_case(h, subject="Third problem")
    assert ack_of(h, third).recipient == "ana@customer.example"


def test_soft_bounces_are_recorded_and_suppress_nothing(h: Harness) -> None:
    number = new_case(h)
    ack_id = ack_of(h, number).headers["Message-ID"]
    for status, action in (("4.2.2", "delayed"), ("5.2.2", "failed"), ("5.7.1", "failed")):
        row = run(h, dsn(ack_id, "ana@customer.example", status, action))
        assert (row.outcome, row.case_number) == ("appended", number)
    with h.store.read() as session:
        bounces = session.execute(select(Bounce.status, Bounce.hard)).all()
        assert session.get(Suppression, "ana@customer.example") is None
    assert sorted(bounces) == [("4.2.2", False), ("5.2.2", False), ("5.7.1", False)]


def test_a_bounce_for_mail_that_is_not_ours_goes_to_the_rules(h: Harness) -> None:
    row = run(h, (CORPUS / "dsn_hard_bounce_postfix.eml").read_bytes())
    assert row.outcome == "skipped"
    assert row.decided_by == "rule 'Automatic replies and bounces' (10-record-creation.yaml)"
    assert h.count(Suppression) == 0


# -- rate limits ----------------------------------------------------------------------


def test_automatic_mail_per_address_is_rate_limited(h: Harness) -> None:
    numbers = [new_case(h, subject=f"Problem {i}") for i in range(5)]
    assert [r.case_id for r in outbox(h)] == [h.case(n).id for n in numbers[:3]]
    h.advance(minutes=61)
    later = new_case(h, subject="After an hour")
    assert ack_of(h, later)


def test_automatic_mail_per_case_is_rate_limited(h: Harness) -> None:
    number = new_case(h)
    rendered = Rendered("SLA warning", "The case is close to its deadline.", None)
    outcomes = []
    with h.store.write() as session:
        case = session.execute(select(Case).where(Case.number == number)).scalar_one()
        for i in range(3):
            outcomes.append(
                outmail.queue_automatic(
                    session,
                    kind="sla_warning",
                    case=case,
                    recipient=f"agent{i}@example.com",
                    rendered=rendered,
                    now=h.clock.now(),
                    settings=h.pipeline.env.mail,
                    signer=h.pipeline.env.signer,
                    dedupe_key=f"sla:{number}:{i}",
                )
            )
    assert [type(o).__name__ for o in outcomes] == ["Queued", "Queued", "Withheld"]
    withheld = outcomes[2]
    assert isinstance(withheld, outmail.Withheld)
    assert withheld.reason == "rate limit: 3 automatic mails about this case in the last 60 minutes"


# -- dead letters ---------------------------------------------------------------------


def test_a_parse_failure_is_a_dead_letter_at_once_and_can_be_retried(h: Harness) -> None:
    failpoints.arm_faults("pipeline.parse:1")
    try:
        bad = h.deliver(email(subject="first"))
        good = h.deliver(email(subject="second"))
        h.process()
    finally:
        failpoints.arm_faults("")
    row = h.row(bad.journal_id)
    assert (row.outcome, row.attempts) == ("dead", 1)  # not retried five times
    assert row.last_error is not None
    assert "injected fault 'pipeline.parse'" in row.last_error
    assert h.row(good.journal_id).outcome == "created"
    with h.store.write() as session:
        assert deadletters.retry(session, deadletters.Filter(error="INJECTED"), h.clock.now()) == [
            bad.journal_id
        ]
    h.process()
    row = h.row(bad.journal_id)
    assert (row.outcome, row.requeues, row.last_error) == ("created", 1, None)


def test_dropping_keeps_the_bytes_and_the_error(h: Harness) -> None:
    failpoints.arm_faults("pipeline.parse:2")
    try:
        first, second = h.deliver(email(subject="a")), h.deliver(email(subject="b"))
        h.process()
    finally:
        failpoints.arm_faults("")
    with h.store.write() as session:
        assert deadletters.drop(session, first.journal_id, "spam", h.clock.now())
        assert not deadletters.drop(session, first.journal_id, "again", h.clock.now())
    with h.store.read() as session:
        dead = deadletters.find(session, deadletters.Filter())
        dropped = deadletters.find(session, deadletters.Filter(dropped=True))
        view = deadletters.view(dropped[0], full=True)
    assert [r.id for r in dead] == [second.journal_id]
    assert [r.id for r in dropped] == [first.journal_id]
    assert view["reason"] == "dropped: spam"
    assert "injected fault" in view["error"]
    assert view["headers"]["Subject"] == "a"
    assert view["size"] > 0
    assert h.pipeline.backlog() == (0, 1)


def test_a_suppression_also_holds_back_mail_queued_before_it(h: Harness) -> None:
    number = new_case(h)  # its acknowledgement waits in the outbox
    with h.store.write() as session:
        session.add(
            Suppression(
                address="ana@customer.example",
                reason="hard bounce 5.1.1",
                created_at=h.clock.now(),
                until=h.clock.now() + timedelta(days=30),
            )
        )
        outbox_module.enqueue(
            session,
            kind="reply",  # an agent's reply is not automatic: it still goes
            channel="email",
            recipient="ana@customer.example",
            subject="About your printer",
            body_text="Please call us.",
            now=h.clock.now(),
        )
    sink = SinkHandler()
    with relay(sink) as port:
        delivery = OutboxDelivery(
            h.store,
            OutboxConfig(lease_seconds=60, send_timeout=10),
            h.clock,
            {"email": EmailSender(email_config(port), h.clock)},
            screen=mailpolicy.screen,
        )
        assert asyncio.run(delivery.run_once()) == 2
    ack, reply = outbox(h)
    assert (ack.case_id, ack.state) == (h.case(number).id, "suppressed")
    assert ack.last_error is not None
    assert ack.last_error.startswith("not sent: ana@customer.example is suppressed until ")
    assert reply.state == "sent"
    assert [r.message["Subject"] for r in sink.received] == ["About your printer"]
