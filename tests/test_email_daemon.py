"""Email in depth through the real daemon: real SMTP in, a real aiosmtpd relay out.

A conversation (acknowledgement as text+HTML, a reply by token with quoted
history, a stranger quoting a case number, a forward), a bounce of our own
mail, two auto-responders answering each other, and the dead-letter CLI.
"""

from __future__ import annotations

import json
import smtplib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import create_engine, func, select

from ingest.store.models import OutboxMessage, Suppression
from tests import mail
from tests.support import REPO, Daemon, Database, free_port, wait_until

CORPUS = Path(__file__).parent / "corpus"
QUEUES = [{"name": q} for q in ("General Support", "Gold Support", "Billing")]


class Relay:
    """The relay ingestd sends through; optionally an auto-responder that answers every
    mail it receives by sending a new one back into ingestd's SMTP port."""

    def __init__(self, respond: str | None = None) -> None:
        self.respond = respond  # None | "polite" | "rude"
        self.received: list[EmailMessage] = []
        self.replies_sent = 0
        self.daemon_port = 0
        self.lock = threading.Lock()
        self.busy = 0

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        msg = message_from_bytes(envelope.original_content or b"", policy=policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.received.append(msg)
            if self.respond:
                self.busy += 1
                threading.Thread(target=self._answer, args=(msg,), daemon=True).start()
        return "250 2.0.0 Ok: queued"

    def _answer(self, ours: EmailMessage) -> None:
        try:
            with self.lock:
                self.replies_sent += 1
                n = self.replies_sent
            reply = EmailMessage()
            reply["From"] = "Robot <robot@responder.example>"
            reply["Message-ID"] = f"<auto-{n}-{uuid.uuid4().hex}@responder.example>"
            if self.respond == "polite":
                # RFC 3834: marked, threaded, to the Reply-To, from the null sender.
                reply["To"] = str(ours["Reply-To"])
                reply["Subject"] = f"Automatic reply: {ours['Subject']}"
                reply["Auto-Submitted"] = "auto-replied"
                reply["In-Reply-To"] = str(ours["Message-ID"]).strip()
                envelope_from, rcpt = "", str(ours["Reply-To"])
            else:
                # A ticket system that honours nothing: a new subject, no threading
                # headers, no markers, to our From address.
                reply["To"] = mail.SUPPORT
                reply["Subject"] = f"Ticket #{1000 + n} received"
                envelope_from, rcpt = "robot@responder.example", mail.SUPPORT
            reply.set_content("Thank you, we have received your message.")
            with smtplib.SMTP("127.0.0.1", self.daemon_port, timeout=30) as client:
                client.send_message(reply, from_addr=envelope_from, to_addrs=[rcpt])
        finally:
            with self.lock:
                self.busy -= 1


@contextmanager
def relay(respond: str | None = None) -> Iterator[tuple[Relay, int]]:
    handler = Relay(respond)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, int(controller.port)
    finally:
        controller.stop()


@contextmanager
def running(
    tmp_path: Path,
    database: Database,
    relay_port: int | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> Iterator[Daemon]:
    config: dict[str, Any] = {
        "queues": QUEUES,
        "rules_dir": str(REPO / "rules"),
        "templates_dir": str(REPO / "templates"),
        "outbox": {"poll_interval": 0.2, "backoff_base_seconds": 0.2},
        **overrides,
    }
    if relay_port:
        config["outbound_email"] = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": relay_port,
            "security": "none",
        }
    daemon = Daemon(tmp_path, database, config, env=env).start()
    try:
        yield daemon
    finally:
        assert daemon.stop() == 0, daemon.log()


def journal(daemon: Daemon) -> list[dict[str, Any]]:
    return list(json.loads(daemon.cli("journal", "list", "--json", "--limit", "1000").stdout))


def row_for(daemon: Daemon, msg: EmailMessage) -> dict[str, Any]:
    key = str(msg["Message-ID"]).strip("<>")
    return next(j for j in journal(daemon) if j["external_id"] == key)


def send(daemon: Daemon, msg: EmailMessage, rcpt: str = mail.SUPPORT, mail_from: str = "") -> None:
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
        client.send_message(msg, from_addr=mail_from or str(msg["From"]), to_addrs=[rcpt])


def outbox_rows(database: Database) -> int:
    engine = create_engine(database.url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(OutboxMessage)).scalar_one())
    finally:
        engine.dispose()


def acknowledged(
    daemon: Daemon, sink: Relay, subject: str, name: str
) -> tuple[EmailMessage, str, EmailMessage]:
    """A first mail from NAME, its case number, and the acknowledgement the relay got."""
    first = mail.message(
        subject=subject, sender=f"{name} <{name.split()[0].lower()}@customer.example>"
    )
    send(daemon, first)
    wait_until(lambda: len(sink.received) == 1, timeout=20)
    return first, str(row_for(daemon, first)["case"]), sink.received[0]


# -- a conversation ---------------------------------------------------------------------


