"""The case-management data model, after Dynamics 365 Customer Service."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ingest.store.types import JSONType, UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, but SQLite only aliases rowid for a column declared INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class CaseState(enum.StrEnum):
    ACTIVE = "Active"
    RESOLVED = "Resolved"
    CANCELLED = "Cancelled"


class StatusReason(enum.StrEnum):
    IN_PROGRESS = "In Progress"
    ON_HOLD = "On Hold"
    WAITING_FOR_DETAILS = "Waiting for Details"
    RESEARCHING = "Researching"
    PROBLEM_SOLVED = "Problem Solved"
    INFORMATION_PROVIDED = "Information Provided"
    CANCELLED = "Cancelled"
    MERGED = "Merged"


STATUS_REASONS_BY_STATE: dict[CaseState, tuple[StatusReason, ...]] = {
    CaseState.ACTIVE: (
        StatusReason.IN_PROGRESS,
        StatusReason.ON_HOLD,
        StatusReason.WAITING_FOR_DETAILS,
        StatusReason.RESEARCHING,
    ),
    CaseState.RESOLVED: (StatusReason.PROBLEM_SOLVED, StatusReason.INFORMATION_PROVIDED),
    CaseState.CANCELLED: (StatusReason.CANCELLED, StatusReason.MERGED),
}


class Priority(enum.StrEnum):
    HIGH = "High"
    NORMAL = "Normal"
    LOW = "Low"


class ActivityType(enum.StrEnum):
    EMAIL = "email"
    CHAT = "chat"
    SMS = "sms"
    SOCIAL = "social"
    PHONE = "phone"
    TASK = "task"
    RESOLUTION = "resolution"
    SURVEY = "survey"


class Direction(enum.StrEnum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"


class ActivityState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Outcome(enum.StrEnum):
    """What became of a journaled message."""

    PENDING = "pending"
    CREATED = "created"
    APPENDED = "appended"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    FAILED = "failed"  # will be retried
    DEAD = "dead"  # a dead letter: retries exhausted, kept with its error
    DROPPED = "dropped"  # a dead letter an operator retired; its raw bytes are kept


class OutboxState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"  # not sent: the address hard-bounced after the row was queued


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email_domain: Mapped[str | None] = mapped_column(String(255), index=True)
    tier: Mapped[str | None] = mapped_column(String(50))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    contacts: Mapped[list[Contact]] = relationship(back_populates="account")


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    tier: Mapped[str | None] = mapped_column(String(50))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    account: Mapped[Account | None] = relationship(back_populates="contacts")
    identities: Mapped[list[ContactIdentity]] = relationship(back_populates="contact")


class ContactIdentity(Base):
    """How a contact is reached on one channel: an email address, an E.164 phone, a user id."""

    __tablename__ = "contact_identities"
    __table_args__ = (UniqueConstraint("kind", "address"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # email | phone | telegram | x
    address: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(200))
    # The public handle on that channel (a Telegram or X username), kept current.
    handle: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    contact: Mapped[Contact] = relationship(back_populates="identities")


class Queue(Base):
    __tablename__ = "queues"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    owner_email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (Index(None, "contact_id", "state"), Index(None, "state", "created_at"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(400))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    origin: Mapped[str] = mapped_column(String(20))
    priority: Mapped[str] = mapped_column(String(20), default=Priority.NORMAL.value)
    state: Mapped[str] = mapped_column(String(20), default=CaseState.ACTIVE.value)
    status_reason: Mapped[str] = mapped_column(String(40), default=StatusReason.IN_PROGRESS.value)
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queues.id"), index=True)
    owner: Mapped[str | None] = mapped_column(String(200))
    product: Mapped[str | None] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(200))
    custom: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    decided_by: Mapped[str | None] = mapped_column(String(300))
    rules_version: Mapped[str | None] = mapped_column(String(40))
    entitlement_id: Mapped[int | None] = mapped_column(ForeignKey("entitlements.id"), index=True)
    previous_case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # SLA and entitlement bookkeeping (see ingest/lifecycle.py):
    sla_policy: Mapped[str | None] = mapped_column(String(200))  # chosen when the case opened
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # an agent's reply
    entitlement_charged: Mapped[bool] = mapped_column(default=False, server_default=false())

    account: Mapped[Account | None] = relationship()
    contact: Mapped[Contact | None] = relationship()
    queue: Mapped[Queue | None] = relationship()
    activities: Mapped[list[Activity]] = relationship(
        back_populates="case", order_by="Activity.id", foreign_keys="Activity.case_id"
    )


class Activity(Base):
    __tablename__ = "activities"
    __table_args__ = (Index(None, "channel", "external_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    type: Mapped[str] = mapped_column(String(20))
    direction: Mapped[str] = mapped_column(String(10))
    channel: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(10), default=ActivityState.OPEN.value)
    sender: Mapped[str | None] = mapped_column(String(320))
    recipients: Mapped[list[str]] = mapped_column(JSONType, default=list)
    subject: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)  # everything the sender wrote
    html: Mapped[str | None] = mapped_column(Text)
    # `text` without quoted history and signature: what to show an agent.
    new_text: Mapped[str | None] = mapped_column(Text)
    signature: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(998))
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    references: Mapped[list[str]] = mapped_column(JSONType, default=list)
    journal_id: Mapped[int | None] = mapped_column(ForeignKey("journal.id"), index=True)
    # How to answer this message on its channel: {"recipient": ..., "headers": {...}},
    # the outbox row a reply needs (chat id and bot, phone numbers, X post or DM).
    reply_route: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    case: Mapped[Case | None] = relationship(back_populates="activities", foreign_keys=[case_id])
    attachments: Mapped[list[Attachment]] = relationship(back_populates="activity")


class Blob(Base):
    """Attachment bytes, addressed by their SHA-256 so identical files are stored once."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    activity_id: Mapped[int] = mapped_column(ForeignKey("activities.id"), index=True)
    filename: Mapped[str | None] = mapped_column(String(500))
    content_type: Mapped[str] = mapped_column(String(200))
    # Both None for a file kept only by its URL at the provider (MMS media, X media).
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    content_id: Mapped[str | None] = mapped_column(String(998))
    inline: Mapped[bool] = mapped_column(default=False)
    url: Mapped[str | None] = mapped_column(String(2000))

    activity: Mapped[Activity] = relationship(back_populates="attachments")


