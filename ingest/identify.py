"""Who wrote: find the contact behind a channel identity, or create one."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.store.models import Contact, ContactIdentity


def find_contact(session: Session, kind: str, address: str) -> Contact | None:
    identity = _identity(session, kind, address)
    return identity.contact if identity else None


def _identity(session: Session, kind: str, address: str) -> ContactIdentity | None:
    return session.execute(
        select(ContactIdentity).where(
            ContactIdentity.kind == kind, ContactIdentity.address == address
        )
    ).scalar_one_or_none()


def resolve_contact(
    session: Session,
    kind: str,
    address: str,
    display_name: str | None,
    now: datetime,
    handle: str | None = None,
) -> Contact:
    """The contact for this identity, created (with the identity) when unknown."""
    contact = find_contact(session, kind, address)
    if contact is not None:
        return contact
    contact = Contact(
        full_name=display_name or address,
        email=address if kind == "email" else None,
        attributes={},
        created_at=now,
        updated_at=now,
    )
    identity = ContactIdentity(
        contact=contact,
        kind=kind,
        address=address,
        display_name=display_name,
        handle=handle,
        created_at=now,
    )
    try:
        # Another daemon may be creating the same sender right now; the unique
        # identity decides, and the loser uses the winner's contact.
        with session.begin_nested():
            session.add_all([contact, identity])
    except IntegrityError:
        existing = find_contact(session, kind, address)
        if existing is None:
            raise
        return existing
    return contact


def remember_names(
    session: Session, kind: str, address: str, display_name: str | None, handle: str | None
) -> None:
    """Keep an identity's display name and handle current: chat users rename themselves."""
    identity = _identity(session, kind, address)
    if identity is None:
        return
    if display_name and identity.display_name != display_name:
        identity.display_name = display_name
    if handle and identity.handle != handle:
        identity.handle = handle
