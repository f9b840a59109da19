"""Dead letters: journal rows that could not be processed, kept with their raw bytes and error.

A row becomes a dead letter (outcome `dead`) when its retries are used up,
or at once when the channel's parser fails on it (the same bytes would fail
the same way five times). An operator can then look at it, put it back for
processing (after a fix: `retry`, which gives it a fresh set of attempts and
counts the requeue), or retire it (`drop`: outcome `dropped`, the raw bytes
and the error stay for audit). Nothing here deletes a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.parser import BytesHeaderParser
from typing import Any, cast

from sqlalchemy import CursorResult, Select, func, select, update
from sqlalchemy.orm import Session

from ingest.store.models import JournalEntry, Outcome

KEY_HEADERS = ("From", "To", "Subject", "Date", "Message-ID")


@dataclass(frozen=True)
class Filter:
    """Which dead letters a command means; every field narrows the selection."""

    ids: tuple[int, ...] = ()
    channel: str | None = None
    error: str | None = None  # a case-insensitive piece of the error
    since: datetime | None = None  # received at or after
    dropped: bool = False  # the retired ones instead of the dead ones

    def apply(self, query: Select[Any]) -> Select[Any]:
        outcome = Outcome.DROPPED if self.dropped else Outcome.DEAD
        query = query.where(JournalEntry.outcome == outcome.value)
        if self.ids:
            query = query.where(JournalEntry.id.in_(self.ids))
        if self.channel:
            query = query.where(JournalEntry.channel == self.channel)
        if self.error:
            query = query.where(
                func.lower(JournalEntry.last_error).contains(self.error.lower(), autoescape=True)
            )
        if self.since:
            query = query.where(JournalEntry.received_at >= self.since)
        return query


def find(session: Session, which: Filter, limit: int = 50, offset: int = 0) -> list[JournalEntry]:
    query = which.apply(select(JournalEntry)).order_by(JournalEntry.id.desc())
    return list(session.execute(query.limit(limit).offset(offset)).scalars())


def get(session: Session, journal_id: int) -> JournalEntry | None:
    row = session.get(JournalEntry, journal_id)
    if row is None or row.outcome not in (Outcome.DEAD.value, Outcome.DROPPED.value):
        return None
    return row


def retry(session: Session, which: Filter, now: datetime) -> list[int]:
    """Put matching dead letters (or, with `dropped`, retired ones) back for processing."""
    ids = [row.id for row in session.execute(which.apply(select(JournalEntry.id)))]
    if not ids:
        return []
    session.execute(
        update(JournalEntry)
        .where(
            JournalEntry.id.in_(ids),
            JournalEntry.outcome.in_([Outcome.DEAD.value, Outcome.DROPPED.value]),
        )
        .values(
            outcome=Outcome.PENDING.value,
            next_attempt_at=now,
            attempts=0,
            requeues=JournalEntry.requeues + 1,
        )
        .execution_options(synchronize_session=False)
    )
    return sorted(ids)


def drop(session: Session, journal_id: int, reason: str, now: datetime) -> bool:
    """Retire one dead letter; its bytes and error stay. False if it is not a dead letter."""
    result = cast(
        "CursorResult[Any]",
        session.execute(
            update(JournalEntry)
            .where(JournalEntry.id == journal_id, JournalEntry.outcome == Outcome.DEAD.value)
            .values(
                outcome=Outcome.DROPPED.value, reason=f"dropped: {reason}"[:2000], processed_at=now
            )
            .execution_options(synchronize_session=False)
        ),
    )
    return result.rowcount == 1


def key_headers(row: JournalEntry) -> dict[str, str]:
    """From, To, Subject, Date and Message-ID of an email, read without trusting the rest."""
    if row.channel != "email":
        return {}
    raw = row.raw
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw if end < 0 else raw[: end + 2]
    try:
        headers = BytesHeaderParser(policy=policy.default).parsebytes(head[: 256 * 1024])
    except Exception:  # a header block even the lenient parser refuses
        return {}
    out: dict[str, str] = {}
    for name in KEY_HEADERS:
        try:
            value = headers.get(name)
        except Exception:
            value = None
        if value is not None:
            out[name] = " ".join(str(value).split())[:500]
    return out


def view(row: JournalEntry, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row.id,
        "channel": row.channel,
        "external_id": row.external_id,
        "received_at": row.received_at.isoformat(),
        "outcome": row.outcome,
        "attempts": row.attempts,
        "requeues": row.requeues,
        "error": row.last_error,
        "size": len(row.raw),
        "headers": key_headers(row),
    }
    if full:
        data["reason"] = row.reason
        data["meta"] = row.meta
        data["processed_at"] = row.processed_at.isoformat() if row.processed_at else None
    return data
