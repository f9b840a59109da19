"""Outbound email: an outbox row becomes a MIME message, sent to the configured relay.

Channel code only: which message to send, to whom and why is the business of
whoever wrote the outbox row. This module builds the message (Message-ID, Date,
From, To, Subject, threading headers, the row's own headers, text and HTML),
talks SMTP with aiosmtplib, and sorts failures into temporary and permanent.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import aiosmtplib

from channels.htmltext import html_to_text
from ingest.clock import Clock, SystemClock
from ingest.config import OutboundEmailConfig
from ingest.outbox import OutboundMessage, PermanentFailure, Sent, TemporaryFailure

CHANNEL = "email"

# Headers this module writes itself; a row that tries to set one is refused, so
# that a bug upstream never silently sends something else (or to someone else).
RESERVED_HEADERS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "return-path",
        "received",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
    }
)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 field name: printable ASCII but ':'


def message_id_for(message: OutboundMessage, domain: str) -> str:
    """The same Message-ID on every attempt, so a resent copy is recognisably the same mail."""
    stamp = message.created_at.strftime("%Y%m%d%H%M%S%f")
    case = f"{message.case_number}." if message.case_number else ""
    return f"<{case}{message.id}.{stamp}@{domain}>"


class EmailSender:
    """The `email` channel's sender for the outbox."""

    channel = CHANNEL

    def __init__(self, config: OutboundEmailConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        # Built once, so a missing or bad CA file stops the daemon at start.
        self.tls_context: ssl.SSLContext | None = None
        if config.security != "none":
            self.tls_context = ssl.create_default_context(
                cafile=str(config.ca_file) if config.ca_file else None
            )

    def build(self, message: OutboundMessage) -> tuple[EmailMessage, str]:
        """The MIME message and its envelope recipient; PermanentFailure if it cannot be built."""
        try:
            return self._build(message)
        except PermanentFailure:
            raise
        except (ValueError, TypeError, IndexError) as exc:
            raise PermanentFailure(f"cannot build the message: {exc}") from exc

    def _build(self, message: OutboundMessage) -> tuple[EmailMessage, str]:
        name, addr = parseaddr(message.recipient)
        if "@" not in addr:
            raise PermanentFailure(f"invalid recipient {message.recipient!r}")
        headers = _row_headers(message.headers)
        cfg = self.config
        msg = EmailMessage()
        own_id = headers.pop("message-id", None)
        msg["Message-ID"] = own_id[1] if own_id else message_id_for(message, cfg.id_domain)
        msg["Date"] = format_datetime(self.clock.now())
        msg["From"] = Address(display_name=cfg.from_name or "", addr_spec=cfg.from_address)
        msg["To"] = Address(display_name=name, addr_spec=addr)
        if message.subject is not None:
            msg["Subject"] = message.subject
        in_reply_to = headers.pop("in-reply-to", ("", ""))[1].strip()
        references = headers.pop("references", ("", ""))[1].strip()
        if in_reply_to:
            msg["In-Reply-To"] = in_reply_to
            # RFC 5322 3.6.4: References ends with the parent, whatever else it holds.
            if not references or in_reply_to not in references.split():
                references = f"{references} {in_reply_to}" if references else in_reply_to
        if references:
            msg["References"] = references
        for original, value in headers.values():
            msg[original] = value
        text = message.body_text
        if text is None and message.body_html is not None:
            text = html_to_text(message.body_html)
        msg.set_content(text or "")
        if message.body_html is not None:
            msg.add_alternative(message.body_html, subtype="html")
        return msg, addr

    async def send(self, message: OutboundMessage) -> Sent:
        msg, recipient = self.build(message)
        cfg = self.config
        password = cfg.password.get_secret_value() if cfg.password else None
        try:
            errors, response = await aiosmtplib.send(
                msg,
                sender=cfg.envelope_from or cfg.from_address,
                recipients=[recipient],
                hostname=cfg.host,
                port=cfg.relay_port,
                username=cfg.username,
                password=password,
                local_hostname=cfg.local_hostname,
                timeout=cfg.timeout,
                use_tls=cfg.security == "tls",
                # False, not None: None would upgrade whenever the relay offers it.
                start_tls=cfg.security == "starttls",
                tls_context=self.tls_context,
            )
        except Exception as exc:
            raise classify(exc) from exc
        if errors:
            raise _refused(
                [(r.code, r.message) for r in errors.values()], "recipient refused"
            ) from None
        return Sent(response=response, message_id=str(msg["Message-ID"]))


def _row_headers(stored: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The row's own headers keyed by lower-case name (original name, value)."""
    out: dict[str, tuple[str, str]] = {}
    for name, value in stored.items():
        key = name.strip().lower()
        if not _HEADER_NAME.match(name):
            raise PermanentFailure(f"invalid header name {name!r}")
        if key in RESERVED_HEADERS:
            raise PermanentFailure(f"header {name!r} is set by the email channel, not the row")
        if not isinstance(value, str):
            raise PermanentFailure(f"header {name!r} must be a string")
        if "\r" in value or "\n" in value:
            raise PermanentFailure(f"header {name!r} contains a line break")
        if key in out:
            raise PermanentFailure(f"header {name!r} given twice")
        out[key] = (name, value)
    return out


def classify(exc: BaseException) -> TemporaryFailure | PermanentFailure:
    """Sort an aiosmtplib (or socket) error: 5xx on the message is permanent, the rest not.

    Relay-level replies (greeting, EHLO, AUTH) are temporary even when 5xx: a wrong
    password or a relay that refuses us is an operator's problem, and the mail
    should wait for the fix rather than be thrown away.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return _refused([(r.code, r.message) for r in exc.recipients], "recipient refused")
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return TemporaryFailure(f"relay authentication failed: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError | aiosmtplib.SMTPHeloError):
        return TemporaryFailure(f"relay refused the session: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        stage = {
            aiosmtplib.SMTPSenderRefused: "sender refused",
            aiosmtplib.SMTPRecipientRefused: "recipient refused",
            aiosmtplib.SMTPDataError: "message refused",
        }.get(type(exc), "relay error")
        return _refused([(exc.code, exc.message)], stage)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return TemporaryFailure(f"relay does not support what the config asks: {exc}")
    if isinstance(exc, ssl.SSLError):
        return TemporaryFailure(f"TLS with the relay failed: {exc}")
    if isinstance(exc, TimeoutError):
        return TemporaryFailure(f"relay timed out: {exc or type(exc).__name__}")
    if isinstance(exc, OSError | aiosmtplib.SMTPException):
        return TemporaryFailure(f"relay unreachable: {type(exc).__name__}: {exc}")
    return TemporaryFailure(f"{type(exc).__name__}: {exc}")


def _refused(replies: list[tuple[int, str]], stage: str) -> TemporaryFailure | PermanentFailure:
    text = "; ".join(f"{code} {message}" for code, message in replies)
    if any(500 <= code <= 599 for code, _ in replies):
        return PermanentFailure(f"{stage}: {text}")
    return TemporaryFailure(f"{stage}: {text}")
