"""The outbox and outbound email, against a real aiosmtpd relay on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import ValidationError
from sqlalchemy import func, select

from channels.email_out import EmailSender, classify
from ingest import outbox
from ingest.clock import ManualClock
from ingest.config import DatabaseConfig, OutboundEmailConfig, OutboxConfig
from ingest.outbox import (
    OutboundMessage,
    OutboxDelivery,
    PermanentFailure,
    Sent,
    TemporaryFailure,
)
from ingest.store import Store
from ingest.store.models import Case, OutboxMessage
from tests.support import Database, free_port

START = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)
FAST = OutboxConfig(
    batch_size=10,
    max_attempts=4,
    backoff_base_seconds=60,
    backoff_max_seconds=3600,
    lease_seconds=300,
    send_timeout=10,
)


# -- a real SMTP relay ------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    tls: bool
    login: bytes | None

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


class SinkHandler:
    """Records what it accepts; answers RCPT and DATA as scripted."""

    def __init__(self, data_replies: Sequence[str] = (), rcpt_reply: str | None = None) -> None:
        self.data_replies = list(data_replies)
        self.rcpt_reply = rcpt_reply
        self.received: list[Received] = []
        self._lock = threading.Lock()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            login = (
                session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
            )
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content or b""),
                    tls=session.ssl is not None or _tls_transport(server),
                    login=login,
                )
            )
            return f"250 2.0.0 Ok: queued as {len(self.received)}"


def _tls_transport(server: SMTP) -> bool:
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


@contextmanager
def relay(handler: SinkHandler, port: int | None = None, **smtp: Any) -> Iterator[int]:
    controller = Controller(handler, hostname="127.0.0.1", port=port or free_port(), **smtp)
    controller.start()
    try:
        yield int(controller.port)
    finally:
        controller.stop()


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "2",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Cert(cert, key)


# -- the store and the deliverer -------------------------------------------------


def open_store(database: Database) -> Store:
    store = Store(DatabaseConfig(url=database.url, busy_timeout=2, connect_timeout=2))
    store.migrate()
    return store


@pytest.fixture
def store(database: Database) -> Iterator[Store]:
    s = open_store(database)
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def email_config(port: int, **overrides: Any) -> OutboundEmailConfig:
    values: dict[str, Any] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "timeout": 5,
        "from_address": "support@example.com",
        "from_name": "Contoso Support",
        "envelope_from": "bounces@example.com",
        "message_id_domain": "mail.example.com",
    }
    return OutboundEmailConfig.model_validate(values | overrides)


def deliverer(
    store: Store, clock: ManualClock, config: OutboundEmailConfig, settings: OutboxConfig = FAST
) -> OutboxDelivery:
    return OutboxDelivery(store, settings, clock, {"email": EmailSender(config, clock)})


def add(store: Store, clock: ManualClock, **fields: Any) -> int:
    values: dict[str, Any] = {
        "kind": "auto_response",
        "channel": "email",
        "recipient": "Ana Lima <ana@customer.example>",
        "subject": "We received your request",
        "body_text": "Thank you, we are on it.",
    }
    with store.write() as session:
        new_id = outbox.enqueue(session, **(values | fields), now=clock.now())
    assert new_id is not None
    return new_id


def row(store: Store, row_id: int) -> OutboxMessage:
    with store.read() as session:
        found = session.get(OutboxMessage, row_id)
        assert found is not None
        return found


def run(delivery: OutboxDelivery) -> int:
    return asyncio.run(delivery.run_once())


def make_case(store: Store, clock: ManualClock, number: str = "CAS-01000-ABCDEF") -> int:
    with store.write() as session:
        case = Case(
            number=number,
            title="Printer shows error E-42",
            origin="email",
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        session.add(case)
        session.flush()
        return case.id


# -- tests ----------------------------------------------------------------------------


def test_delivers_a_threaded_multipart_message_once(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    case_id = make_case(store, clock)
    row_id = add(
        store,
        clock,
        subject="Re: Drucker zeigt Fehler E-42 — Ihre Anfrage",
        body_text="Grüße,\nIhr Support",
        body_html="<p>Grüße,<br>Ihr <b>Support</b></p>",
        headers={
            "In-Reply-To": "<first-42@customer.example>",
            "References": "<older@customer.example>",
            "Auto-Submitted": "auto-replied",
            "X-Loop": "ingestd@example.com",
            "Reply-To": "support+t0k3n@example.com",
        },
        case_id=case_id,
    )
    handler = SinkHandler()
    clock.advance(timedelta(seconds=5))
    caplog.set_level(logging.INFO, logger="ingest.outbox")
    with relay(handler) as port:
        delivery = deliverer(store, clock, email_config(port))
        assert run(delivery) == 1
        assert run(delivery) == 0  # sent rows are never claimed again

    [got] = handler.received
    assert got.mail_from == "bounces@example.com"
    assert got.rcpt_tos == ["ana@customer.example"]
    msg = got.message
    assert msg["From"] == "Contoso Support <support@example.com>"
    assert msg["To"] == "Ana Lima <ana@customer.example>"
    assert msg["Subject"] == "Re: Drucker zeigt Fehler E-42 — Ihre Anfrage"
    assert parsedate_to_datetime(msg["Date"]) == clock.now()
    assert msg["In-Reply-To"] == "<first-42@customer.example>"
    assert msg["References"] == "<older@customer.example> <first-42@customer.example>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Loop"] == "ingestd@example.com"
    assert msg["Reply-To"] == "support+t0k3n@example.com"
    message_id = msg["Message-ID"]
    assert message_id.startswith(f"<CAS-01000-ABCDEF.{row_id}.")
    assert message_id.endswith("@mail.example.com>")
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert isinstance(plain, EmailMessage)
    assert isinstance(html, EmailMessage)
    assert plain.get_content().splitlines() == ["Grüße,", "Ihr Support"]
    assert "<b>Support</b>" in html.get_content()

    sent = row(store, row_id)
    assert (sent.state, sent.attempts, sent.sent_at, sent.last_error) == (
        "sent",
        1,
        clock.now(),
        None,
    )
    assert sent.headers["Message-ID"] == message_id
    [event] = [r for r in caplog.records if r.getMessage() == "outbox message sent"]
    assert vars(event)["case"] == "CAS-01000-ABCDEF"
    assert vars(event)["channel"] == "email"
    assert vars(event)["message_id"] == message_id


def test_a_text_only_row_is_a_single_part_with_a_generated_message_id(
    store: Store, clock: ManualClock
) -> None:
    row_id = add(store, clock, subject=None, headers={"Message-ID": "<own@example.com>"})
    handler = SinkHandler()
    with relay(handler) as port:
        assert run(deliverer(store, clock, email_config(port))) == 1
    msg = handler.received[0].message
    assert msg.get_content_type() == "text/plain"
    assert msg["Subject"] is None
    assert msg["Message-ID"] == "<own@example.com>"
    assert msg["In-Reply-To"] is None
    assert msg["References"] is None
    assert row(store, row_id).state == "sent"


def test_a_duplicate_dedupe_key_is_a_no_op(store: Store, clock: ManualClock) -> None:
    first = add(store, clock, dedupe_key="auto_response:CAS-1")
    with store.write() as session:
        again = outbox.enqueue(
            session,
            kind="auto_response",
            channel="email",
            recipient="someone@else.example",
            subject="different",
            body_text="different",
            dedupe_key="auto_response:CAS-1",
            now=clock.now(),
        )
        # Same transaction, twice: still no error, still one row.
        twice = [
            outbox.enqueue(
                session,
                kind="sla_warning",
                channel="email",
                recipient="lead@example.com",
                subject="SLA",
                body_text="x",
                dedupe_key="sla_warning:CAS-1",
                now=clock.now(),
            )
            for _ in range(2)
        ]
    assert again is None
    assert twice[0] is not None
    assert twice[1] is None
    # Rows without a key never collide.
    add(store, clock)
    add(store, clock)
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 4
    assert row(store, first).recipient == "Ana Lima <ana@customer.example>"


def test_temporary_failure_retries_with_backoff_then_succeeds(
    store: Store, clock: ManualClock
) -> None:
    row_id = add(store, clock)
    handler = SinkHandler(data_replies=["451 4.3.0 Try again later", "421 4.4.2 Busy"])
    with relay(handler) as port:
        delivery = deliverer(store, clock, email_config(port))
        assert run(delivery) == 1
        deferred = row(store, row_id)
        assert (deferred.state, deferred.attempts) == ("pending", 1)
        assert "451 4.3.0 Try again later" in (deferred.last_error or "")
        assert deferred.next_attempt_at == START + timedelta(seconds=60)

        clock.advance(timedelta(seconds=59))
        assert run(delivery) == 0  # not due yet
        clock.advance(timedelta(seconds=1))
        assert run(delivery) == 1
        assert row(store, row_id).next_attempt_at == clock.now() + timedelta(seconds=120)

        clock.advance(timedelta(seconds=120))
        assert run(delivery) == 1
    sent = row(store, row_id)
    assert (sent.state, sent.attempts, sent.last_error) == ("sent", 3, None)
    assert len(handler.received) == 1


def test_permanent_failure_is_recorded_and_not_retried(store: Store, clock: ManualClock) -> None:
    refused = add(store, clock, recipient="nobody@customer.example")
    handler = SinkHandler(rcpt_reply="550 5.1.1 No such user here")
    with relay(handler) as port:
        delivery = deliverer(store, clock, email_config(port))
        assert run(delivery) == 1
        clock.advance(timedelta(days=1))
        assert run(delivery) == 0
    failed = row(store, refused)
    assert (failed.state, failed.attempts) == ("failed", 1)
    assert failed.last_error == "recipient refused: 550 5.1.1 No such user here"

    rejected = add(store, clock)
    handler = SinkHandler(data_replies=["554 5.7.1 Message rejected as spam"])
    with relay(handler) as port:
        assert run(deliverer(store, clock, email_config(port))) == 1
    assert row(store, rejected).state == "failed"
    assert row(store, rejected).last_error == "message refused: 554 5.7.1 Message rejected as spam"
    assert handler.received == []


def test_rows_that_cannot_be_built_fail_without_contacting_the_relay(
    store: Store, clock: ManualClock
) -> None:
    bad = {
        add(store, clock, headers={"Bcc": "spy@example.com"}): "set by the email channel",
        add(store, clock, headers={"X-Evil": "a\r\nBcc: spy@example.com"}): "line break",
        add(store, clock, recipient="not an address"): "invalid recipient",
    }
    handler = SinkHandler()
    with relay(handler) as port:
        assert run(deliverer(store, clock, email_config(port))) == 3
    assert handler.received == []
    for row_id, why in bad.items():
        failed = row(store, row_id)
        assert failed.state == "failed"
        assert why in (failed.last_error or "")


def test_relay_down_then_up(store: Store, clock: ManualClock) -> None:
    row_id = add(store, clock)
    port = free_port()
    delivery = deliverer(store, clock, email_config(port))
    assert run(delivery) == 1  # connection refused
    down = row(store, row_id)
    assert (down.state, down.attempts) == ("pending", 1)
    assert "relay unreachable" in (down.last_error or "")

    handler = SinkHandler()
    with relay(handler, port=port):
        clock.advance(timedelta(seconds=60))
        assert run(delivery) == 1
    assert row(store, row_id).state == "sent"
    assert len(handler.received) == 1


def test_gives_up_after_max_attempts(store: Store, clock: ManualClock) -> None:
    row_id = add(store, clock)
    handler = SinkHandler(data_replies=["452 4.3.1 Insufficient system storage"] * 10)
    with relay(handler) as port:
        delivery = deliverer(store, clock, email_config(port))
        for _ in range(FAST.max_attempts):
            assert run(delivery) == 1
            clock.advance(timedelta(hours=2))
        assert run(delivery) == 0
    failed = row(store, row_id)
    assert (failed.state, failed.attempts) == ("failed", FAST.max_attempts)
    assert failed.last_error == (
        f"gave up after {FAST.max_attempts} attempts: message refused: "
        "452 4.3.1 Insufficient system storage"
    )


def test_starttls_and_auth(store: Store, clock: ManualClock, cert: Cert) -> None:
    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"ingestd", b"s3c")
        return AuthResult(success=ok, handled=False, auth_data=data)

    handler = SinkHandler()
    good, wrong = add(store, clock), add(store, clock)
    with relay(
        handler,
        tls_context=cert.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    ) as port:
        tls = {"security": "starttls", "ca_file": str(cert.cert), "username": "ingestd"}
        with store.write() as session:  # the wrong password sees its row first
            session.get_one(OutboxMessage, good).next_attempt_at = START + timedelta(seconds=1)
        bad_password = deliverer(store, clock, email_config(port, **tls, password="nope"))
        assert run(bad_password) == 1
        clock.advance(timedelta(seconds=1))
        assert run(deliverer(store, clock, email_config(port, **tls, password="s3c"))) == 1

    assert row(store, good).state == "sent"
    [got] = handler.received
    assert got.tls is True
    assert got.login == b"ingestd"
    # A relay refusing our credentials is the operator's problem: the row waits.
    waiting = row(store, wrong)
    assert waiting.state == "pending"
    assert (waiting.last_error or "").startswith("relay authentication failed: 535")
    assert "nope" not in (waiting.last_error or "")


def test_implicit_tls_and_an_untrusted_certificate(
    store: Store, clock: ManualClock, cert: Cert
) -> None:
    trusted, untrusted = add(store, clock), add(store, clock)
    handler = SinkHandler()
    with relay(handler, ssl_context=cert.server_context()) as port:
        with store.write() as session:
            session.get_one(OutboxMessage, trusted).next_attempt_at = START + timedelta(seconds=1)
        assert run(deliverer(store, clock, email_config(port, security="tls"))) == 1
        clock.advance(timedelta(seconds=1))
        config = email_config(port, security="tls", ca_file=str(cert.cert))
        assert run(deliverer(store, clock, config)) == 1
    assert row(store, trusted).state == "sent"
    refused = row(store, untrusted)
    assert refused.state == "pending"
    assert "CERTIFICATE_VERIFY_FAILED" in (refused.last_error or "")
    assert [r.tls for r in handler.received] == [True]


def test_two_deliverers_never_send_one_row_twice(database: Database, clock: ManualClock) -> None:
    stores = [open_store(database), open_store(database)]
    try:
        ids = {add(stores[0], clock, subject=f"message {n}") for n in range(30)}
        handler = SinkHandler()
        with relay(handler) as port:
            settings = FAST.model_copy(update={"batch_size": 3})
            a, b = (deliverer(s, clock, email_config(port), settings) for s in stores)

            async def together() -> list[int]:
                return list(await asyncio.gather(a.run_once(), b.run_once()))

            handled: list[int] = []
            while sum(counts := asyncio.run(together())):
                handled.extend(counts)
        assert sum(handled) == len(ids)
        copies = Counter(r.message["Message-ID"] for r in handler.received)
        assert len(copies) == len(ids)
        assert set(copies.values()) == {1}
        with stores[0].read() as session:
            states = session.execute(select(OutboxMessage.state, OutboxMessage.attempts)).all()
        assert {tuple(s) for s in states} == {("sent", 1)}
    finally:
        for s in stores:
            s.dispose()


class Crash(BaseException):
    """The process dying: nothing in the outbox catches it."""


class CrashAfterRelayAccepted:
    def __init__(self, inner: EmailSender) -> None:
        self.inner = inner

    async def send(self, message: OutboundMessage) -> Sent:
        await self.inner.send(message)
        raise Crash


def test_crash_between_relay_250_and_commit_resends_the_same_message_after_the_lease(
    store: Store, clock: ManualClock
) -> None:
    row_id = add(store, clock)
    handler = SinkHandler()
    with relay(handler) as port:
        config = email_config(port)
        doomed = OutboxDelivery(
            store, FAST, clock, {"email": CrashAfterRelayAccepted(EmailSender(config, clock))}
        )
        with pytest.raises(Crash):
            run(doomed)
        restarted = deliverer(store, clock, config)
        clock.advance(timedelta(seconds=FAST.lease_seconds - 1))
        assert run(restarted) == 0  # still leased to the dead process
        clock.advance(timedelta(seconds=1))
        assert run(restarted) == 1

    # At least once: the relay got it twice, recognisably the same message.
    first, second = handler.received
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert (row(store, row_id).state, row(store, row_id).attempts) == ("sent", 2)


def test_a_deliverer_that_lost_its_lease_cannot_overwrite_the_result(
    store: Store, clock: ManualClock
) -> None:
    row_id = add(store, clock)
    handler = SinkHandler()
    with relay(handler) as port:
        slow = deliverer(store, clock, email_config(port))
        claims, _ = slow._claim()
        clock.advance(timedelta(seconds=FAST.lease_seconds))
        assert run(deliverer(store, clock, email_config(port))) == 1
        [report] = slow._record([(claims[0], outbox._Result("retry", "late"))])
    assert report["outcome"] == "lease_lost"
    sent = row(store, row_id)
    assert (sent.state, sent.last_error) == ("sent", None)


def test_rows_for_a_channel_without_a_sender_wait(store: Store, clock: ManualClock) -> None:
    row_id = add(store, clock, channel="telegram", recipient="12345")
    handler = SinkHandler()
    with relay(handler) as port:
        delivery = deliverer(store, clock, email_config(port))
        assert run(delivery) == 0
        assert delivery.backlog() == {"pending": 1, "failed": 0}
    assert row(store, row_id).attempts == 0


# -- no database ----------------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    config = OutboundEmailConfig(from_address="help@contoso.example")
    assert (config.enabled, config.security, config.relay_port) == (False, "starttls", 587)
    assert config.id_domain == "contoso.example"
    assert OutboundEmailConfig(security="tls").relay_port == 465
    assert OutboundEmailConfig(security="none").relay_port == 25
    secret = OutboundEmailConfig(username="u", password="hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret.model_dump())
    with pytest.raises(ValidationError, match="in clear"):
        OutboundEmailConfig(security="none", username="u", password="p")
    with pytest.raises(ValidationError, match="both username and password"):
        OutboundEmailConfig(username="u")
    with pytest.raises(ValidationError, match="not an email address"):
        OutboundEmailConfig(from_address="support")
    with pytest.raises(ValidationError, match="extra"):
        OutboundEmailConfig.model_validate({"hots": "x"})
    with pytest.raises(ValidationError, match="lease_seconds"):
        OutboxConfig(lease_seconds=60, send_timeout=60)


def test_classify_aiosmtplib_errors() -> None:
    refused = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "a@b.example")]
    )
    busy = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(450, "4.2.0 greylisted", "a@b.example")]
    )
    cases: list[tuple[BaseException, type[Exception]]] = [
        (refused, PermanentFailure),
        (busy, TemporaryFailure),
        (aiosmtplib.SMTPDataError(552, "5.3.4 too big"), PermanentFailure),
        (aiosmtplib.SMTPDataError(451, "4.3.0 later"), TemporaryFailure),
        (aiosmtplib.SMTPSenderRefused(553, "5.7.1 no", "x@y.example"), PermanentFailure),
        (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"), TemporaryFailure),
        (aiosmtplib.SMTPConnectResponseError(554, "no service"), TemporaryFailure),
        (aiosmtplib.SMTPConnectError("refused"), TemporaryFailure),
        (aiosmtplib.SMTPReadTimeoutError("slow"), TemporaryFailure),
        (aiosmtplib.SMTPServerDisconnected("gone"), TemporaryFailure),
        (aiosmtplib.SMTPNotSupported("STARTTLS"), TemporaryFailure),
        (ConnectionRefusedError(111, "refused"), TemporaryFailure),
    ]
    for exc, expected in cases:
        assert type(classify(exc)) is expected, exc


def test_an_html_only_row_gets_a_text_part_and_keeps_its_header_order() -> None:
    clock = ManualClock(START)
    message = OutboundMessage(
        id=7,
        kind="survey",
        channel="email",
        recipient="ana@customer.example",
        subject="How did we do?",
        body_text=None,
        body_html="<p>Rate us: <a href='https://example.com/s/1'>here</a></p>",
        headers={"x-loop": "ingestd@example.com", "Auto-Submitted": "auto-generated"},
        case_id=None,
        case_number=None,
        activity_id=None,
        dedupe_key=None,
        attempt=1,
        created_at=START,
    )
    msg, recipient = EmailSender(email_config(25), clock).build(message)
    assert recipient == "ana@customer.example"
    assert msg["Message-ID"] == "<7.20260304150000000000@mail.example.com>"
    assert [k for k in msg if k.lower() in ("x-loop", "auto-submitted")] == [
        "x-loop",
        "Auto-Submitted",
    ]
    plain = msg.get_body(("plain",))
    assert isinstance(plain, EmailMessage)
    assert "Rate us" in plain.get_content()
    with pytest.raises(PermanentFailure, match="given twice"):
        EmailSender(email_config(25), clock).build(
            dataclasses.replace(message, headers={"X-Loop": "a", "x-loop": "b"})
        )
