"""Bounces: which of our mails failed, for whom, and whether to stop mailing that address.

A delivery status notification (RFC 3464; `channels/mime.py` reads it into a
`DeliveryReport`) is tied to the case of the mail it reports on: by the
original Message-ID (an outgoing activity, or one of our signed Message-IDs),
else by the latest mail we sent to the failed address in the last week. It is
then recorded as an activity on that case, one `bounces` row per recipient,
and for a hard bounce a suppression: no automatic mail to the address until
`automatic_mail.suppress_hard_bounces_days` have passed (checked when mail is
queued and again when it is sent). Soft bounces (4.x.x, delays, a full
mailbox) are recorded and suppress nothing.

Hard means the address itself is bad: Action `failed` with a 5.x.x status,
except the 5.x.x codes that say nothing about the address (mailbox full,
message too big, delivery time expired, and the 5.7.x policy refusals such as
"rejected as spam").
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ingest import outmail
from ingest.config import AutomaticMailConfig
from ingest.message import DeliveryReport, RecipientStatus
from ingest.signing import Signer
from ingest.store.models import (
    Activity,
    Bounce,
    Case,
    Direction,
    OutboxMessage,
    OutboxState,
    Suppression,
)

_RECENT = timedelta(days=7)
# Permanent codes that are not about the address (RFC 3463 subject.detail).
_NOT_ABOUT_THE_ADDRESS = ("2.2", "2.3", "3.4", "4.7")


def is_hard(recipient: RecipientStatus) -> bool:
    status = recipient.status or ""
    if recipient.action != "failed" or not status.startswith("5."):
        return False
    detail = status[2:]
    return not detail.startswith("7.") and detail not in _NOT_ABOUT_THE_ADDRESS


def describe(report: DeliveryReport) -> str:
    failed = [r for r in report.recipients if r.action in ("failed", "delayed")]
    if not failed:
        return "delivery report"
    first = failed[0]
    kind = "hard bounce" if is_hard(first) else "soft bounce"
    more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"{kind} {first.status or '?'} for {first.address}{more}"


def find_case(
    session: Session, report: DeliveryReport, signer: Signer | None, now: datetime
) -> Case | None:
    """The case whose mail this report is about, or None (not ours, or unknown)."""
    original = report.original_message_id
    if original:
        case_id = session.execute(
            select(Activity.case_id)
            .where(
                Activity.channel == "email",
                Activity.external_id == original,
                Activity.direction == Direction.OUTGOING.value,
            )
            .limit(1)
        ).scalar_one_or_none()
        if case_id is None:
            case_id = outmail.case_id_from_message_id(original, signer, now)
        if case_id is not None:
            return session.get(Case, case_id)
    for recipient in report.recipients:
        if recipient.action not in ("failed", "delayed"):
            continue
        case_id = session.execute(
            select(OutboxMessage.case_id)
            .where(
                OutboxMessage.recipient == recipient.address,
                OutboxMessage.state == OutboxState.SENT.value,
                OutboxMessage.sent_at > now - _RECENT,
                OutboxMessage.case_id.is_not(None),
            )
            .order_by(OutboxMessage.sent_at.desc())
            .limit(1)
        ).scalar_one_or_none()
        if case_id is not None:
            return session.get(Case, case_id)
    return None


def record(
    session: Session,
    report: DeliveryReport,
    case: Case | None,
    journal_id: int | None,
    now: datetime,
    limits: AutomaticMailConfig,
) -> list[Bounce]:
    """One row per failed or delayed recipient; a suppression for each hard bounce."""
    rows = []
    for recipient in report.recipients:
        if recipient.action not in ("failed", "delayed"):
            continue
        bounce = Bounce(
            address=recipient.address,
            action=recipient.action,
            status=recipient.status,
            diagnostic=recipient.diagnostic,
            hard=is_hard(recipient),
            original_message_id=report.original_message_id,
            case_id=case.id if case is not None else None,
            journal_id=journal_id,
            received_at=now,
        )
        session.add(bounce)
        session.flush()
        rows.append(bounce)
        if bounce.hard and limits.suppress_hard_bounces_days > 0:
            _suppress(session, bounce, now + timedelta(days=limits.suppress_hard_bounces_days), now)
    return rows


def _suppress(session: Session, bounce: Bounce, until: datetime, now: datetime) -> None:
    reason = f"hard bounce {bounce.status}"
    if bounce.diagnostic:
        reason += f": {bounce.diagnostic[:300]}"
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(Suppression).values(
        address=bounce.address, reason=reason, bounce_id=bounce.id, created_at=now, until=until
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["address"],
            set_={"reason": reason, "bounce_id": bounce.id, "created_at": now, "until": until},
        )
    )