def test_a_conversation_threads_by_token_and_headers_and_nothing_else(
    tmp_path: Path, database: Database
) -> None:
    with relay() as (sink, port), running(tmp_path, database, port) as daemon:
        first, number, ack = acknowledged(daemon, sink, "Printer shows E-42", "Ana Lima")
        # The acknowledgement: text and HTML from the templates, threaded, marked, tokenised.
        assert ack.get_content_type() == "multipart/alternative"
        text_part, html_part = ack.iter_parts()
        assert number in text_part.get_content()
        assert f"<strong>{number}</strong>" in html_part.get_content()
        # (a long Message-ID may be folded onto its own line: legal, and stripped here)
        assert str(ack["Message-ID"]).strip().startswith(f"<{number}.")
        assert str(ack["In-Reply-To"]).strip() == str(first["Message-ID"])
        assert (ack["Auto-Submitted"], ack["X-Loop"]) == ("auto-replied", "ingestd")
        reply_to = str(ack["Reply-To"])
        assert reply_to.startswith("support+")

        # A reply to the token address: new words in the subject, no threading
        # headers, the history quoted below a signature.
        reply = mail.message(
            subject="the thing from yesterday",
            sender="Ana Lima <ana@customer.example>",
            to=reply_to,
            body="Still broken after the update.\n\n-- \nAna\n\n"
            f"On Wed, Mar 4, 2026 at 3:00 PM Example Support <support@example.com> wrote:\n"
            f"> {text_part.get_content().splitlines()[0]}\n",
        )
        send(daemon, reply, rcpt=reply_to)
        # A stranger quoting the number, and Ana forwarding the acknowledgement.
        stranger = mail.message(
            subject=f"Re: [{number}] me too", sender="Eve <eve@elsewhere.example>"
        )
        send(daemon, stranger)
        forward = mail.message(
            subject=f"Fwd: [{number}] We have your message",
            sender="Ana Lima <ana@customer.example>",
            body="For our other printer.\n\n---------- Forwarded message ----------\nHello",
        )
        send(daemon, forward)
        # A reply by In-Reply-To to our Message-ID, with an unrelated subject.
        thanks = mail.message(
            subject="Thanks",
            sender="ana@customer.example",
            in_reply_to=str(ack["Message-ID"]).strip(),
        )
        send(daemon, thanks)
        daemon.wait_settled()

        rows = {j["external_id"]: j for j in journal(daemon)}
        assert (rows[_key(reply)]["case"], rows[_key(reply)]["decided_by"]) == (
            number,
            "thread:token",
        )
        assert rows[_key(thanks)]["decided_by"] == "thread:in-reply-to"
        assert rows[_key(thanks)]["case"] == number
        for other in (stranger, forward):
            assert rows[_key(other)]["outcome"] == "created"
            assert rows[_key(other)]["case"] != number
        case = daemon.case(number)
        activities = case["activities"]
        assert [a["direction"] for a in activities] == [
            "incoming", "outgoing", "incoming", "incoming"
        ]  # fmt: skip
        shown = activities[2]
        assert shown["new_text"] == "Still broken after the update."
        assert shown["signature"] == "Ana"
        assert "wrote:\n> " in shown["text"]
        wait_until(lambda: len(sink.received) == 3, timeout=20)  # Ana's, Eve's, the forward's


def _key(msg: EmailMessage) -> str:
    return str(msg["Message-ID"]).strip("<>")


# -- a bounce of our own mail -----------------------------------------------------------


def test_a_bounce_lands_on_its_case_suppresses_and_is_never_answered(
    tmp_path: Path, database: Database
) -> None:
    with relay() as (sink, port), running(tmp_path, database, port) as daemon:
        _first, number, ack = acknowledged(daemon, sink, "Invoice question", "Bob")
        ack_id = str(ack["Message-ID"]).strip()
        raw = (CORPUS / "dsn_hard_bounce_postfix.eml").read_bytes()
        raw = raw.replace(b"<CAS-01000-AAAAAA.original@example.com>", ack_id.encode())
        raw = raw.replace(b"gone@customer.example", b"bob@customer.example")
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
            client.sendmail("", [mail.SUPPORT], raw)  # MAIL FROM:<>, as bounces come
        daemon.wait_settled()
        bounce = next(
            j for j in journal(daemon) if j["external_id"] == "dsn-hard@mx.customer.example"
        )
        assert (bounce["outcome"], bounce["case"]) == ("appended", number)
        assert bounce["decided_by"] == "bounce: hard bounce 5.1.1 for bob@customer.example"
        assert (
            daemon.case(number)["activities"][-1]["subject"]
            == "Undelivered Mail Returned to Sender"
        )
        engine = create_engine(database.url)
        with engine.connect() as conn:
            suppressed = conn.execute(
                select(Suppression.reason).where(Suppression.address == "bob@customer.example")
            ).scalar_one()
        engine.dispose()
        assert suppressed.startswith("hard bounce 5.1.1: 550 5.1.1 <bob@customer.example>")
        # Bob writes again: a new case, and no acknowledgement to the dead address.
        again = mail.message(subject="Another question", sender="Bob <bob@customer.example>")
        send(daemon, again)
        daemon.wait_settled()
        assert row_for(daemon, again)["outcome"] == "created"
        assert outbox_rows(database) == 1  # only the first acknowledgement, ever
        withheld = [e for e in daemon.events() if e.get("event") == "auto-response withheld"]
        assert [e["reason"].split(" until ")[0] for e in withheld] == [
            "bob@customer.example is suppressed"
        ]
        assert len(sink.received) == 1


