"""Threading: which case, if any, an inbound message continues.

In this order, and the first that finds a case decides:
1. the signed token of our Reply-To address (`support+<token>@domain`) among
   the recipients: nothing but our own mail can produce one;
2. In-Reply-To, then References (newest first), against the Message-IDs of
   stored activities, incoming and outgoing (our automatic mail is recorded
   as outgoing activities), then against our own signed Message-ID format;
3. a case number in the subject, only when the sender already takes part in
   that case, and never for a forward (Fw:, Fwd:, WG:, TR:, RV:, I: ...): a
   forward is a new case unless a header above said otherwise.
A new subject from the same sender is a new case.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ingest import casenumber, outmail
from ingest.message import InboundMessage
from ingest.signing import Signer
from ingest.store.models import Activity, ActivityType, Case, CaseState, Contact, Direction

_MAX_LOOKUP_IDS = 50
_MAX_MERGE_HOPS = 20
_MAX_TOKEN_ADDRESSES = 20
# Forward prefixes: English, German (WG), French (TR), Spanish (RV), Portuguese (ENC),
# Italian (I, Inoltro), Dutch (Doorst), Swedish (VB), Finnish (VL). Not VS: Finnish
# replies use it, and Norwegian forwards still only thread for participants.
_FORWARD = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?(?:(?:re|aw|sv|antw)\s*(?:\[\d+\])?\s*:\s*)*"
    r"(?:fwd?|wg|tr|rv|enc|i|inoltro|doorst|vb|vl)\s*(?:\[\d+\])?\s*:",
    re.IGNORECASE,
)
# Where a plus-address can hide besides To/Cc (mail fetched from a mailbox has no envelope).
_DELIVERY_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to")


def is_forward(subject: str) -> bool:
    return _FORWARD.match(subject or "") is not None


@dataclass(frozen=True)
class Thread:
    """The case a message belongs to, how it was found, and the case it follows on from."""

    case: Case | None
    matched_by: str | None = None  # token | in-reply-to | references | subject | conversation
    previous: Case | None = None  # a closed case the message answered


def find_thread(
    session: Session,
    msg: InboundMessage,
    contact: Contact | None,
    signer: Signer | None = None,
    now: datetime | None = None,
    *,
    windows: Mapping[str, timedelta] | None = None,
) -> Thread:
    """`windows` (per channel) turn on conversations: see `_by_conversation`."""
    case, how = None, None
    if signer is not None and now is not None:
        case, how = _by_token(session, msg, signer, now)
    if case is None:
        case, how = _by_message_ids(session, msg, signer, now)
    if case is None and not is_forward(msg.subject):
        case, how = _by_subject_number(session, msg, contact)
    window = (windows or {}).get(msg.channel)
    if case is None and window is not None and contact is not None and now is not None:
        case, how = _by_conversation(session, msg.channel, contact, now - window)
    if case is None:
        return Thread(None)
    case = follow_merges(session, case)
    if case.state == CaseState.ACTIVE.value:
        return Thread(case, how)
    # A reply to a resolved or cancelled case opens a new one that links back.
    return Thread(None, how, previous=case)


def _by_token(
    session: Session, msg: InboundMessage, signer: Signer, now: datetime
) -> tuple[Case | None, str | None]:
    addresses = [*msg.recipients, *(msg.headers.get(h, "") for h in _DELIVERY_HEADERS)]
    for address in addresses[:_MAX_TOKEN_ADDRESSES]:
        if "+" not in address:
            continue
        case_id = outmail.case_id_from_address(address, signer, now)
        if case_id is not None:
            case = session.get(Case, case_id)
            if case is not None:
                return case, "token"
    return None, None


def _by_message_ids(
    session: Session, msg: InboundMessage, signer: Signer | None, now: datetime | None
) -> tuple[Case | None, str | None]:
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
    if signer is not None and now is not None:
        # Ours, though no activity has it (an older copy of the store, say).
        for ref in ids:
            case_id = outmail.case_id_from_message_id(ref, signer, now)
            case = session.get(Case, case_id) if case_id is not None else None
            if case is not None:
                return case, "in-reply-to" if ref == msg.in_reply_to else "references"
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


def follow_merges(session: Session, case: Case) -> Case:
    hops = 0
    while case.merged_into_id is not None and hops < _MAX_MERGE_HOPS:
        target = session.get(Case, case.merged_into_id)
        if target is None:
            break
        case, hops = target, hops + 1
    return case
