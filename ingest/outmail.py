"""Automatic mail about a case: checked, marked, threaded, queued, and kept on the case.

Every automatic mail (the acknowledgement today; SLA warnings and surveys
later) goes through `queue_automatic`, which:

1. asks `mailpolicy.withheld` (suppressed address, rate limits) and queues
   nothing when the answer is a reason;
2. gives the mail a Message-ID that encodes the case
   (`<CAS-01000-K7Q2ZP.<signed token>@domain>`), a Reply-To plus-address with
   a signed token (`support+<token>@domain`), `Auto-Submitted`, `X-Loop` and
   `X-Auto-Response-Suppress: All` (Exchange then sends no out-of-office
   notice back), and In-Reply-To/References when it answers a message;
3. writes the outbox row and an outgoing email activity on the case, with
   the same Message-ID, as Dynamics records an auto-response: agents see what
   the customer was told, and a reply that quotes the Message-ID threads by it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from ingest import casenumber, mailpolicy, outbox, signing
from ingest.config import AutomaticMailConfig, OutboundEmailConfig
from ingest.message import InboundMessage
from ingest.signing import InvalidToken, Signer
from ingest.store.models import (
    Activity,
    ActivityState,
    ActivityType,
    Case,
    Direction,
    OutboxMessage,
)
from ingest.templating import Rendered

X_LOOP = "ingestd"
REPLY_PURPOSE = "reply-to"
MESSAGE_ID_PURPOSE = "message-id"


@dataclass(frozen=True)
class MailSettings:
    """What automatic mail needs from the configuration."""

    outbound: OutboundEmailConfig = field(default_factory=OutboundEmailConfig)
    limits: AutomaticMailConfig = field(default_factory=AutomaticMailConfig)


@dataclass(frozen=True)
class Queued:
    outbox_id: int
    activity_id: int
    message_id: str


@dataclass(frozen=True)
class Withheld:
    reason: str


def queue_automatic(
    session: Session,
    *,
    kind: str,
    case: Case,
    recipient: str,
    rendered: Rendered,
    now: datetime,
    settings: MailSettings,
    signer: Signer | None,
    answering: InboundMessage | None = None,
    dedupe_key: str | None = None,
    auto_submitted: str = "auto-generated",
) -> Queued | Withheld:
    address = mailpolicy.normalise(recipient)
    reason = mailpolicy.withheld(
        session, recipient=address, case_id=case.id, now=now, limits=settings.limits
    )
    if reason is not None:
        return Withheld(reason)
    outbound = settings.outbound
    message_id = new_message_id(case, outbound.id_domain, signer)
    headers = {
        "Message-ID": message_id,
        "Auto-Submitted": auto_submitted,
        "X-Loop": X_LOOP,
        "X-Auto-Response-Suppress": "All",
    }
    reply_to = reply_address(case, outbound, signer, now)
    if reply_to:
        headers["Reply-To"] = reply_to
    in_reply_to = None
    references: list[str] = []
    if answering is not None and answering.message_id:
        in_reply_to = answering.message_id
        references = [*answering.references, answering.message_id][-20:]
        headers["In-Reply-To"] = f"<{in_reply_to}>"
        headers["References"] = " ".join(f"<{r}>" for r in references)
    outbox_id = outbox.enqueue(
        session,
        kind=kind,
        channel="email",
        recipient=address,
        subject=rendered.subject,
        body_text=rendered.text,
        body_html=rendered.html,
        headers=headers,
        case_id=case.id,
        dedupe_key=dedupe_key,
        automatic=True,
        now=now,
    )
    if outbox_id is None:
        return Withheld(f"already queued ({dedupe_key})")
    activity = Activity(
        case=case,
        type=ActivityType.EMAIL.value,
        direction=Direction.OUTGOING.value,
        channel="email",
        state=ActivityState.CLOSED.value,
        sender=outbound.from_address.lower(),
        recipients=[address],
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        new_text=rendered.text,
        external_id=message_id.strip("<>"),
        in_reply_to=in_reply_to,
        references=references,
        created_at=now,
    )
    session.add(activity)
    session.flush()
    session.execute(
        update(OutboxMessage).where(OutboxMessage.id == outbox_id).values(activity_id=activity.id)
    )
    return Queued(outbox_id, activity.id, message_id)


def new_message_id(case: Case, domain: str, signer: Signer | None) -> str:
    """`<CAS-01000-K7Q2ZP.<token>@domain>`: unique, and names its case verifiably."""
    if signer is None:
        return f"<{case.number}.{secrets.token_hex(10)}@{domain}>"
    # Four random bytes keep two mails about one case apart; the id is as short as it can be.
    payload = secrets.token_bytes(4) + signing.id_bytes(case.id)
    return f"<{case.number}.{signer.sign(MESSAGE_ID_PURPOSE, payload)}@{domain}>"


def case_id_from_message_id(message_id: str, signer: Signer | None, now: datetime) -> int | None:
    """The case one of our Message-IDs names, if it is genuinely ours."""
    if signer is None:
        return None
    local = message_id.strip().strip("<>").rpartition("@")[0]
    number, dot, token = local.rpartition(".")
    if not dot or not token or not casenumber.PATTERN.fullmatch(number):
        return None
    try:
        payload = signer.verify(MESSAGE_ID_PURPOSE, token, now=now)
    except InvalidToken:
        return None
    return int.from_bytes(payload[4:], "big") if 4 < len(payload) <= 12 else None


def reply_address(
    case: Case, outbound: OutboundEmailConfig, signer: Signer | None, now: datetime
) -> str | None:
    if not outbound.reply_token or signer is None:
        return None
    expires = now + timedelta(days=outbound.reply_token_days) if outbound.reply_token_days else None
    token = signer.sign_id(REPLY_PURPOSE, case.id, expires_at=expires)
    local, _, domain = outbound.from_address.rpartition("@")
    return f"{local}+{token}@{domain}"


def case_id_from_address(address: str, signer: Signer | None, now: datetime) -> int | None:
    """The case a reply address (`support+<token>@domain`) stands for, if the token is ours."""
    if signer is None:
        return None
    local = address.strip().strip("<>").partition("@")[0]
    _base, plus, token = local.partition("+")
    if not plus or not token:
        return None
    try:
        return signer.verify_id(REPLY_PURPOSE, token, now=now)
    except InvalidToken:
        return None
