"""The store on SQLite and PostgreSQL: migrations, types, constraints, outage behaviour."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ingest.config import DatabaseConfig
from ingest.store import Store, StoreUnavailable
from ingest.store.migrate import alembic_config, current
from ingest.store.models import Base, Contact, ContactIdentity, JournalEntry
from tests.support import Database


@pytest.fixture
def store(database: Database) -> Iterator[Store]:
    s = Store(DatabaseConfig(url=database.url, busy_timeout=0.3, connect_timeout=2))
    s.migrate()
    try:
        yield s
    finally:
        s.dispose()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def test_migrations_produce_exactly_the_models(store: Store) -> None:
    assert current(store.write_engine) == head_revision()
    with store.write_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrate_is_idempotent(store: Store) -> None:
    store.migrate()
    store.migrate()
    assert current(store.write_engine) == head_revision()


def test_times_are_stored_as_utc_and_read_back_aware(store: Store) -> None:
    cet = timezone(timedelta(hours=1))
    local = datetime(2026, 3, 29, 2, 30, tzinfo=cet)
    with store.write() as session:
        contact = Contact(full_name="T", attributes={}, created_at=local, updated_at=local)
        session.add(contact)
        session.flush()
        contact_id = contact.id
    with store.read() as session:
        loaded = session.get(Contact, contact_id)
        assert loaded is not None
        assert loaded.created_at.tzinfo is UTC
        assert loaded.created_at == local
        assert loaded.created_at.hour == 1


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(Exception, match="naive datetime"), store.write() as session:
        session.add(
            Contact(
                full_name="T",
                attributes={},
                created_at=datetime(2026, 1, 1),
                updated_at=datetime(2026, 1, 1),
            )
        )
        session.flush()


def test_identity_is_unique_per_channel_kind(store: Store) -> None:
    now = datetime.now(UTC)
    with store.write() as session:
        contact = Contact(full_name="A", attributes={}, created_at=now, updated_at=now)
        session.add(contact)
        session.add(
            ContactIdentity(contact=contact, kind="email", address="a@x.example", created_at=now)
        )
        session.add(
            ContactIdentity(contact=contact, kind="phone", address="a@x.example", created_at=now)
        )
    with pytest.raises(IntegrityError), store.write() as session:
        other = Contact(full_name="B", attributes={}, created_at=now, updated_at=now)
        session.add(
            ContactIdentity(contact=other, kind="email", address="a@x.example", created_at=now)
        )


def test_journal_key_is_unique(store: Store) -> None:
    now = datetime.now(UTC)

    def entry() -> JournalEntry:
        return JournalEntry(
            channel="email",
            external_id="k@x",
            raw=b"x",
            meta={},
            received_at=now,
            next_attempt_at=now,
        )

    with store.write() as session:
        session.add(entry())
    with pytest.raises(IntegrityError), store.write() as session:
        session.add(entry())
    with store.read() as session:
        assert len(session.execute(select(JournalEntry)).all()) == 1


def test_an_unreachable_store_raises_store_unavailable(database: Database, store: Store) -> None:
    store.ping()
    with database.outage(), pytest.raises(StoreUnavailable), store.write() as session:
        session.add(
            JournalEntry(
                channel="email",
                external_id="during-outage",
                raw=b"x",
                meta={},
                received_at=datetime.now(UTC),
                next_attempt_at=datetime.now(UTC),
            )
        )
    store.ping()  # and it recovers by itself afterwards
    with store.write() as session:
        assert session.execute(select(JournalEntry)).first() is None
