"""Threading: which case, if any, an inbound message continues."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ingest import casenumber
from ingest.message import InboundMessage
from ingest.store.models import Activity, ActivityType, Case, CaseState, Contact, Direction

_MAX_LOOKUP_IDS = 50
_MAX_MERGE_HOPS = 20


@dataclass(frozen=True)
class Thread:
    """The case a message belongs to, how it was found, and the case it follows on from."""

    case: Case | None
    matched_by: str | None = None  # in-reply-to | references | subject | conversation
    previous: Case | None = None  # a closed case the message answered


def find_thread(
    session: Session,
    msg: InboundMessage,
    contact: Contact | None,
    *,
    windows: Mapping[str, timedelta] | None = None,
    now: datetime | None = None,
) -> Thread:
    """`windows` (per channel) turn on conversations: see `_by_conversation`."""
    case, how = _by_message_ids(session, msg)
    if case is None:
        case, how = _by_subject_number(session, msg, contact)
    window = (windows or {}).get(msg.channel)
    if case is None and window is not None and contact is not None and now is not None:
        case, how = _by_conversation(session, msg.channel, contact, now - window)
    if case is None:
        return Thread(None)
    case = _follow_merges(session, case)
    if case.state == CaseState.ACTIVE.value:
        return Thread(case, how)
    # A reply to a resolved or cancelled case opens a new one that links back.
    return Thread(None, how, previous=case)


def _by_message_ids(session: Session, msg: InboundMessage) -> tuple[Case | None, str | None]:
    ids = msg.thread_ids[:_MAX_LOOKUP_IDS]
    if not ids:
        return None, None
    rows = session.execute(
        select(Activity.external_id, Activity.case_id).where(
            Activity.channel == msg.channel,
            Activity.external_id.in_(ids),
            Activity.case_id.is_not(None),
        )
    ).all()
    by_id = {row.external_id: row.case_id for row in rows}
    for ref in ids:  # nearest first: In-Reply-To, then the newest reference
        if ref in by_id:
            how = "in-reply-to" if ref == msg.in_reply_to else "references"
            return session.get(Case, by_id[ref]), how
    return None, None


def _by_subject_number(
    session: Session, msg: InboundMessage, contact: Contact | None
) -> tuple[Case | None, str | None]:
    """A case number in the subject counts only from someone already on that case.

    A stranger quoting another customer's case number must not land on it.
    """
    for number in casenumber.find_in(msg.subject):
        case = session.execute(select(Case).where(Case.number == number)).scalar_one_or_none()
        if case is not None and _is_participant(session, case, msg, contact):
            return case, "subject"
    return None, None


def _is_participant(
    session: Session, case: Case, msg: InboundMessage, contact: Contact | None
) -> bool:
    if contact is not None and case.contact_id == contact.id:
        return True
    seen = session.execute(
        select(func.count())
        .select_from(Activity)
        .where(Activity.case_id == case.id, func.lower(Activity.sender) == msg.sender.lower())
    ).scalar_one()
    return seen > 0


def _by_conversation(
    session: Session, channel: str, contact: Contact, since: datetime
) -> tuple[Case | None, str | None]:
    """Chat channels have no reply headers: one conversation per contact and channel.

    The contact's case with the latest activity on this channel since `since`
    continues, an open one first; a closed one is returned so that the rules'
    resolved-case window can decide whether it reopens, unless the customer
    closed it themselves (`/end`): then the next message starts afresh.
    """
    latest = (
        select(Activity.case_id, Activity.type, Activity.direction)
        .join(Case, Case.id == Activity.case_id)
        .where(
            Case.contact_id == contact.id,
            Activity.channel == channel,
            Activity.created_at >= since,
        )
        .order_by(Activity.created_at.desc(), Activity.id.desc())
        .limit(1)
    )
    for query in (latest.where(Case.state == CaseState.ACTIVE.value), latest):
        row = session.execute(query).first()
        if row is None:
            continue
        ended = (
            row.type == ActivityType.RESOLUTION.value and row.direction == Direction.INCOMING.value
        )
        if ended:
            return None, None
        return session.get(Case, row.case_id), "conversation"
    return None, None


def _follow_merges(session: Session, case: Case) -> Case:
    hops = 0
    while case.merged_into_id is not None and hops < _MAX_MERGE_HOPS:
        target = session.get(Case, case.merged_into_id)
        if target is None:
            break
        case, hops = target, hops + 1
    return case
