"""Building and sending test mail with real SMTP clients."""

from __future__ import annotations

import smtplib
import uuid
from email import policy
from email.message import EmailMessage

SUPPORT = "support@example.com"


def message(
    subject: str = "Printer on floor 3 is jammed",
    body: str = "It shows error E42 since this morning.",
    sender: str = "Ann Customer <ann@customer.example>",
    to: str = SUPPORT,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@customer.example>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    msg.set_content(body)
    return msg


def send(
    port: int, msg: EmailMessage, rcpt: list[str] | None = None
) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return client.send_message(msg, to_addrs=rcpt)


def data_reply(port: int, msg: EmailMessage) -> tuple[int, bytes]:
    """The server's answer to the end of DATA, whatever it is."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail("ann@customer.example")
        client.rcpt(SUPPORT)
        return client.data(msg.as_bytes(policy=policy.SMTP))
