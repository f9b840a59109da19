"""Read positions of polled sources (IMAP UIDs, Telegram offsets, X since_ids).

A poller advances its cursor only after the messages it covers are in the
journal; the journal's unique key absorbs the few re-read after a crash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ingest.store.models import ChannelCursor


def get(session: Session, name: str) -> dict[str, Any] | None:
    row = session.get(ChannelCursor, name)
    return dict(row.value) if row is not None else None


def put(session: Session, name: str, value: dict[str, Any], now: datetime) -> None:
    """Set the cursor in the caller's transaction."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(ChannelCursor).values(name=name, value=value, updated_at=now)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["name"], set_={"value": value, "updated_at": now}
        )
    )
