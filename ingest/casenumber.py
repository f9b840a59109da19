"""Case numbers as Dynamics writes them: CAS-01000-K7Q2ZP."""

from __future__ import annotations

import re
import secrets
import string

from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.store.models import Sequence

FIRST = 1000
PATTERN = re.compile(r"\bCAS-\d{5,}-[A-Z0-9]{6}\b", re.IGNORECASE)
# No 0/O or 1/I: case numbers are read out over the phone.
_ALPHABET = "".join(c for c in string.ascii_uppercase + string.digits if c not in "0O1I")


def format_number(sequence: int, suffix: str) -> str:
    return f"CAS-{sequence:05d}-{suffix}"


def next_number(session: Session) -> str:
    """The next case number.

    PostgreSQL takes it from a sequence, so concurrent daemons never wait on
    each other for it (a rolled-back case leaves a gap, as in Dynamics). SQLite
    has one writer at a time anyway and counts in the sequences table.
    """
    if session.get_bind().dialect.name == "postgresql":
        drawn = int(session.execute(text("SELECT nextval('case_number_seq')")).scalar_one())
        return format_number(drawn, _suffix())
    value = _take(session)
    if value is None:
        try:
            with session.begin_nested():
                session.add(Sequence(name="case", next_value=FIRST))
        except IntegrityError:
            pass  # another transaction created it first
        value = _take(session)
        assert value is not None
    return format_number(value, _suffix())


def _suffix() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(6))


def _take(session: Session) -> int | None:
    bumped = session.execute(
        update(Sequence)
        .where(Sequence.name == "case")
        .values(next_value=Sequence.next_value + 1)
        .returning(Sequence.next_value)
    ).scalar_one_or_none()
    return None if bumped is None else bumped - 1


def find_in(text: str) -> list[str]:
    return [m.upper() for m in PATTERN.findall(text or "")]