class QueueItem(Base):
    __tablename__ = "queue_items"
    __table_args__ = (Index(None, "queue_id", "removed_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    worked_by: Mapped[str | None] = mapped_column(String(200))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    queue: Mapped[Queue] = relationship()


class JournalEntry(Base):
    """The durable inbox: a message's raw bytes, stored before the sender hears "accepted"."""

    __tablename__ = "journal"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        Index(None, "outcome", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(String(998))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(20), default=Outcome.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    case_number: Mapped[str | None] = mapped_column(String(32))
    decided_by: Mapped[str | None] = mapped_column(String(300))
    rules_version: Mapped[str | None] = mapped_column(String(40))
    # Why a message was skipped (unknown sender, no entitlement, ignored by a rule).
    reason: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0)
    last_duplicate_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How often an operator put this dead letter back (`ingestd dead-letters retry`).
    requeues: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class OutboxMessage(Base):
    """A message to send, written in the same transaction as the change that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index(None, "state", "next_attempt_at"),
        Index(None, "recipient", "created_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))  # auto_response | reply | sla_warning | ...
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    activity_id: Mapped[int | None] = mapped_column(ForeignKey("activities.id"))
    dedupe_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    state: Mapped[str] = mapped_column(String(20), default=OutboxState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Automatic mail (auto-responses, SLA, surveys) counts against the rate limits
    # and is held back for suppressed addresses; an agent's reply is not.
    automatic: Mapped[bool] = mapped_column(default=False, server_default=false())


class EntitlementState(enum.StrEnum):
    """Stored states are Draft, Active and Cancelled; Waiting and Expired follow from dates."""

    DRAFT = "Draft"
    WAITING = "Waiting"
    ACTIVE = "Active"
    EXPIRED = "Expired"
    CANCELLED = "Cancelled"


class Entitlement(Base):
    """What a customer is owed: a number of cases (terms) and the SLA that applies."""

    __tablename__ = "entitlements"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(20), default=EntitlementState.DRAFT.value)
    total_terms: Mapped[int | None] = mapped_column(Integer)  # None: unlimited
    remaining_terms: Mapped[int | None] = mapped_column(Integer)
    decrement_on: Mapped[str] = mapped_column(String(20), default="creation")
    restrict: Mapped[bool] = mapped_column(default=True)
    sla: Mapped[str | None] = mapped_column(String(200))
    is_default: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    channels: Mapped[list[EntitlementChannel]] = relationship(
        back_populates="entitlement", cascade="all, delete-orphan"
    )
    contacts: Mapped[list[EntitlementContact]] = relationship(cascade="all, delete-orphan")


class EntitlementChannel(Base):
    """Terms counted for one channel only, when an entitlement splits them."""

    __tablename__ = "entitlement_channels"
    __table_args__ = (UniqueConstraint("entitlement_id", "channel"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    entitlement_id: Mapped[int] = mapped_column(ForeignKey("entitlements.id"))
    channel: Mapped[str] = mapped_column(String(20))
    total_terms: Mapped[int | None] = mapped_column(Integer)
    remaining_terms: Mapped[int | None] = mapped_column(Integer)

    entitlement: Mapped[Entitlement] = relationship(back_populates="channels")


class EntitlementContact(Base):
    """Narrows an account's entitlement to the contacts listed."""

    __tablename__ = "entitlement_contacts"
    __table_args__ = (UniqueConstraint("entitlement_id", "contact_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    entitlement_id: Mapped[int] = mapped_column(ForeignKey("entitlements.id"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)


class Sequence(Base):
    """Named counters (case numbers), incremented inside the caller's transaction."""

    __tablename__ = "sequences"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    next_value: Mapped[int] = mapped_column(BigInteger)


class ChannelCursor(Base):
    """How far a polled source has been read: an IMAP UID, a Telegram offset, an X since_id.

    Written only after the messages up to it are journaled, so a crash in
    between re-reads a few messages (the journal's unique key drops them)
    rather than skipping any.
    """

    __tablename__ = "channel_cursors"

    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lease(Base):
    """A named, expiring claim: one daemon at a time polls a mailbox, a bot or an account."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SlaKpiStatus(enum.StrEnum):
    """Dynamics 365's SLA KPI instance statuses."""

    IN_PROGRESS = "In Progress"
    NEARING = "Nearing Noncompliance"
    NONCOMPLIANT = "Noncompliant"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    CANCELED = "Canceled"


# A KPI in these statuses can still change; the others are history.
SLA_RUNNING = (SlaKpiStatus.IN_PROGRESS.value, SlaKpiStatus.NEARING.value)
SLA_OPEN = (*SLA_RUNNING, SlaKpiStatus.PAUSED.value)


class SlaKpiInstance(Base):
    """One KPI promise (first response, resolution) on one case, with stored deadlines.

    `warn_at` and `fail_at` are the deadlines in UTC; `due_at` is the next of
    them the sweep must act on (NULL when paused or finished), so finding what
    is due is one range scan of its index, whatever the number of open cases.
    """

    __tablename__ = "sla_kpi_instances"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    policy: Mapped[str] = mapped_column(String(200))
    item: Mapped[str] = mapped_column(String(120))
    kpi: Mapped[str] = mapped_column(String(20))  # first_response | resolution
    success_on: Mapped[str] = mapped_column(String(20))  # first_reply | resolved
    calendar: Mapped[str | None] = mapped_column(String(200))  # None: 24x7
    warn_minutes: Mapped[float | None] = mapped_column(Float)
    fail_minutes: Mapped[float] = mapped_column(Float)
    applicable_from: Mapped[datetime] = mapped_column(UTCDateTime)
    paused_minutes: Mapped[float] = mapped_column(Float, default=0.0)  # business time on hold
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    warn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fail_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    status: Mapped[str] = mapped_column(String(30), index=True)
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # warning mail written
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # became Noncompliant
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # Succeeded or Canceled
    end_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    case: Mapped[Case] = relationship()


class Setting(Base):
    """Values the daemons on one database must share, such as the generated signing secret."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Bounce(Base):
    """One failed (or delayed) recipient reported by a delivery status notification."""

    __tablename__ = "bounces"
    __table_args__ = (Index(None, "address", "received_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    address: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(20))  # failed | delayed (RFC 3464)
    status: Mapped[str | None] = mapped_column(String(20))  # e.g. 5.1.1
    diagnostic: Mapped[str | None] = mapped_column(Text)
    hard: Mapped[bool] = mapped_column(default=False)
    original_message_id: Mapped[str | None] = mapped_column(String(998))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    journal_id: Mapped[int | None] = mapped_column(ForeignKey("journal.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Suppression(Base):
    """An address no automatic mail goes to until `until`: it hard-bounced."""

    __tablename__ = "suppressions"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    bounce_id: Mapped[int | None] = mapped_column(ForeignKey("bounces.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
