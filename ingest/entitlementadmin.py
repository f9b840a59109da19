"""Adding, importing, cancelling and showing entitlements (the `ingestd entitlements` tools).

One `EntitlementSpec` describes an entitlement the way a support lead writes
it, on the command line or in a YAML file; `create` checks it against the
store (the account must exist; a contact is created when its address is new)
and the configured SLA policies.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from ingest import identify
from ingest.entitlements import effective_state
from ingest.section import Section
from ingest.store.models import (
    Account,
    Case,
    Contact,
    Entitlement,
    EntitlementChannel,
    EntitlementContact,
    EntitlementState,
)

Channel = Literal["email", "telegram", "sms", "twitter"]


class EntitlementError(ValueError):
    """The entitlement cannot be created or changed; the message says why."""


class EntitlementSpec(Section):
    """An entitlement as written in `entitlements import FILE` (and by `entitlements add`)."""

    name: str = Field(min_length=1, max_length=200)
    account: str | None = Field(None, description="the account's name")
    contact: str | None = Field(None, description="the contact's email address")
    contacts: list[str] = Field(
        default_factory=list, description="narrow an account's entitlement to these addresses"
    )
    start: date
    end: date
    terms: int | None = Field(None, ge=0, description="cases allowed; none: unlimited")
    channels: dict[Channel, int | None] = Field(
        default_factory=dict, description="terms per channel; a channel left out gets none"
    )
    decrement_on: Literal["creation", "resolution"] = "creation"
    restrict: bool = Field(True, description="no new case once the terms are used up")
    sla: str | None = None
    default: bool = False
    state: Literal["Active", "Draft"] = "Active"

    @field_validator("contact", "contacts", mode="after")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_email(v) for v in value]
        return _email(value) if value is not None else None

    @field_validator("channels")
    @classmethod
    def _terms(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        for channel, terms in value.items():
            if terms is not None and terms < 0:
                raise ValueError(f"{channel}: terms cannot be negative")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EntitlementSpec:
        if (self.account is None) == (self.contact is None):
            raise ValueError("name the customer: either account or contact, not both")
        if self.contacts and self.account is None:
            raise ValueError("contacts narrow an account's entitlement: give account as well")
        if self.end < self.start:
            raise ValueError("end is before start")
        return self


def _email(value: str) -> str:
    address = value.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address):
        raise ValueError(f"{value!r} is not an email address")
    return address


def create(
    session: Session, spec: EntitlementSpec, now: datetime, sla_policies: Collection[str]
) -> tuple[Entitlement, list[str]]:
    """Add the entitlement; return it and notes (e.g. a contact that was created)."""
    notes: list[str] = []
    if spec.sla is not None and spec.sla not in sla_policies:
        known = ", ".join(sorted(sla_policies)) or "none are configured"
        raise EntitlementError(f"unknown SLA policy {spec.sla!r} (sla.policies: {known})")
    entitlement = Entitlement(
        name=spec.name,
        start_date=spec.start,
        end_date=spec.end,
        state=spec.state,
        total_terms=spec.terms,
        remaining_terms=spec.terms,
        decrement_on=spec.decrement_on,
        restrict=spec.restrict,
        sla=spec.sla,
        is_default=spec.default,
        created_at=now,
        updated_at=now,
    )
    if spec.account is not None:
        account = find_account(session, spec.account)
        entitlement.account_id = account.id
        for address in spec.contacts:
            contact = identify.find_contact(session, "email", address)
            if contact is None or contact.account_id != account.id:
                raise EntitlementError(
                    f"{address} is not a contact of account {account.name!r}: an account's "
                    "entitlement can only be narrowed to its own contacts"
                )
            entitlement.contacts.append(EntitlementContact(contact_id=contact.id))
    else:
        assert spec.contact is not None
        contact = identify.find_contact(session, "email", spec.contact)
        if contact is None:
            contact = identify.resolve_contact(session, "email", spec.contact, None, now)
            notes.append(f"contact {spec.contact} created")
        entitlement.contact_id = contact.id
    for channel, terms in spec.channels.items():
        entitlement.channels.append(
            EntitlementChannel(channel=channel, total_terms=terms, remaining_terms=terms)
        )
    session.add(entitlement)
    session.flush()
    return entitlement, notes


def exists(session: Session, spec: EntitlementSpec) -> Entitlement | None:
    """An entitlement with this name for this customer (a repeated import)."""
    query = select(Entitlement).where(Entitlement.name == spec.name)
    if spec.account is not None:
        account = find_account(session, spec.account)
        query = query.where(Entitlement.account_id == account.id)
    else:
        contact = identify.find_contact(session, "email", spec.contact or "")
        if contact is None:
            return None
        query = query.where(Entitlement.contact_id == contact.id)
    return session.execute(query.limit(1)).scalar_one_or_none()


def find_account(session: Session, name: str) -> Account:
    found = session.execute(
        select(Account).where(func.lower(Account.name) == name.strip().lower()).order_by(Account.id)
    ).scalars()
    accounts = list(found)
    if not accounts:
        raise EntitlementError(
            f"no account named {name!r}: accounts are kept in the database "
            "(see docs/rules.md#customer-data-that-rules-read)"
        )
    if len(accounts) > 1:
        raise EntitlementError(f"{len(accounts)} accounts are named {name!r}")
    return accounts[0]


def find(session: Session, ref: str) -> Entitlement:
    """An entitlement by its id or its name (which must then be unique)."""
    ref = ref.strip()
    if ref.isdigit():
        found = session.get(Entitlement, int(ref))
        if found is None:
            raise EntitlementError(f"no entitlement {ref}")
        return found
    matches = list(session.execute(select(Entitlement).where(Entitlement.name == ref)).scalars())
    if not matches:
        raise EntitlementError(f"no entitlement named {ref!r}")
    if len(matches) > 1:
        ids = ", ".join(str(e.id) for e in matches)
        raise EntitlementError(f"{len(matches)} entitlements are named {ref!r}: use an id ({ids})")
    return matches[0]


def cancel(entitlement: Entitlement, now: datetime) -> None:
    """No new case under it; the cases it already covers keep their SLA."""
    if entitlement.state == EntitlementState.CANCELLED.value:
        return
    entitlement.state, entitlement.updated_at = EntitlementState.CANCELLED.value, now


def activate(entitlement: Entitlement, now: datetime) -> None:
    if entitlement.state != EntitlementState.DRAFT.value:
        raise EntitlementError(
            f"entitlement {entitlement.id} is {entitlement.state}: only a draft is activated"
        )
    entitlement.state, entitlement.updated_at = EntitlementState.ACTIVE.value, now


def view(session: Session, entitlement: Entitlement, today: date) -> dict[str, Any]:
    account = session.get(Account, entitlement.account_id) if entitlement.account_id else None
    contact = session.get(Contact, entitlement.contact_id) if entitlement.contact_id else None
    narrowed = [
        c.email
        for c in session.execute(
            select(Contact)
            .join(EntitlementContact, EntitlementContact.contact_id == Contact.id)
            .where(EntitlementContact.entitlement_id == entitlement.id)
            .order_by(Contact.id)
        ).scalars()
    ]
    return {
        "id": entitlement.id,
        "name": entitlement.name,
        "customer": {
            "account": account.name if account else None,
            "contact": contact.email if contact else None,
        },
        "contacts": narrowed,
        "start": entitlement.start_date.isoformat(),
        "end": entitlement.end_date.isoformat(),
        "state": effective_state(entitlement, today),
        "terms": {"total": entitlement.total_terms, "remaining": entitlement.remaining_terms},
        "channels": [
            {"channel": c.channel, "total": c.total_terms, "remaining": c.remaining_terms}
            for c in sorted(entitlement.channels, key=lambda c: c.channel)
        ],
        "decrement_on": entitlement.decrement_on,
        "restrict": entitlement.restrict,
        "sla": entitlement.sla,
        "default": entitlement.is_default,
        "created_at": entitlement.created_at.isoformat(),
    }


def cases_of(session: Session, entitlement: Entitlement) -> list[dict[str, Any]]:
    return [
        {
            "number": c.number,
            "state": c.state,
            "channel": c.origin,
            "charged": c.entitlement_charged,
            "created_at": c.created_at.isoformat(),
        }
        for c in session.execute(
            select(Case).where(Case.entitlement_id == entitlement.id).order_by(Case.id)
        ).scalars()
    ]


def list_all(
    session: Session, today: date, *, state: str | None = None, customer: str | None = None
) -> list[dict[str, Any]]:
    query = select(Entitlement).options(selectinload(Entitlement.channels)).order_by(Entitlement.id)
    if customer:
        needle = f"%{customer.strip().lower()}%"
        query = (
            query.outerjoin(Account, Account.id == Entitlement.account_id)
            .outerjoin(Contact, Contact.id == Entitlement.contact_id)
            .where(
                or_(func.lower(Account.name).like(needle), func.lower(Contact.email).like(needle))
            )
        )
    views = [view(session, e, today) for e in session.execute(query).scalars()]
    return [v for v in views if state is None or v["state"] == state]
