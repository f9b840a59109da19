"""What can happen to a case after it opens, kept consistent with its SLA KPIs and terms.

Each operation changes the case in the caller's transaction together with
everything that depends on it: KPIs pause, resume, restart or end; entitlement
terms are counted or given back. The pipeline calls `opened`; the agent API
(later) calls the rest, as do tests and scripts. Transitions follow Dynamics
365's case states:

    Active (In Progress, On Hold, Waiting for Details, Researching)
      ── resolve ──▶ Resolved (Problem Solved, Information Provided)
      ── cancel ───▶ Cancelled (Cancelled, Merged)
    Resolved / Cancelled ── reopen ──▶ Active (In Progress)

Status reasons change freely within Active; a closed case changes only by
being reopened.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest import cases, entitlements, kpis
from ingest.sla import SlaBook
from ingest.store.models import (
    STATUS_REASONS_BY_STATE,
    Case,
    CaseState,
    Entitlement,
    Priority,
    Queue,
    StatusReason,
)

log = logging.getLogger(__name__)

ACTIVE_REASONS = tuple(r.value for r in STATUS_REASONS_BY_STATE[CaseState.ACTIVE])
RESOLVED_REASONS = tuple(r.value for r in STATUS_REASONS_BY_STATE[CaseState.RESOLVED])
CANCELLED_REASONS = tuple(r.value for r in STATUS_REASONS_BY_STATE[CaseState.CANCELLED])


class TransitionError(ValueError):
    """The case's state does not allow this change; the message says what would."""


def opened(
    session: Session,
    case: Case,
    entitlement: Entitlement | None,
    now: datetime,
    book: SlaBook,
) -> None:
    """A new case: record its entitlement, count a term, start its SLA KPIs.

    Raises entitlements.TermsExhausted when a restricted entitlement's last
    term went to another case since the decision (the caller retries, and the
    new decision sees no terms left).
    """
    case.entitlement_id = entitlement.id if entitlement is not None else None
    case.sla_policy = book.policy_name_for(entitlement)
    if entitlement is not None and entitlement.decrement_on == "creation":
        entitlements.charge(session, case, entitlement)
    kpis.start(session, case, now, book)


def set_status_reason(
    session: Session, case: Case, reason: str, now: datetime, book: SlaBook
) -> None:
    """Another status reason of an active case; pauses or resumes its SLA as configured."""
    reason = _one_of(reason, ACTIVE_REASONS, "an active case's status reason")
    if case.state != CaseState.ACTIVE.value:
        raise TransitionError(
            f"case {case.number} is {case.state}: reopen it before changing its status reason"
        )
    old = case.status_reason
    if reason == old:
        return
    case.status_reason, case.updated_at = reason, now
    pause_on = book.pause_on(case.sla_policy)
    if reason in pause_on and old not in pause_on:
        kpis.pause(session, case, now)
    elif old in pause_on and reason not in pause_on:
        kpis.resume(session, case, now, book)
    log.info(
        "case status changed",
        extra={"case": case.number, "status_reason": reason, "previous": old},
    )


def set_priority(session: Session, case: Case, priority: str, now: datetime, book: SlaBook) -> None:
    """A new priority; the SLA items that now apply take over."""
    priority = _one_of(priority, tuple(p.value for p in Priority), "a priority")
    if case.priority == priority:
        return
    case.priority, case.updated_at = priority, now
    kpis.recompute(session, case, now, book)


def route(session: Session, case: Case, queue_name: str, now: datetime, book: SlaBook) -> None:
    """Move the case to another queue; SLA items that depend on the queue follow."""
    queue = session.execute(select(Queue).where(Queue.name == queue_name)).scalar_one_or_none()
    if queue is None:
        raise TransitionError(f"no queue named {queue_name!r}")
    if case.queue_id == queue.id:
        return
    cases.enqueue(session, case, queue, now)
    case.updated_at = now
    kpis.recompute(session, case, now, book)


def record_agent_reply(session: Session, case: Case, now: datetime) -> None:
    """An agent answered the customer: the first such reply meets the first-response KPIs.

    Automatic mail (acknowledgements, SLA notices) is not an agent's reply.
    """
    if case.state != CaseState.ACTIVE.value:
        raise TransitionError(f"case {case.number} is {case.state}: reopen it to reply")
    if case.first_response_at is None:
        case.first_response_at = now
    case.updated_at = now
    kpis.succeed(session, case, "first_reply", now)


def resolve(
    session: Session,
    case: Case,
    now: datetime,
    book: SlaBook,
    reason: str = StatusReason.PROBLEM_SOLVED.value,
) -> None:
    """Resolve an active case: resolution KPIs are met, the others end, a term may count."""
    reason = _close(session, case, now, CaseState.RESOLVED, reason, RESOLVED_REASONS)
    case.resolved_at = now
    entitlement = _entitlement(session, case)
    if entitlement is not None and entitlement.decrement_on == "resolution":
        # Restricting happens when a case opens; work done is always counted.
        entitlements.charge(session, case, entitlement, force=True)
    log.info("case resolved", extra={"case": case.number, "status_reason": reason})


def cancel(
    session: Session,
    case: Case,
    now: datetime,
    book: SlaBook,
    reason: str = StatusReason.CANCELLED.value,
) -> None:
    """Cancel an active case: its KPIs end Canceled and its term goes back."""
    reason = _close(session, case, now, CaseState.CANCELLED, reason, CANCELLED_REASONS)
    entitlements.give_back(session, case)
    log.info("case cancelled", extra={"case": case.number, "status_reason": reason})


def _close(
    session: Session,
    case: Case,
    now: datetime,
    state: CaseState,
    reason: str,
    allowed: tuple[str, ...],
) -> str:
    verb = "resolve" if state is CaseState.RESOLVED else "cancel"
    reason = _one_of(reason, allowed, f"a status reason of {state.value.lower()} cases")
    if case.state != CaseState.ACTIVE.value:
        raise TransitionError(f"case {case.number} is {case.state}: only active cases {verb}")
    case.state, case.status_reason, case.updated_at = state.value, reason, now
    kpis.close(session, case, now, resolved=state is CaseState.RESOLVED)
    return reason


def reopen(session: Session, case: Case, now: datetime, book: SlaBook) -> None:
    """A resolved or cancelled case becomes Active / In Progress again."""
    if case.state == CaseState.ACTIVE.value:
        return
    was_cancelled = case.state == CaseState.CANCELLED.value
    case.state, case.status_reason = CaseState.ACTIVE.value, StatusReason.IN_PROGRESS.value
    case.resolved_at, case.updated_at = None, now
    paused = StatusReason.IN_PROGRESS.value in book.pause_on(case.sla_policy)
    kpis.reopen(session, case, now, book, paused)
    entitlement = _entitlement(session, case)
    if was_cancelled and entitlement is not None and entitlement.decrement_on == "creation":
        entitlements.charge(session, case, entitlement, force=True)
    log.info("case reopened", extra={"case": case.number})


def _entitlement(session: Session, case: Case) -> Entitlement | None:
    return session.get(Entitlement, case.entitlement_id) if case.entitlement_id else None


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    match = next((a for a in allowed if a.lower() == value.strip().lower()), None)
    if match is None:
        raise TransitionError(f"{value!r} is not {what} (one of: {', '.join(allowed)})")
    return match
