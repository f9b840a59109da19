"""Cases as plain data: the stable JSON of `ingestd cases` (and later the API)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ingest.sla import SlaBook
from ingest.slaviews import case_kpis
from ingest.store.models import Activity, Case, Contact, Entitlement, JournalEntry


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def customer_of(case: Case) -> dict[str, Any] | None:
    contact: Contact | None = case.contact
    if contact is None and case.account is None:
        return None
    return {
        "name": contact.full_name if contact else None,
        "email": contact.email if contact else None,
        "account": case.account.name if case.account else None,
    }


def case_summary(case: Case) -> dict[str, Any]:
    return {
        "number": case.number,
        "title": case.title,
        "state": case.state,
        "status_reason": case.status_reason,
        "priority": case.priority,
        "queue": case.queue.name if case.queue else None,
        "channel": case.origin,
        "customer": customer_of(case),
        "owner": case.owner,
        "decided_by": case.decided_by,
        "rules_version": case.rules_version,
        "product": case.product,
        "category": case.category,
        "custom": case.custom or {},
        "created_at": _iso(case.created_at),
        "updated_at": _iso(case.updated_at),
        "resolved_at": _iso(case.resolved_at),
    }


def activity_view(activity: Activity) -> dict[str, Any]:
    return {
        "id": activity.id,
        "type": activity.type,
        "direction": activity.direction,
        "channel": activity.channel,
        "state": activity.state,
        "sender": activity.sender,
        "recipients": activity.recipients,
        "subject": activity.subject,
        "text": activity.text,
        "new_text": activity.new_text if activity.new_text is not None else activity.text,
        "signature": activity.signature,
        "external_id": activity.external_id,
        "created_at": _iso(activity.created_at),
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
                "inline": a.inline,
                "url": a.url,
            }
            for a in activity.attachments
        ],
    }


def case_detail(
    session: Session, case: Case, sla: SlaBook | None = None, now: datetime | None = None
) -> dict[str, Any]:
    previous = session.get(Case, case.previous_case_id) if case.previous_case_id else None
    entitlement = session.get(Entitlement, case.entitlement_id) if case.entitlement_id else None
    return {
        **case_summary(case),
        "previous_case": previous.number if previous else None,
        "activities": [activity_view(a) for a in case.activities],
        "entitlement": entitlement.name if entitlement else None,
        "sla_policy": case.sla_policy,
        "first_response_at": _iso(case.first_response_at),
        "sla": case_kpis(session, case, sla, now or datetime.now(UTC)),
    }


def list_cases(
    session: Session,
    *,
    state: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    query = (
        select(Case)
        .options(selectinload(Case.contact), selectinload(Case.queue), selectinload(Case.account))
        .order_by(Case.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if state:
        query = query.where(Case.state == state)
    return [case_summary(c) for c in session.execute(query).scalars()]


def journal_view(row: JournalEntry) -> dict[str, Any]:
    return {
        "id": row.id,
        "channel": row.channel,
        "external_id": row.external_id,
        "received_at": _iso(row.received_at),
        "outcome": row.outcome,
        "case": row.case_number,
        "decided_by": row.decided_by,
        "reason": row.reason,
        "rules_version": row.rules_version,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "duplicates": row.duplicate_count,
        "processed_at": _iso(row.processed_at),
    }


def list_journal(
    session: Session, *, outcome: str | None = None, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    query = select(JournalEntry).order_by(JournalEntry.id.desc()).limit(limit).offset(offset)
    if outcome:
        query = query.where(JournalEntry.outcome == outcome)
    return [journal_view(row) for row in session.execute(query).scalars()]


def find_case(session: Session, number: str) -> Case | None:
    return session.execute(
        select(Case)
        .where(Case.number == number.strip().upper())
        .options(selectinload(Case.activities).selectinload(Activity.attachments))
    ).scalar_one_or_none()
