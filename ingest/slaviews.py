"""SLA KPI instances as plain data: `ingestd sla list`, `cases show` and their JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from ingest.sla import KPI_NAMES, SlaBook, describe_minutes
from ingest.store.models import (
    SLA_OPEN,
    Case,
    CaseState,
    SlaKpiInstance,
    SlaKpiStatus,
)

# What `sla list --status` accepts, as people type it.
STATUS_WORDS = {
    "in-progress": SlaKpiStatus.IN_PROGRESS.value,
    "nearing": SlaKpiStatus.NEARING.value,
    "noncompliant": SlaKpiStatus.NONCOMPLIANT.value,
    "paused": SlaKpiStatus.PAUSED.value,
    "succeeded": SlaKpiStatus.SUCCEEDED.value,
    "canceled": SlaKpiStatus.CANCELED.value,
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def minutes_left(kpi: SlaKpiInstance, book: SlaBook, now: datetime) -> float | None:
    """Business minutes until the failure time (negative: overdue); None once it is over."""
    if kpi.status in (SlaKpiStatus.SUCCEEDED.value, SlaKpiStatus.CANCELED.value):
        return None
    # A paused KPI's clock stands still where it was paused.
    at = kpi.paused_at if kpi.status == SlaKpiStatus.PAUSED.value and kpi.paused_at else now
    return book.between(kpi.calendar, at, kpi.fail_at)


def left_text(minutes: float | None) -> str:
    if minutes is None:
        return "-"
    if minutes < 0:
        return f"overdue {describe_minutes(-minutes)}"
    return describe_minutes(minutes)


def kpi_view(kpi: SlaKpiInstance, book: SlaBook | None, now: datetime) -> dict[str, Any]:
    left = minutes_left(kpi, book, now) if book is not None else None
    local = (lambda t: book.local(kpi.calendar, t).isoformat()) if book is not None else _iso
    return {
        "id": kpi.id,
        "kpi": kpi.kpi,
        "name": KPI_NAMES.get(kpi.kpi, kpi.kpi),
        "policy": kpi.policy,
        "item": kpi.item,
        "status": kpi.status,
        "calendar": kpi.calendar,
        "timezone": book.zone_name(kpi.calendar) if book is not None else None,
        "warn_at": _iso(kpi.warn_at),
        "fail_at": _iso(kpi.fail_at),
        "warn_at_local": local(kpi.warn_at) if kpi.warn_at else None,
        "fail_at_local": local(kpi.fail_at),
        "minutes_left": round(left, 1) if left is not None else None,
        "time_left": left_text(left),
        "paused_minutes": round(kpi.paused_minutes, 1),
        "paused_at": _iso(kpi.paused_at),
        "warned_at": _iso(kpi.warned_at),
        "failed_at": _iso(kpi.failed_at),
        "ended_at": _iso(kpi.ended_at),
        "end_reason": kpi.end_reason,
    }


def case_kpis(
    session: Session, case: Case, book: SlaBook | None, now: datetime
) -> list[dict[str, Any]]:
    rows = session.execute(
        select(SlaKpiInstance).where(SlaKpiInstance.case_id == case.id).order_by(SlaKpiInstance.id)
    ).scalars()
    return [kpi_view(k, book, now) for k in rows]


def list_kpis(
    session: Session,
    book: SlaBook,
    now: datetime,
    *,
    status: str | None = None,
    include_closed: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """KPIs nearest their failure time first, with their case.

    By default the KPIs that can still change, plus those that failed, of
    active cases: what a team lead looks at during the day.
    """
    statuses = (STATUS_WORDS[status],) if status else (*SLA_OPEN, SlaKpiStatus.NONCOMPLIANT.value)
    query = (
        select(SlaKpiInstance, Case)
        .join(Case, Case.id == SlaKpiInstance.case_id)
        .where(SlaKpiInstance.status.in_(statuses))
        .options(selectinload(Case.queue), selectinload(Case.contact))
        .order_by(SlaKpiInstance.fail_at, SlaKpiInstance.id)
        .limit(limit)
    )
    if not include_closed:
        query = query.where(Case.state == CaseState.ACTIVE.value)
    out = []
    for kpi, case in session.execute(query).tuples():
        out.append(
            {
                "case": case.number,
                "title": case.title,
                "priority": case.priority,
                "queue": case.queue.name if case.queue is not None else None,
                "case_state": case.state,
                "status_reason": case.status_reason,
                **kpi_view(kpi, book, now),
            }
        )
    return out


def status_counts(session: Session) -> dict[str, int]:
    """KPI instances by status, every status present (for /metrics)."""
    counts = {s.value: 0 for s in SlaKpiStatus}
    for status, count in session.execute(
        select(SlaKpiInstance.status, func.count()).group_by(SlaKpiInstance.status)
    ).tuples():
        counts[status] = count
    return counts