# -- two auto-responders ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("respond", "acks", "answers"),
    [
        # Honours RFC 3834 and threads: our first acknowledgement is the last mail.
        ("polite", 1, 1),
        # Honours nothing and opens a new ticket each time: the per-address rate
        # limit (3 an hour here) stops us; its fourth mail gets no answer.
        ("rude", 3, 3),
    ],
)
def test_two_auto_responders_answering_each_other_stop(
    tmp_path: Path, database: Database, respond: str, acks: int, answers: int
) -> None:
    limits = {"max_per_address": 3, "max_per_case": 3, "window_minutes": 60}
    with (
        relay(respond) as (robot, port),
        running(tmp_path, database, port, automatic_mail=limits) as daemon,
    ):
        robot.daemon_port = daemon.smtp_port
        start = mail.message(subject="Hello", sender="Robot <robot@responder.example>")
        send(daemon, start)
        wait_until(lambda: robot.replies_sent == answers and robot.busy == 0, timeout=30)

        def quiet() -> bool:
            # Nothing left anywhere: journal processed, outbox empty, robot idle.
            return daemon.settled() and robot.busy == 0 and _pending(database) == 0

        wait_until(quiet, timeout=30)
        inbound = [j for j in journal(daemon)]
        assert len(robot.received) == acks
        assert robot.replies_sent == answers
        assert len(inbound) == 1 + answers  # the first mail and each auto-answer
        if respond == "polite":
            [echo] = [j for j in inbound if j["external_id"].startswith("auto-")]
            assert echo["outcome"] == "skipped"  # threaded to the case, and ignored
        else:
            reasons = [
                e["reason"] for e in daemon.events() if e.get("event") == "auto-response withheld"
            ]
            assert reasons == [
                "rate limit: 3 automatic mails to robot@responder.example in the last 60 minutes"
            ]


def _pending(database: Database) -> int:
    engine = create_engine(database.url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.state == "pending")
                ).scalar_one()
            )
    finally:
        engine.dispose()


# -- the dead-letter CLI ------------------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_dead_letter_cli_round_trip(tmp_path: Path, database: Database) -> None:
    # SQLite only: the CLI is a thin layer over ingest/deadletters.py, whose queries
    # run on both stores in tests/test_email_threading.py; each CLI call is a process.
    # The first two parses fail, as a parser bug would: dead letters at once.
    with running(tmp_path, database, env={"INGESTD_FAULTS": "pipeline.parse:2"}) as daemon:
        raws = []
        for subject in ("Poison one", "Poison two"):
            msg = mail.message(subject=subject)
            raw = msg.as_bytes(policy=policy.SMTP)
            raws.append((msg, raw))
            with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
                client.sendmail("ann@customer.example", [mail.SUPPORT], raw)
        daemon.wait_settled()
        listed = json.loads(daemon.cli("dead-letters", "list", "--json").stdout)
        assert [d["headers"]["Subject"] for d in listed] == ["Poison two", "Poison one"]
        assert all(d["attempts"] == 1 for d in listed)
        assert "injected fault 'pipeline.parse'" in listed[0]["error"]
        two, one = listed[0]["id"], listed[1]["id"]

        out = tmp_path / "one.eml"
        shown = daemon.cli("dead-letters", "show", str(one), "--raw", str(out)).stdout
        assert "cannot parse: ingest.failpoints.InjectedFault: injected fault" in shown
        assert "Subject     Poison one" in shown
        assert out.read_bytes() == raws[0][1]

        assert daemon.cli("dead-letters", "retry", str(one)).stdout == (
            f"1 put back for processing: {one}\n"
        )
        daemon.wait_settled()
        assert row_for(daemon, raws[0][0])["outcome"] == "created"

        dropped = daemon.cli("dead-letters", "drop", str(two), "--reason", "test message")
        assert "its raw bytes are kept" in dropped.stdout
        assert json.loads(daemon.cli("dead-letters", "list", "--json").stdout) == []
        [kept] = json.loads(daemon.cli("dead-letters", "list", "--dropped", "--json").stdout)
        assert (kept["id"], kept["outcome"], kept["size"]) == (two, "dropped", len(raws[1][1]))

        missing = daemon.cli("dead-letters", "retry", "999999", check=False)
        assert missing.returncode == 3
        assert "not dead letters: 999999" in missing.stderr
        assert daemon.cli("dead-letters", "retry", check=False).returncode == 2
