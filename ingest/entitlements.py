"""Which entitlement covers a customer today, after Dynamics 365's entitlement model."""

from __future__ import annotations

from datetime import date

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ingest.store.models import (
    Contact,
    Entitlement,
    EntitlementState,
)


def remaining_for(entitlement: Entitlement, channel: str) -> int | None:
    """Terms left for a case on this channel; None when unlimited."""
    if entitlement.channels:
        for item in entitlement.channels:
            if item.channel == channel:
                return item.remaining_terms
        return 0  # split by channel, and this channel was not granted
    return entitlement.remaining_terms


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

    A contact's own entitlement is preferred to its account's; a restricted
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
        .order_by(Entitlement.contact_id.is_(None), Entitlement.end_date, Entitlement.id)
    ).scalars()
    for entitlement in candidates:
        if not covers(entitlement, contact):
            continue
        left = remaining_for(entitlement, channel)
        if left is None or left > 0 or not entitlement.restrict:
            return entitlement
    return None
