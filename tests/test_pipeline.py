"""Journal rows through the pipeline, step by step, on both stores."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from ingest.store.models import (
    Activity,
    Attachment,
    Blob,
    Case,
    CaseState,
    JournalEntry,
    Outcome,
    QueueItem,
    StatusReason,
)
from tests.harness import Harness, email
from tests.support import Database


@pytest.fixture
def h(database: Database) -> Iterator[Harness]:
    harness = Harness(database.url, pipeline={"max_attempts": 3, "retry_base_seconds": 60})
    try:
        yield harness
    finally:
        harness.close()


def test_new_message_creates_case_activity_and_queue_item(h: Harness) -> None:
    receipt = h.deliver(
        email(subject="Re: Cannot log in", sender="Bob Stone <Bob@Customer.Example>")
    )
    assert not receipt.duplicate
    assert h.process() == 1

    row = h.row(receipt.journal_id)
    assert row.outcome == Outcome.CREATED.value
    assert row.case_number is not None
    assert row.processed_at == h.clock.now()
    case = h.case(row.case_number)
    assert case.title == "Cannot log in"  # reply prefixes are not part of a title
    assert case.state == CaseState.ACTIVE.value
    assert case.status_reason == StatusReason.IN_PROGRESS.value
    assert case.queue is not None
    assert case.queue.name == "General Support"
    assert case.contact is not None
    assert case.contact.email == "bob@customer.example"
    assert case.contact.full_name == "Bob Stone"
    assert [a.journal_id for a in case.activities] == [receipt.journal_id]
    assert h.count(QueueItem) == 1


def test_case_numbers_follow_dynamics_format_and_increase(h: Harness) -> None:
    for i in range(3):
        h.deliver(email(subject=f"Problem {i}"))
    h.process()
    with h.store.read() as session:
        numbers = list(session.execute(select(Case.number).order_by(Case.id)).scalars())
    assert [n[:9] for n in numbers] == ["CAS-01000", "CAS-01001", "CAS-01002"]
    for number in numbers:
        assert len(number) == len("CAS-01000-K7Q2ZP")
        assert number[10:].isalnum()
        assert number[10:].upper() == number[10:]


def test_reply_threads_by_references_when_in_reply_to_is_unknown(h: Harness) -> None:
    h.deliver(email(message_id="<root@customer.example>"))
    h.process()
    reply = h.deliver(
        email(
            subject="Re: Cannot log in",
            in_reply_to="<unknown@elsewhere.example>",
            references="<root@customer.example> <unknown@elsewhere.example>",
        )
    )
    h.process()
    row = h.row(reply.journal_id)
    assert row.outcome == Outcome.APPENDED.value
    assert row.decided_by == "thread:references"
    assert h.count(Case) == 1


def test_subject_number_threads_only_for_participants(h: Harness) -> None:
    first = h.deliver(email())
    h.process()
    number = h.row(first.journal_id).case_number
    assert number

    own = h.deliver(email(subject=f"More on {number.lower()}"))
    stranger = h.deliver(email(subject=f"Re: [{number}] me too", sender="Eve <eve@other.example>"))
    h.process()
    assert h.row(own.journal_id).outcome == Outcome.APPENDED.value
    assert h.row(own.journal_id).case_number == number
    # Quoting someone else's case number does not put a stranger on that case.
    assert h.row(stranger.journal_id).outcome == Outcome.CREATED.value
    assert h.row(stranger.journal_id).case_number != number


def test_reply_to_resolved_case_opens_a_linked_case(h: Harness) -> None:
    first = h.deliver(email(message_id="<old@customer.example>"))
    h.process()
    number = h.row(first.journal_id).case_number
    with h.store.write() as session:
        case = session.execute(select(Case).where(Case.number == number)).scalar_one()
        case.state = CaseState.RESOLVED.value
        case.status_reason = StatusReason.PROBLEM_SOLVED.value
        old_id = case.id
    reply = h.deliver(email(in_reply_to="<old@customer.example>"))
    h.process()
    new = h.case(h.row(reply.journal_id).case_number or "")
    assert new.number != number
    assert new.previous_case_id == old_id


def test_reply_to_merged_case_lands_on_the_surviving_case(h: Harness) -> None:
    a = h.deliver(email(message_id="<a@customer.example>", subject="A"))
    b = h.deliver(email(message_id="<b@customer.example>", subject="B"))
    h.process()
    with h.store.write() as session:
        merged = session.execute(
            select(Case).where(Case.number == h.row(a.journal_id).case_number)
        ).scalar_one()
        survivor = session.execute(
            select(Case).where(Case.number == h.row(b.journal_id).case_number)
        ).scalar_one()
        merged.state = CaseState.CANCELLED.value
        merged.status_reason = StatusReason.MERGED.value
        merged.merged_into_id = survivor.id
        survivor_number = survivor.number
    reply = h.deliver(email(in_reply_to="<a@customer.example>"))
    h.process()
    assert h.row(reply.journal_id).case_number == survivor_number


def test_same_key_twice_is_one_row_with_the_first_outcome(h: Harness) -> None:
    msg = email()
    first = h.deliver(msg)
    h.process()
    again = h.deliver(msg)
    assert again.duplicate
    assert again.journal_id == first.journal_id
    assert again.outcome == Outcome.CREATED.value
    assert again.case_number == h.row(first.journal_id).case_number
    assert h.row(first.journal_id).duplicate_count == 1
    assert h.process() == 0
    assert h.count(Activity) == 1


def test_same_message_under_another_key_is_recorded_as_duplicate(h: Harness) -> None:
    msg = email(message_id="<same@customer.example>")
    first = h.deliver(msg)
    other = h.deliver(msg, key="imap:copy-of-same")
    h.process()
    row = h.row(other.journal_id)
    assert row.outcome == Outcome.DUPLICATE.value
    assert row.case_number == h.row(first.journal_id).case_number
    assert h.count(Activity) == 1


def test_failures_retry_with_backoff_then_become_dead_letters(h: Harness) -> None:
    good_before = h.deliver(email(subject="before"))
    bad = h.deliver(email(subject="poison"))
    good_after = h.deliver(email(subject="after"))
    with h.store.write() as session:
        row = session.get(JournalEntry, bad.journal_id)
        assert row is not None
        row.channel = "carrier-pigeon"  # no parser: fails every time
    h.process()
    # A poison message never blocks its neighbours.
    assert h.row(good_before.journal_id).outcome == Outcome.CREATED.value
    assert h.row(good_after.journal_id).outcome == Outcome.CREATED.value
    row = h.row(bad.journal_id)
    assert row.outcome == Outcome.FAILED.value
    assert row.attempts == 1
    assert "no parser for channel 'carrier-pigeon'" in (row.last_error or "")
    assert (row.next_attempt_at - h.clock.now()).total_seconds() == 60

    assert h.process() == 0  # not due yet
    h.advance(seconds=60)
    h.process()
    row = h.row(bad.journal_id)
    assert row.attempts == 2
    assert (row.next_attempt_at - h.clock.now()).total_seconds() == 120
    h.advance(seconds=120)
    h.process()
    row = h.row(bad.journal_id)
    assert row.outcome == Outcome.DEAD.value
    assert row.attempts == 3
    assert row.raw  # the bytes are kept with the error
    h.advance(days=1)
    assert h.process() == 0
    assert h.pipeline.backlog() == (0, 1)


def test_attachments_are_stored_once_by_content(h: Harness) -> None:
    for subject in ("one", "two"):
        msg = email(subject=subject)
        msg.add_attachment(
            b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="invoice.pdf"
        )
        h.deliver(msg)
    h.process()
    assert h.count(Attachment) == 2
    assert h.count(Blob) == 1
    with h.store.read() as session:
        attachment = session.execute(select(Attachment)).scalars().first()
        assert attachment is not None
        assert attachment.filename == "invoice.pdf"
        assert attachment.content_type == "application/pdf"
        assert attachment.size == len(b"%PDF-1.4 invoice")


def test_rows_left_by_a_crash_are_processed_later(h: Harness) -> None:
    receipts = [h.deliver(email(subject=f"backlog {i}")) for i in range(5)]
    # No pipeline ran: this is what a crash after the ack leaves behind.
    assert h.pipeline.backlog() == (5, 0)
    assert h.process() == 5
    assert {h.row(r.journal_id).outcome for r in receipts} == {Outcome.CREATED.value}


def test_two_workers_process_each_row_exactly_once(h: Harness) -> None:
    count = 120
    for i in range(count):
        h.deliver(email(subject=f"load {i}", sender=f"c{i % 7}@customer.example"))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            while h.pipeline.run_batch():
                pass
        except BaseException as exc:
            errors.append(exc)

    h.config = h.config.model_copy(
        update={"pipeline": h.config.pipeline.model_copy(update={"batch_size": 10})}
    )
    h.pipeline.config = h.config
    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    assert h.count(Activity) == count
    assert h.count(Case) == count
    with h.store.read() as session:
        outcomes = set(session.execute(select(JournalEntry.outcome)).scalars())
    assert outcomes == {Outcome.CREATED.value}
