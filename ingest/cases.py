"""Applying a decision: cases, activities, attachments and queue items."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ingest import casenumber, quoting
from ingest.config import QueueConfig
from ingest.message import InboundMessage
from ingest.store.models import (
    Activity,
    ActivityState,
    ActivityType,
    Attachment,
    Blob,
    Case,
    Contact,
    Direction,
    Priority,
    Queue,
    QueueItem,
)

ACTIVITY_TYPE_BY_CHANNEL = {
    "email": ActivityType.EMAIL,
    "telegram": ActivityType.CHAT,
    "sms": ActivityType.SMS,
    "twitter": ActivityType.SOCIAL,
}
_REPLY_PREFIX = re.compile(
    r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE
)
TITLE_MAX = 400


def title_for(msg: InboundMessage) -> str:
    subject = _REPLY_PREFIX.sub("", msg.subject or "").strip()
    if subject:
        return subject[:TITLE_MAX]
    first_line = next((line.strip() for line in msg.text.splitlines() if line.strip()), "")
    return (first_line[:80] or "(no subject)")[:TITLE_MAX]


def open_case(
    session: Session,
    msg: InboundMessage,
    contact: Contact | None,
    now: datetime,
    *,
    title: str | None = None,
    priority: str = Priority.NORMAL.value,
    previous: Case | None = None,
    decided_by: str | None = None,
) -> Case:
    case = Case(
        number=casenumber.next_number(session),
        title=title or title_for(msg),
        contact=contact,
        account_id=contact.account_id if contact else None,
        origin=msg.channel,
        priority=priority,
        custom={},
        previous_case_id=previous.id if previous else None,
        decided_by=decided_by,
        created_at=now,
        updated_at=now,
    )
    session.add(case)
    session.flush()
    return case


def record_inbound(
    session: Session, case: Case | None, msg: InboundMessage, journal_id: int | None, now: datetime
) -> Activity:
    # Only mail quotes its history; other channels' text is all new.
    parts = quoting.split(msg.text) if msg.identity_kind == "email" else None
    activity = Activity(
        case=case,
        type=ACTIVITY_TYPE_BY_CHANNEL.get(msg.channel, ActivityType.TASK).value,
        direction=Direction.INCOMING.value,
        channel=msg.channel,
        state=ActivityState.OPEN.value,
        sender=msg.sender,
        recipients=msg.recipients,
        subject=msg.subject,
        text=msg.text,
        html=msg.html,
        new_text=parts.new if parts else msg.text,
        signature=(parts.signature or None) if parts else None,
        external_id=msg.message_id or msg.external_id,
        in_reply_to=msg.in_reply_to,
        references=msg.references,
        journal_id=journal_id,
        created_at=now,
    )
    if msg.reply_route is not None:  # left unset otherwise: SQL NULL, not JSON null
        activity.reply_route = msg.reply_route.as_dict()
    session.add(activity)
    for item in msg.attachments:
        by_url = item.url is not None and not item.data
        digest = None if by_url else store_blob(session, item.data, now)
        activity.attachments.append(
            Attachment(
                filename=item.filename,
                content_type=item.content_type,
                size=None if by_url else len(item.data),
                sha256=digest,
                content_id=item.content_id,
                inline=item.inline,
                url=item.url,
            )
        )
    if case is not None:
        case.updated_at = now
    session.flush()
    return activity


def store_blob(session: Session, data: bytes, now: datetime) -> str:
    digest = hashlib.sha256(data).hexdigest()
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(
        dialect.insert(Blob)
        .values(sha256=digest, size=len(data), data=data, created_at=now)
        .on_conflict_do_nothing(index_elements=["sha256"])
    )
    return digest


def enqueue(session: Session, case: Case, queue: Queue, now: datetime) -> QueueItem:
    """Put a case in a queue, taking it out of the one it was in."""
    for item in session.execute(
        select(QueueItem).where(QueueItem.case_id == case.id, QueueItem.removed_at.is_(None))
    ).scalars():
        item.removed_at = now
    case.queue = queue
    item = QueueItem(queue=queue, case_id=case.id, entered_at=now)
    session.add(item)
    return item


def sync_queues(session: Session, configured: Iterable[QueueConfig], now: datetime) -> None:
    """Make the queues table hold every queue named in config (queues are never deleted)."""
    existing = {q.name: q for q in session.execute(select(Queue)).scalars()}
    for conf in configured:
        queue = existing.get(conf.name)
        if queue is None:
            session.add(
                Queue(
                    name=conf.name,
                    description=conf.description,
                    owner_email=conf.owner_email,
                    created_at=now,
                )
            )
        else:
            queue.description = conf.description
            queue.owner_email = conf.owner_email
