"""May ingestd send an automatic mail to this address about this case, now?

One check for every kind of automatic mail (auto-responses today, SLA and
survey mail later): not to an address that hard-bounced recently (the
`suppressions` table), and not more than `automatic_mail.max_per_address`
mails to one address, nor `max_per_case` about one case, per window. The
rate limits are what finally stops a loop with an auto-responder that honours
no header: whatever it does, it gets at most that many mails an hour.

The counts come from the outbox itself (rows marked `automatic`), so there is
no second bookkeeping to drift. On PostgreSQL a transaction-level advisory
lock per address makes check-then-queue exact when several daemons handle
mail for one address at once; SQLite serialises writers anyway.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ingest.config import AutomaticMailConfig
from ingest.store.models import OutboxMessage, OutboxState, Suppression


def normalise(address: str) -> str:
    return address.strip().strip("<>").lower()


def suppression(session: Session, address: str, now: datetime) -> Suppression | None:
    found = session.get(Suppression, normalise(address))
    return found if found is not None and found.until > now else None


def suppressed_reason(session: Session, address: str, now: datetime) -> str | None:
    found = suppression(session, address, now)
    if found is None:
        return None
    return f"{found.address} is suppressed until {found.until:%Y-%m-%d %H:%M} UTC ({found.reason})"


def withheld(
    session: Session,
    *,
    recipient: str,
    case_id: int | None,
    now: datetime,
    limits: AutomaticMailConfig,
) -> str | None:
    """Why an automatic mail must not be queued now, or None. Call in the queuing transaction."""
    address = normalise(recipient)
    _serialise(session, address)
    reason = suppressed_reason(session, address, now)
    if reason:
        return reason
    since = now - timedelta(minutes=limits.window_minutes)
    window = f"{limits.window_minutes:g} minutes"
    to_address = _count(session, OutboxMessage.recipient == address, since)
    if to_address >= limits.max_per_address:
        return f"rate limit: {to_address} automatic mails to {address} in the last {window}"
    if case_id is not None:
        about_case = _count(session, OutboxMessage.case_id == case_id, since)
        if about_case >= limits.max_per_case:
            return f"rate limit: {about_case} automatic mails about this case in the last {window}"
    return None


def screen(session: Session, row: OutboxMessage, now: datetime) -> str | None:
    """The send-time check of the outbox: an automatic row to an address suppressed since."""
    if not row.automatic or row.channel != "email":
        return None
    return suppressed_reason(session, row.recipient, now)


def _count(session: Session, where: object, since: datetime) -> int:
    return int(
        session.execute(
            select(func.count())
            .select_from(OutboxMessage)
            .where(
                where,  # type: ignore[arg-type]
                OutboxMessage.automatic.is_(True),
                OutboxMessage.created_at > since,
                OutboxMessage.state != OutboxState.SUPPRESSED.value,
            )
        ).scalar_one()
    )


def _serialise(session: Session, address: str) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(b"automatic-mail:" + address.encode()).digest()[:8], "big")
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key - 2**63})
