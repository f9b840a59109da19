"""Which entitlement covers a customer today, and counting its terms, after Dynamics 365.

An entitlement grants a customer (a contact, or every contact of an account
unless a contact list narrows it) a number of cases (terms), optionally split
per channel, between two dates, and the SLA its cases get. A term is counted
when a case opens or when it is resolved (`decrement_on`), and given back when
the case is cancelled. A restricted entitlement with no terms left allows no
new case; one that is not restricted lets the count go below zero.
"""

from __future__ import annotations

from datetime import date
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from ingest.store.models import (
    Case,
    Contact,
    Entitlement,
    EntitlementChannel,
    EntitlementState,
)

DECREMENT_ON = ("creation", "resolution")


class TermsExhausted(Exception):
    """A restricted entitlement's last term went to another case first."""


def effective_state(entitlement: Entitlement, today: date) -> str:
    """Draft and Cancelled are stored; Waiting, Active and Expired follow from the dates."""
    stored = entitlement.state
    if stored in (EntitlementState.DRAFT.value, EntitlementState.CANCELLED.value):
        return stored
    if stored == EntitlementState.EXPIRED.value or today > entitlement.end_date:
        return EntitlementState.EXPIRED.value
    if today < entitlement.start_date:
        return EntitlementState.WAITING.value
    return EntitlementState.ACTIVE.value


def _channel_row(entitlement: Entitlement, channel: str) -> EntitlementChannel | None:
    return next((c for c in entitlement.channels if c.channel == channel), None)


def remaining_for(entitlement: Entitlement, channel: str) -> int | None:
    """Terms left for a case on this channel; None when unlimited.

    With terms split per channel, a channel that is not listed has none; the
    entitlement's own total, when it has one, must have terms left as well.
    """
    left: list[int] = []
    if entitlement.channels:
        row = _channel_row(entitlement, channel)
        if row is None:
            return 0  # split by channel, and this channel was not granted
        if row.remaining_terms is not None:
            left.append(row.remaining_terms)
    if entitlement.remaining_terms is not None:
        left.append(entitlement.remaining_terms)
    return min(left) if left else None


def covers(entitlement: Entitlement, contact: Contact) -> bool:
    if entitlement.contact_id is not None:
        return entitlement.contact_id == contact.id
    if entitlement.account_id is None or entitlement.account_id != contact.account_id:
        return False
    listed = [item.contact_id for item in entitlement.contacts]
    return not listed or contact.id in listed


def find_valid(
    session: Session, contact: Contact | None, channel: str, today: date
) -> Entitlement | None:
    """The customer's entitlement that allows a new case on this channel today.

    A contact's own entitlement is preferred to its account's, and among
    those the one marked default, then the one ending first; a restricted
    entitlement with no terms left does not count.
    """
    if contact is None:
        return None
    owners = [Entitlement.contact_id == contact.id]
    if contact.account_id is not None:
        owners.append(Entitlement.account_id == contact.account_id)
    candidates = session.execute(
        select(Entitlement)
        .where(
            or_(*owners),
            Entitlement.state == EntitlementState.ACTIVE.value,
            Entitlement.start_date <= today,
            Entitlement.end_date >= today,
        )
        .order_by(
            Entitlement.contact_id.is_(None),
            Entitlement.is_default.desc(),
            Entitlement.end_date,
            Entitlement.id,
        )
    ).scalars()
    for entitlement in candidates:
        if not covers(entitlement, contact):
            continue
        left = remaining_for(entitlement, channel)
        if left is None or left > 0 or not entitlement.restrict:
            return entitlement
    return None


def charge(session: Session, case: Case, entitlement: Entitlement, *, force: bool = False) -> None:
    """Count one term of `entitlement` for `case` (once per case).

    Each count is one conditional UPDATE, so two daemons opening cases for the
    same customer at once never both take a restricted entitlement's last
    term: the loser gets TermsExhausted. `force` counts even past zero (a
    cancelled case that is reopened takes its term back whatever is left).
    """
    if case.entitlement_charged:
        return
    guard = entitlement.restrict and not force
    row = _channel_row(entitlement, case.origin)
    if row is not None and row.remaining_terms is not None:
        _step(session, EntitlementChannel, row.id, -1, guard)
        session.expire(row, ["remaining_terms"])
    if entitlement.remaining_terms is not None:
        _step(session, Entitlement, entitlement.id, -1, guard)
        session.expire(entitlement, ["remaining_terms"])
    case.entitlement_charged = True


def give_back(session: Session, case: Case) -> None:
    """The term a case counted returns to its entitlement (the case was cancelled)."""
    if not case.entitlement_charged or case.entitlement_id is None:
        return
    entitlement = session.get(Entitlement, case.entitlement_id)
    case.entitlement_charged = False
    if entitlement is None:
        return
    row = _channel_row(entitlement, case.origin)
    if row is not None and row.remaining_terms is not None:
        _step(session, EntitlementChannel, row.id, +1, False)
        session.expire(row, ["remaining_terms"])
    if entitlement.remaining_terms is not None:
        _step(session, Entitlement, entitlement.id, +1, False)
        session.expire(entitlement, ["remaining_terms"])


def _step(
    session: Session,
    model: type[Entitlement] | type[EntitlementChannel],
    row_id: int,
    delta: int,
    guard: bool,
) -> None:
    statement = (
        update(model)
        .where(model.id == row_id, model.remaining_terms.is_not(None))
        .values(remaining_terms=model.remaining_terms + delta)
        .execution_options(synchronize_session=False)
    )
    if guard:
        statement = statement.where(model.remaining_terms > 0)
    result = cast("CursorResult[Any]", session.execute(statement))
    if result.rowcount != 1 and guard:
        raise TermsExhausted(f"entitlement {row_id}: no terms left")
