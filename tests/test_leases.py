"""Cursors and leases on both stores: what pollers build on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ingest import cursors, leases
from ingest.clock import ManualClock
from ingest.config import DatabaseConfig
from ingest.store import Store
from tests.support import Database

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(database: Database) -> Iterator[Store]:
    store = Store(DatabaseConfig(url=database.url))
    store.migrate()
    yield store
    store.dispose()


def test_cursor_is_absent_then_set_then_replaced(store: Store) -> None:
    with store.read() as session:
        assert cursors.get(session, "imap:support/INBOX") is None
    with store.write() as session:
        cursors.put(session, "imap:support/INBOX", {"uidvalidity": 7, "uid": 41}, T0)
    with store.write() as session:
        cursors.put(session, "imap:support/INBOX", {"uidvalidity": 7, "uid": 42}, T0)
        cursors.put(session, "telegram:helpbot", {"offset": 1001}, T0)
    with store.read() as session:
        assert cursors.get(session, "imap:support/INBOX") == {"uidvalidity": 7, "uid": 42}
        assert cursors.get(session, "telegram:helpbot") == {"offset": 1001}


def test_cursor_write_rolls_back_with_its_transaction(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as session:
        cursors.put(session, "x:mentions", {"since_id": "5"}, T0)
        raise RuntimeError("the batch failed")
    with store.read() as session:
        assert cursors.get(session, "x:mentions") is None


def test_lease_is_exclusive_until_it_expires(store: Store) -> None:
    assert leases.acquire(store, "imap:a", "one", 10, T0)
    assert not leases.acquire(store, "imap:a", "two", 10, T0 + timedelta(seconds=9))
    assert leases.acquire(store, "imap:a", "one", 10, T0 + timedelta(seconds=9))  # renewal
    # The renewal moved the expiry: still held at T0 + 18 s.
    assert not leases.acquire(store, "imap:a", "two", 10, T0 + timedelta(seconds=18))
    assert leases.acquire(store, "imap:a", "two", 10, T0 + timedelta(seconds=19))
    assert not leases.acquire(store, "imap:a", "one", 10, T0 + timedelta(seconds=20))
    assert leases.acquire(store, "imap:b", "one", 10, T0)  # another name is independent


def test_released_lease_is_free_at_once(store: Store) -> None:
    assert leases.acquire(store, "telegram:bot", "one", 60, T0)
    leases.release(store, "telegram:bot", "two", T0)  # not the holder: no effect
    assert not leases.acquire(store, "telegram:bot", "two", 60, T0 + timedelta(seconds=1))
    leases.release(store, "telegram:bot", "one", T0 + timedelta(seconds=1))
    assert leases.acquire(store, "telegram:bot", "two", 60, T0 + timedelta(seconds=1))


def test_leased_work_runs_in_one_holder_and_moves_when_it_stops(store: Store) -> None:
    running: list[str] = []

    def worker(name: str) -> leases.LeasedWork:
        async def work() -> None:
            running.append(name)
            try:
                await asyncio.Event().wait()
            finally:
                running.remove(name)

        return leases.LeasedWork(store, "x:acct", work, ttl=0.6, holder=name)

    async def scenario() -> None:
        first_stop, second_stop = asyncio.Event(), asyncio.Event()
        first, second = worker("first"), worker("second")
        t1 = asyncio.create_task(first.run(first_stop))
        await asyncio.sleep(0.3)
        t2 = asyncio.create_task(second.run(second_stop))
        await asyncio.sleep(1.0)
        assert running == ["first"]
        assert first.held
        assert not second.held
        first_stop.set()  # a clean stop releases the lease: no wait for expiry
        await t1
        await asyncio.sleep(0.5)
        assert running == ["second"]
        second_stop.set()
        await t2
        assert running == []

    asyncio.run(scenario())


def test_leased_work_stops_when_another_holder_took_the_lease(store: Store) -> None:
    clock = ManualClock(datetime.now(UTC))
    started = 0

    async def work() -> None:
        nonlocal started
        started += 1
        await asyncio.Event().wait()

    async def scenario() -> None:
        stop = asyncio.Event()
        leased = leases.LeasedWork(store, "imap:c", work, ttl=0.3, clock=clock, holder="me")
        task = asyncio.create_task(leased.run(stop))
        await asyncio.sleep(0.2)
        assert leased.held
        assert started == 1
        # A daemon whose clock says our lease ran out takes it over.
        later = clock.now() + timedelta(seconds=5)
        assert await asyncio.to_thread(leases.acquire, store, "imap:c", "other", 30, later)
        await asyncio.sleep(0.3)
        assert not leased.held
        stop.set()
        await task

    asyncio.run(scenario())
