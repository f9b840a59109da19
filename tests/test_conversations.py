"""One conversation per contact and channel, within a configurable window; reply routes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from channels import chat
from ingest import replies
from ingest.journal import Delivery, Receipt
from ingest.rulescli import read_message
from ingest.store.models import Case, CaseState, StatusReason
from tests.harness import Harness, email
from tests.support import Database

OUR_NUMBER = "+14155550100"
SMS = {
    "conversation_window_hours": 24,
    "accounts": [
        {
            "name": "main",
            "provider": "twilio",
            "account_sid": "AC1",
            "auth_token": "token-0123",
            "numbers": [OUR_NUMBER],
        }
    ],
}


@pytest.fixture
def harness(database: Database) -> Iterator[Harness]:
    h = Harness(database.url, parsers=dict(chat.PARSERS), sms=SMS)
    try:
        yield h
    finally:
        h.close()


def text(h: Harness, sid: str, sender: str, body: str) -> Receipt:
    form = urlencode(
        {
            "MessageSid": sid,
            "From": sender,
            "To": OUR_NUMBER,
            "Body": body,
            "AccountSid": "AC1",
            "NumMedia": "0",
        }
    ).encode()
    meta = {"provider": "twilio", "account": "main", "from": sender, "to": OUR_NUMBER}
    [receipt] = h.journal.commit([Delivery("sms", sid, form, meta)])
    assert isinstance(receipt, Receipt)
    h.process()
    return receipt


def case_of(h: Harness, receipt: Receipt) -> Case:
    row = h.row(receipt.journal_id)
    assert row.case_number is not None, (row.outcome, row.last_error)
    return h.case(row.case_number)


def test_messages_within_the_window_continue_the_conversation(harness: Harness) -> None:
    h = harness
    ana, bob = "+4915112345678", "+4915187654321"
    first = case_of(h, text(h, "SM1", ana, "My internet is down"))
    h.advance(hours=23)
    again = text(h, "SM2", ana, "Still down")
    assert case_of(h, again).id == first.id
    assert h.row(again.journal_id).decided_by == "thread:conversation"
    other = case_of(h, text(h, "SM3", bob, "Hello"))
    assert other.id != first.id  # another contact, another conversation

    # 24 h after the last message on it, the conversation is over: the rules decide.
    h.advance(hours=24, seconds=1)
    later = text(h, "SM4", ana, "New problem: my bill")
    fresh = case_of(h, later)
    assert fresh.id != first.id
    assert fresh.previous_case_id is None
    assert h.row(later.journal_id).decided_by == "default: no record-creation rule matched"

    # An email from the same person is another channel: no conversation across channels.
    h.deliver(email(sender="Ana <ana@customer.example>", subject="Still down"))
    h.process()
    with h.store.read() as session:
        assert session.execute(select(Case).where(Case.origin == "email")).scalar_one()


def test_a_resolved_conversation_is_followed_by_a_linked_case(harness: Harness) -> None:
    h = harness
    ana = "+4915112345678"
    first = case_of(h, text(h, "SM1", ana, "Where is my parcel?"))
    with h.store.write() as session:
        case = session.get(Case, first.id)
        assert case is not None
        case.state, case.status_reason = CaseState.RESOLVED.value, StatusReason.PROBLEM_SOLVED.value
        case.resolved_at = h.clock.now()
    h.advance(hours=1)
    follow_up = case_of(h, text(h, "SM2", ana, "It arrived damaged"))
    assert follow_up.id != first.id
    assert follow_up.previous_case_id == first.id  # no reopening window in these rules


def test_reply_destination_is_the_latest_message_route(harness: Harness) -> None:
    h = harness
    ana = "+4915112345678"
    case = case_of(h, text(h, "SM1", ana, "Hello"))
    mail = h.deliver(email(sender="Bob <bob@customer.example>"))
    h.process()
    with h.store.read() as session:
        sms_case = session.get(Case, case.id)
        assert sms_case is not None
        found = replies.destination(session, sms_case)
        assert found is not None
        assert (found.channel, found.route.recipient, found.route.headers) == (
            "sms",
            ana,
            {"SMS-Account": "main", "SMS-From": OUR_NUMBER},
        )
        mail_case = session.execute(
            select(Case).where(Case.number == h.row(mail.journal_id).case_number)
        ).scalar_one()
        by_mail = replies.destination(session, mail_case)
        assert by_mail is not None
        assert (by_mail.channel, by_mail.route.recipient) == ("email", "bob@customer.example")


def test_rules_test_reads_channel_fields(tmp_path: Path) -> None:
    path = tmp_path / "telegram.json"
    path.write_text(
        json.dumps(
            {
                "channel": "telegram",
                "from": "4711",
                "text": "hi",
                "fields": {"telegram.chat_type": "group", "telegram.username": "ana"},
            }
        )
    )
    msg = read_message(path)
    assert (msg.identity_kind, msg.fields["telegram.chat_type"]) == ("telegram", "group")
