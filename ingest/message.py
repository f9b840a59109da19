"""What every channel turns its bytes into before the pipeline decides anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class InboundAttachment:
    filename: str | None
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False
    url: str | None = None  # kept at the provider, by URL only (MMS, X media): `data` is empty


@dataclass(frozen=True)
class ReplyRoute:
    """Where an answer to a message goes on its channel: an outbox row's recipient and headers."""

    recipient: str
    headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"recipient": self.recipient, "headers": dict(self.headers)}


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient of a delivery status notification (RFC 3464 per-recipient fields)."""

    address: str
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str | None = None  # e.g. "5.1.1"
    diagnostic: str | None = None


@dataclass(frozen=True)
class DeliveryReport:
    """What a bounce says: which of our messages failed, for whom, and why."""

    recipients: list[RecipientStatus]
    original_message_id: str | None = None
    reporting_mta: str | None = None


@dataclass
class InboundMessage:
    """A customer's message, channel-neutral. `identity` is how the sender is known."""

    channel: str
    external_id: str
    identity_kind: str  # email | phone | telegram | x
    sender: str  # the identity address: a lower-cased email, an E.164 number, a user id
    sender_name: str | None = None
    recipients: list[str] = field(default_factory=list)
    subject: str = ""
    text: str = ""
    html: str | None = None
    attachments: list[InboundAttachment] = field(default_factory=list)
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    sent_at: datetime | None = None
    language: str | None = None  # as the sender's client declared it, e.g. "de" or "en-gb"
    defects: list[str] = field(default_factory=list)
    sender_handle: str | None = None  # a public username on the channel (Telegram, X)
    # Channel-specific facts that rules read, by field name: "telegram.chat_type", "sms.to"...
    fields: dict[str, Any] = field(default_factory=dict)
    # A customer command rather than a message (Telegram's /start and /end): "start", "end".
    command: str | None = None
    reply_route: ReplyRoute | None = None  # None: answer the sender's address on the channel
    report: DeliveryReport | None = None  # set when the message is a bounce (DSN)

    @property
    def thread_ids(self) -> list[str]:
        """Message ids this one answers, nearest first."""
        ids = [self.in_reply_to] if self.in_reply_to else []
        ids += [r for r in reversed(self.references) if r not in ids]
        return ids
