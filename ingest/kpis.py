"""SLA KPI instances on cases: started, paused, resumed, recomputed, ended.

Every function works in the caller's transaction, so a case change and its
KPIs commit together. Deadlines are stored (`warn_at`, `fail_at`) and so is
the next one the sweep must act on (`due_at`); the sweep in `ingest/slasweep.py`
only moves KPIs whose `due_at` has passed.

Deadlines are `applicable_from` (the case's creation) plus the item's
duration plus the business time spent paused, counted in the item's calendar:
pausing and resuming moves both deadlines by exactly the paused business time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.calendars import CalendarError
from ingest.sla import SlaBook, SlaItem
from ingest.store.models import (
    SLA_OPEN,
    Case,
    CaseState,
    SlaKpiInstance,
    SlaKpiStatus,
)

log = logging.getLogger(__name__)

IN_PROGRESS = SlaKpiStatus.IN_PROGRESS.value
NEARING = SlaKpiStatus.NEARING.value
NONCOMPLIANT = SlaKpiStatus.NONCOMPLIANT.value
PAUSED = SlaKpiStatus.PAUSED.value
SUCCEEDED = SlaKpiStatus.SUCCEEDED.value
CANCELED = SlaKpiStatus.CANCELED.value
_FINAL_RESULTS = (SUCCEEDED, NONCOMPLIANT)


def open_kpis(session: Session, case: Case) -> list[SlaKpiInstance]:
    """The case's KPIs that can still change, locked against a concurrent sweep."""
    return list(
        session.execute(
            select(SlaKpiInstance)
            .where(SlaKpiInstance.case_id == case.id, SlaKpiInstance.status.in_(SLA_OPEN))
            .order_by(SlaKpiInstance.id)
            .with_for_update()
        ).scalars()
    )


def all_kpis(session: Session, case_ids: Iterable[int]) -> dict[int, list[SlaKpiInstance]]:
    ids = list(case_ids)
    out: dict[int, list[SlaKpiInstance]] = {i: [] for i in ids}
    if not ids:
        return out
    for kpi in session.execute(
        select(SlaKpiInstance)
        .where(SlaKpiInstance.case_id.in_(ids))
        .order_by(SlaKpiInstance.case_id, SlaKpiInstance.id)
    ).scalars():
        out[kpi.case_id].append(kpi)
    return out


def start(session: Session, case: Case, now: datetime, book: SlaBook) -> list[SlaKpiInstance]:
    """A new case: one KPI instance per KPI its policy's items promise."""
    policy = book.policy(case.sla_policy)
    if policy is None:
        return []
    started = []
    for item in book.applicable(policy, case, now).values():
        kpi = _new(session, case, item, now, book)
        if kpi is not None:
            started.append(kpi)
    return started


def recompute(session: Session, case: Case, now: datetime, book: SlaBook) -> None:
    """After a change to the case (priority, queue...): follow the items that now apply.

    An open KPI whose item still applies is left alone. One whose item no
    longer applies is Canceled, and the item that applies now (if any) starts
    a new instance from the case's creation, keeping the paused time: Dynamics'
    behaviour when an SLA item's condition changes.
    """
    if case.state != CaseState.ACTIVE.value:
        return
    policy = book.policy(case.sla_policy)
    if policy is None:
        return
    wanted = book.applicable(policy, case, now)
    current = {kpi.kpi: kpi for kpi in open_kpis(session, case)}
    finished = _finished_kinds(session, case)
    for kind in {*wanted, *current}:
        old, item = current.get(kind), wanted.get(kind)
        if old is not None and item is not None and old.item == item.name:
            continue
        if old is not None:
            _end(old, CANCELED, now, "the case changed: another SLA item applies")
        if item is None or kind in finished or _already_met(case, item):
            continue
        _new(session, case, item, now, book, replacing=old)


def pause(session: Session, case: Case, now: datetime) -> None:
    for kpi in open_kpis(session, case):
        if kpi.status != PAUSED:
            kpi.status, kpi.paused_at, kpi.due_at, kpi.updated_at = PAUSED, now, None, now


def resume(session: Session, case: Case, now: datetime, book: SlaBook) -> None:
    for kpi in open_kpis(session, case):
        if kpi.status == PAUSED:
            _resume(kpi, now, book)


def succeed(session: Session, case: Case, success_on: str, now: datetime) -> None:
    """The KPIs waiting for this event (first_reply, resolved) are met."""
    for kpi in open_kpis(session, case):
        if kpi.success_on == success_on:
            _end(kpi, SUCCEEDED, now, None)


def cancel_open(session: Session, case: Case, now: datetime, reason: str) -> None:
    for kpi in open_kpis(session, case):
        _end(kpi, CANCELED, now, reason)


def reopen(session: Session, case: Case, now: datetime, book: SlaBook, paused: bool) -> None:
    """A resolved or cancelled case is active again: its resolution promise stands.

    The KPIs that resolving (or cancelling) ended are running again with the
    deadlines they had (the customer was promised a resolution by then, and
    the case turned out not to be resolved); one whose deadline has passed
    fails at the next sweep. KPIs that had failed stay Noncompliant.
    """
    for kpi in session.execute(
        select(SlaKpiInstance)
        .where(SlaKpiInstance.case_id == case.id, SlaKpiInstance.end_reason == _CLOSED_REASON)
        .with_for_update()
    ).scalars():
        kpi.ended_at, kpi.end_reason = None, None
        if paused:
            kpi.status, kpi.paused_at, kpi.due_at, kpi.updated_at = PAUSED, now, None, now
        else:
            _schedule(kpi, now, book)


_CLOSED_REASON = "the case was closed"


def close(session: Session, case: Case, now: datetime, *, resolved: bool) -> None:
    """Resolving meets the `resolved` KPIs; whatever else is open ends Canceled."""
    for kpi in open_kpis(session, case):
        if resolved and kpi.success_on == "resolved":
            _end(kpi, SUCCEEDED, now, _CLOSED_REASON)
        else:
            _end(kpi, CANCELED, now, _CLOSED_REASON)


# -- the sweep's transitions --------------------------------------------------------


def advance(kpi: SlaKpiInstance, now: datetime, book: SlaBook) -> str | None:
    """Move a due KPI on; return "warning" or "failure" when one must be sent.

    A KPI whose failure time has passed becomes Noncompliant without a
    warning first, however late the sweep is (catch-up after downtime).
    """
    if kpi.status not in (IN_PROGRESS, NEARING):
        kpi.due_at = None
        return None
    if kpi.fail_at <= now:
        kpi.status, kpi.failed_at, kpi.due_at, kpi.updated_at = NONCOMPLIANT, now, None, now
        return "failure"
    if kpi.warn_at is not None and kpi.warn_at <= now and kpi.status == IN_PROGRESS:
        kpi.status, kpi.due_at, kpi.updated_at = NEARING, kpi.fail_at, now
        if kpi.warned_at is None:
            kpi.warned_at = now
            return "warning"
        return None  # warned before a pause moved the deadlines: once is enough
    _schedule(kpi, now, book)  # a stale due time: put it where it belongs
    return None


# -- internals ----------------------------------------------------------------------


def _new(
    session: Session,
    case: Case,
    item: SlaItem,
    now: datetime,
    book: SlaBook,
    replacing: SlaKpiInstance | None = None,
) -> SlaKpiInstance | None:
    kpi = SlaKpiInstance(
        case_id=case.id,
        policy=item.policy,
        item=item.name,
        kpi=item.kpi,
        success_on=item.success_on,
        calendar=item.calendar,
        warn_minutes=item.warn_minutes,
        fail_minutes=item.fail_minutes,
        applicable_from=case.created_at,
        paused_minutes=replacing.paused_minutes if replacing is not None else 0.0,
        paused_at=None,
        status=IN_PROGRESS,
        created_at=now,
        updated_at=now,
    )
    try:
        if replacing is not None and replacing.paused_at is not None:
            # Paused now: the new instance is paused from the same moment.
            kpi.paused_at = replacing.paused_at
            _deadlines(kpi, book)
            kpi.status = PAUSED
        elif case.status_reason in book.pause_on(case.sla_policy):
            kpi.paused_at = now
            _deadlines(kpi, book)
            kpi.status = PAUSED
        else:
            _schedule(kpi, now, book)
    except CalendarError as exc:
        log.error(
            "sla deadline cannot be computed; KPI not started",
            extra={"case": case.number, "sla": item.policy, "item": item.name, "error": str(exc)},
        )
        return None
    session.add(kpi)
    return kpi


def _deadlines(kpi: SlaKpiInstance, book: SlaBook) -> None:
    start, paused = kpi.applicable_from, kpi.paused_minutes
    kpi.fail_at = book.add(kpi.calendar, start, kpi.fail_minutes + paused)
    kpi.warn_at = (
        book.add(kpi.calendar, start, kpi.warn_minutes + paused)
        if kpi.warn_minutes is not None
        else None
    )


def _schedule(kpi: SlaKpiInstance, now: datetime, book: SlaBook) -> None:
    """Recompute a running KPI's deadlines, status and next due time."""
    _deadlines(kpi, book)
    kpi.paused_at, kpi.updated_at = None, now
    if kpi.warn_at is not None and (kpi.warn_at > now or kpi.warned_at is None):
        # Before the warning time, or past it with the warning not yet sent:
        # either way the warning time is what the sweep looks at next.
        kpi.status, kpi.due_at = IN_PROGRESS, kpi.warn_at
    elif kpi.warn_at is not None:
        kpi.status, kpi.due_at = NEARING, kpi.fail_at
    else:
        kpi.status, kpi.due_at = IN_PROGRESS, kpi.fail_at


def _resume(kpi: SlaKpiInstance, now: datetime, book: SlaBook) -> None:
    assert kpi.paused_at is not None
    kpi.paused_minutes += max(0.0, book.between(kpi.calendar, kpi.paused_at, now))
    _schedule(kpi, now, book)


def _end(kpi: SlaKpiInstance, status: str, now: datetime, reason: str | None) -> None:
    if kpi.status == PAUSED and kpi.paused_at is not None:
        kpi.paused_at = None
    kpi.status, kpi.ended_at, kpi.end_reason = status, now, reason
    kpi.due_at, kpi.updated_at = None, now


def _finished_kinds(session: Session, case: Case) -> set[str]:
    """KPIs already met or failed: a later change of the case does not restart them."""
    return set(
        session.execute(
            select(SlaKpiInstance.kpi).where(
                SlaKpiInstance.case_id == case.id, SlaKpiInstance.status.in_(_FINAL_RESULTS)
            )
        ).scalars()
    )


def _already_met(case: Case, item: SlaItem) -> bool:
    return item.success_on == "first_reply" and case.first_response_at is not None
