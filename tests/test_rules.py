"""The rules engine in-process: conditions, validation, templates, the guard, hot reload,
decisions on both stores, and `ingestd rules check/test` as real commands."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from channels import mime
from ingest import config as config_module
from ingest import guard, intake, ruleset
from ingest.calendars import Calendar, CalendarConfig
from ingest.conditions import (
    FIELDS,
    CalendarLike,
    ConditionParser,
    Facts,
    Node,
    Scope,
    compile_first_match,
)
from ingest.config import Config, DatabaseConfig
from ingest.message import InboundAttachment, InboundMessage
from ingest.ruleset import RuleBook, Settings
from ingest.rulewatch import RuleWatcher, settings_for
from ingest.store import Store
from ingest.store.models import (
    Account,
    Case,
    CaseState,
    Contact,
    ContactIdentity,
    Entitlement,
    Outcome,
    StatusReason,
)
from ingest.templating import RenderError, Templates, compile_expression
from ingest.yamlsource import Problem, SourceError
from tests.harness import Harness, email
from tests.support import REPO, Database

NOW = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)  # a Wednesday, 15:00 UTC
QUEUES = ("General Support", "Gold Support", "Billing")
SETTINGS = Settings(queues=QUEUES, calendars=("Standard",))
STANDARD = {
    "timezone": "Europe/London",
    "hours": {day: ["09:00-12:30", "13:30-17:30"] for day in ("mon", "tue", "wed", "thu", "fri")},
    "holidays": ["2026-12-25"],
}
ACK = """\
Subject: [{{ case.number }}] We have your message: {{ case.title }}

Hello {{ customer.name }},
your request is case {{ case.number }}.
"""


# -- building blocks ------------------------------------------------------------------


def message(**fields: Any) -> InboundMessage:
    values: dict[str, Any] = {
        "channel": "email",
        "external_id": "test-1",
        "identity_kind": "email",
        "sender": "bob@customer.example",
        "sender_name": "Bob Stone",
        "recipients": ["support@example.com"],
        "subject": "Cannot log in",
        "text": "My password stopped working.",
    }
    values.update(fields)
    return InboundMessage(**values)


def customer() -> Contact:
    """A contact without a tier of its own, in a Gold account; both have custom fields."""
    account = Account(
        name="Customer Ltd",
        tier="Gold",
        attributes={"region": "APAC", "seats": 250, "plan": "Enterprise"},
    )
    return Contact(
        full_name="Ann Lee",
        email="ann.lee@customer.example",
        tier=None,
        attributes={"region": "EMEA", "vip": True, "tags": ["beta", "vip"]},
        account=account,
    )


def rich() -> InboundMessage:
    return message(
        sender="Ann.Lee@Customer.Example",  # as typed: conditions must not care about case
        sender_name="Ann Lee",
        recipients=["support@example.com", "Billing@Example.com"],
        subject="Refund for Invoice 4711",
        text="Please refund invoice number 4711.\nThanks",
        attachments=[
            InboundAttachment("invoice-4711.PDF", "application/pdf", b"%PDF"),
            InboundAttachment("photo.jpg", "image/jpeg", b"\xff\xd8"),
            InboundAttachment(None, "text/plain", b"unnamed"),
        ],
        headers={"x-priority": "1 (Highest)", "x-mailer": "Thunderbird 115"},
        language="de",
    )


def facts(
    msg: InboundMessage | None = None,
    *,
    now: datetime = NOW,
    zone: str = "UTC",
    contact: Contact | None = None,
    entitled: bool = False,
    calendars: dict[str, CalendarLike] | None = None,
    case: dict[str, Any] | None = None,
) -> Facts:
    return Facts(
        msg or message(),
        now=now,
        zone=ZoneInfo(zone),
        contact=contact,
        entitled=lambda: entitled,
        calendars=calendars,
        case=case,
    )


def parse_condition(
    when: Any, scope: Scope = "record_creation", calendars: Sequence[str] = ("Standard",)
) -> tuple[Node, list[tuple[tuple[str | int, ...], str]]]:
    problems: list[tuple[tuple[str | int, ...], str]] = []
    node = ConditionParser(scope, calendars, lambda loc, msg: problems.append((loc, msg))).parse(
        when, ()
    )
    return node, problems


def condition(when: Any, scope: Scope = "record_creation") -> Node:
    node, problems = parse_condition(when, scope)
    assert problems == []
    return node


def problems_of(when: Any, scope: Scope = "record_creation") -> list[str]:
    return [f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in parse_condition(when, scope)[1]]


def standard_calendar() -> Calendar:
    return Calendar(CalendarConfig.model_validate(STANDARD), name="Standard")


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def load_dir(
    rules: Mapping[str, str],
    tmp_path: Path,
    templates: Mapping[str, str] | None = None,
    settings: Settings = SETTINGS,
) -> RuleBook:
    write_tree(tmp_path / "rules", rules)
    write_tree(tmp_path / "templates", templates if templates is not None else {"ack.txt": ACK})
    return ruleset.load(tmp_path / "rules", tmp_path / "templates", settings)


def load_problems(
    rules: Mapping[str, str],
    tmp_path: Path,
    templates: Mapping[str, str] | None = None,
) -> list[Problem]:
    with pytest.raises(SourceError) as error:
        load_dir(rules, tmp_path, templates)
    return error.value.problems


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing `needle` in dedented `text`."""
    for number, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the text")


# -- operators on every field type ------------------------------------------------------

OPERATOR_CASES: list[tuple[dict[str, Any] | None, bool]] = [
    # text: shorthand, every operator, case-insensitive unless told otherwise
    ({"message.subject": "refund for invoice 4711"}, True),
    ({"message.subject": "Refund"}, False),
    ({"message.subject": {"equals": "REFUND FOR INVOICE 4711"}}, True),
    ({"message.subject": {"not_equals": "refund for invoice 4711"}}, False),
    ({"message.subject": {"not_equals": "hello"}}, True),
    ({"message.subject": ["hello", "REFUND for invoice 4711"]}, True),
    ({"message.subject": {"in": ["hello", "world"]}}, False),
    ({"message.subject": {"not_in": ["hello", "world"]}}, True),
    ({"message.subject": {"not_in": ["Refund for invoice 4711"]}}, False),
    ({"message.subject": {"contains": "INVOICE"}}, True),
    ({"message.subject": {"contains": ["payment", "invoice"]}}, True),
    ({"message.subject": {"contains": ["payment", "charged"]}}, False),
    ({"message.subject": {"contains": 4711}}, True),
    ({"message.subject": {"not_contains": "invoice"}}, False),
    ({"message.subject": {"not_contains": "payment"}}, True),
    ({"message.subject": {"starts_with": "refund"}}, True),
    ({"message.subject": {"starts_with": ["re:", "fw:"]}}, False),
    ({"message.subject": {"ends_with": "4711"}}, True),
    ({"message.subject": {"ends_with": "4712"}}, False),
    ({"message.subject": {"matches": r"invoice\s+\d{4}$"}}, True),
    ({"message.subject": {"matches": r"^invoice"}}, False),
    ({"message.subject": {"exists": True}}, True),
    ({"message.subject": {"exists": False}}, False),
    ({"message.text": {"matches": r"\b(invoice|refund)\s+(no\.?|number|#)\s*\d+"}}, True),
    ({"message.text": {"contains": "THANKS"}}, True),
    ({"message.channel": "email"}, True),
    ({"message.channel": {"not_in": ["sms", "telegram"]}}, True),
    ({"message.language": "DE"}, True),
    ({"message.language": {"in": ["fr", "es"]}}, False),
    ({"message.from_name": {"starts_with": "ann"}}, True),
    # addresses and domains ignore case, both in the rule and in the message
    ({"message.from": "ann.lee@customer.example"}, True),
    ({"message.from": {"equals": "ANN.LEE@CUSTOMER.EXAMPLE"}}, True),
    ({"message.from_domain": "customer.example"}, True),
    ({"message.from_domain": "CUSTOMER.example"}, True),
    ({"message.from_domain": {"ends_with": ".example"}}, True),
    ({"message.from_domain": "example"}, False),
    # case_sensitive: true
    ({"message.subject": {"equals": "refund for invoice 4711", "case_sensitive": True}}, False),
    ({"message.subject": {"equals": "Refund for Invoice 4711", "case_sensitive": True}}, True),
    ({"message.subject": {"contains": "invoice", "case_sensitive": True}}, False),
    ({"message.subject": {"in": ["REFUND FOR INVOICE 4711"], "case_sensitive": True}}, False),
    ({"message.subject": {"matches": r"Invoice \d+", "case_sensitive": True}}, True),
    ({"message.subject": {"matches": r"invoice \d+", "case_sensitive": True}}, False),
    ({"message.from_domain": {"equals": "CUSTOMER.EXAMPLE", "case_sensitive": True}}, False),
    ({"message.from_domain": {"equals": "Customer.Example", "case_sensitive": True}}, True),
    # list of text: any element holds; a negation holds when no element does
    ({"message.to": "billing@example.com"}, True),
    ({"message.to": "sales@example.com"}, False),
    ({"message.to": {"not_equals": "sales@example.com"}}, True),
    ({"message.to": {"not_equals": "support@example.com"}}, False),
    ({"message.to": {"in": ["sales@example.com", "BILLING@example.com"]}}, True),
    ({"message.to": {"not_in": ["sales@example.com", "billing@example.com"]}}, False),
    ({"message.to": {"not_in": ["sales@example.com", "info@example.com"]}}, True),
    ({"message.to": {"contains": "billing"}}, True),
    ({"message.to": {"not_contains": "billing"}}, False),
    ({"message.to": {"not_contains": "sales"}}, True),
    ({"message.to": {"starts_with": "support@"}}, True),
    ({"message.to": {"ends_with": "@example.org"}}, False),
    ({"message.to": {"matches": "^bill"}}, True),
    ({"message.to": {"exists": True}}, True),
    ({"message.attachment_names": "photo.jpg"}, True),
    ({"message.attachment_names": {"ends_with": ".pdf"}}, True),
    ({"message.attachment_names": {"ends_with": ".pdf", "case_sensitive": True}}, False),
    ({"message.attachment_names": {"matches": r"^invoice-\d+\.pdf$"}}, True),
    ({"message.attachment_names": {"not_contains": ".exe"}}, True),
    ({"message.attachment_names": {"not_contains": ".jpg"}}, False),
    # numbers
    ({"message.attachment_count": 3}, True),
    ({"message.attachment_count": {"equals": 2}}, False),
    ({"message.attachment_count": {"not_equals": 3}}, False),
    ({"message.attachment_count": [0, 1]}, False),
    ({"message.attachment_count": {"in": [1, 3]}}, True),
    ({"message.attachment_count": {"not_in": [0, 1]}}, True),
    ({"message.attachment_count": {"gt": 2}}, True),
    ({"message.attachment_count": {"gt": 3}}, False),
    ({"message.attachment_count": {"gt": 2.5}}, True),
    ({"message.attachment_count": {"gte": 3}}, True),
    ({"message.attachment_count": {"lt": 3}}, False),
    ({"message.attachment_count": {"lte": 3}}, True),
    ({"message.attachment_count": {"gte": 1, "lt": 5}}, True),  # two operators: both
    ({"message.attachment_count": {"gte": 1, "lt": 3}}, False),
    ({"message.attachment_count": {"exists": True}}, True),
    ({"time.hour": 15}, True),
    ({"time.hour": {"gte": 9, "lt": 17}}, True),
    ({"time.hour": {"lt": 9}}, False),
    # flags
    ({"message.auto_reply": False}, True),
    ({"message.auto_reply": {"equals": True}}, False),
    ({"message.bounce": {"not_equals": True}}, True),
    ({"message.noreply": False}, True),
    ({"message.is_reply": True}, False),
    ({"customer.known": True}, True),
    ({"customer.known": {"not_equals": True}}, False),
    ({"customer.has_entitlement": True}, True),
    ({"customer.known": {"exists": True}}, True),
    # weekdays, by short or long name, any case
    ({"time.weekday": "wed"}, True),
    ({"time.weekday": "Wednesday"}, True),
    ({"time.weekday": "WED"}, True),
    ({"time.weekday": "thu"}, False),
    ({"time.weekday": {"not_equals": "wed"}}, False),
    ({"time.weekday": ["sat", "sun"]}, False),
    ({"time.weekday": {"in": ["mon", "Wednesday"]}}, True),
    ({"time.weekday": {"not_in": ["saturday", "sun"]}}, True),
    # the customer: a tier of its own, else its account's
    ({"customer.tier": "gold"}, True),
    ({"customer.tier": {"in": ["silver", "bronze"]}}, False),
    ({"customer.account_tier": {"in": ["gold", "platinum"]}}, True),
    ({"customer.account": {"contains": "customer"}}, True),
    ({"customer.name": "ann lee"}, True),
    ({"customer.email": {"ends_with": "@CUSTOMER.example"}}, True),
    # headers: any name, read case-insensitively
    ({"message.header.x-priority": {"starts_with": "1"}}, True),
    ({"message.header.X-Priority": {"contains": "HIGHEST"}}, True),
    ({"message.header.x-mailer": {"matches": "^thunderbird"}}, True),
    ({"message.header.x-spam-flag": {"exists": False}}, True),
    ({"message.header.x-spam-flag": "yes"}, False),
    ({"message.header.x-spam-flag": {"not_equals": "yes"}}, True),
    # custom attributes: the contact's, else its account's, of any JSON type
    ({"customer.attribute.region": "emea"}, True),
    ({"customer.attribute.region": "APAC"}, False),  # the contact's own value wins
    ({"customer.attribute.plan": "enterprise"}, True),  # from the account
    ({"customer.attribute.plan": {"equals": "enterprise", "case_sensitive": True}}, False),
    ({"customer.attribute.plan": {"not_equals": "basic"}}, True),
    ({"customer.attribute.plan": {"contains": "PRISE"}}, True),
    ({"customer.attribute.plan": {"not_contains": "basic"}}, True),
    ({"customer.attribute.plan": {"starts_with": "ent"}}, True),
    ({"customer.attribute.plan": {"ends_with": "prise"}}, True),
    ({"customer.attribute.plan": {"matches": "^enter.*e$"}}, True),
    ({"customer.attribute.plan": {"in": ["basic", "ENTERPRISE"]}}, True),
    ({"customer.attribute.plan": {"not_in": ["basic", "pro"]}}, True),
    ({"customer.attribute.seats": 250}, True),
    ({"customer.attribute.seats": "250"}, False),  # text is not a number
    ({"customer.attribute.seats": {"not_equals": 250}}, False),
    ({"customer.attribute.seats": [100, 250]}, True),
    ({"customer.attribute.seats": {"not_in": [100, 250]}}, False),
    ({"customer.attribute.seats": {"gt": 100}}, True),
    ({"customer.attribute.seats": {"gte": 251}}, False),
    ({"customer.attribute.seats": {"lt": 1000}}, True),
    ({"customer.attribute.seats": {"lte": 249.5}}, False),
    ({"customer.attribute.plan": {"gt": 1}}, False),  # text is never greater than a number
    ({"customer.attribute.vip": True}, True),
    ({"customer.attribute.churn_risk": {"exists": False}}, True),
    ({"customer.attribute.churn_risk": {"exists": True}}, False),
    # a list value (JSON) is no single value: no match, and above all no crash
    ({"customer.attribute.tags": ["vip", "beta"]}, False),
    # all / any / not, nested; several keys in one mapping mean all of them
    ({"message.channel": "email", "customer.tier": "silver"}, False),
    ({"message.channel": "email", "customer.tier": "gold"}, True),
    (
        {
            "all": [
                {"message.subject": {"contains": "refund"}},
                {"any": [{"customer.tier": "silver"}, {"message.attachment_count": {"gte": 1}}]},
            ]
        },
        True,
    ),
    (
        {
            "any": [
                {"not": {"message.channel": "email"}},
                {"all": [{"time.weekday": "wed"}, {"not": {"time.hour": {"lt": 12}}}]},
            ]
        },
        True,
    ),
    ({"not": {"any": [{"message.auto_reply": True}, {"message.bounce": True}]}}, True),
    ({"not": {"message.subject": {"contains": "refund"}}}, False),
    ({"any": [{"message.channel": "sms"}, {"message.channel": "telegram"}]}, False),
    ({"all": [{"message.channel": "email"}, {"not": {"not": {"customer.known": True}}}]}, True),
    ({}, True),
    (None, True),
]


def verdicts(node: Node, make: Callable[[], Facts]) -> tuple[bool, bool, bool]:
    """The condition as the daemon runs it (code generated for a rule list), as its
    closure, and as explain() tells it (`rules test`): the three must agree."""
    generated = compile_first_match([(node, "hit")])(make()) == "hit"
    return generated, node.test(make()), node.explain(make()) is None


@pytest.mark.parametrize(("when", "expected"), OPERATOR_CASES, ids=lambda v: repr(v)[:70])
def test_operator(when: dict[str, Any] | None, expected: bool) -> None:
    node = condition(when)
    assert verdicts(node, lambda: facts(rich(), contact=customer(), entitled=True)) == (
        expected,
        expected,
        expected,
    )


MISSING_CASES: list[tuple[dict[str, Any], bool]] = [
    # A missing value (no language, no display name, no such header, no customer)
    # holds no text: not even an operand or a pattern that matches "".
    ({"message.language": {"matches": "^(?!de)"}}, False),
    ({"message.language": {"matches": "^$"}}, False),
    ({"message.language": {"matches": "."}}, False),
    ({"message.header.x-priority": {"matches": "^[^1]*$"}}, False),
    ({"message.header.x-priority": {"starts_with": "1"}}, False),
    ({"message.from_name": {"contains": ""}}, False),
    ({"message.from_name": {"not_contains": ""}}, True),
    ({"message.from_name": {"starts_with": ["", "x"]}}, False),
    ({"message.from_name": {"ends_with": ""}}, False),
    ({"message.language": {"equals": "de"}}, False),
    ({"message.language": {"not_equals": "de"}}, True),
    ({"message.language": {"in": ["de", "en"]}}, False),
    ({"message.language": {"not_in": ["de", "en"]}}, True),
    ({"message.language": {"contains": "d"}}, False),
    ({"message.language": {"not_contains": "d"}}, True),
    ({"message.language": {"exists": False}}, True),
    ({"customer.tier": {"in": ["gold"]}}, False),
    ({"customer.tier": {"not_equals": "gold"}}, True),
    ({"customer.attribute.plan": {"matches": ".*"}}, False),
    ({"message.to": {"matches": ".*"}}, False),  # no recipients at all
    ({"message.to": {"not_equals": "x@example.com"}}, True),
]


@pytest.mark.parametrize(("when", "expected"), MISSING_CASES, ids=lambda v: repr(v)[:70])
def test_operator_on_a_missing_value(when: dict[str, Any], expected: bool) -> None:
    node = condition(when)
    bare = message(sender_name=None, language=None, headers={}, recipients=[])
    assert verdicts(node, lambda: facts(bare)) == (expected, expected, expected)


def chat_message(channel: str, fields: dict[str, Any]) -> InboundMessage:
    return message(channel=channel, sender="4711", sender_name="Ann Lee", fields=fields)


TELEGRAM_FIELDS = {
    "telegram.chat_type": "private",
    "telegram.username": "ann_lee",
    "telegram.bot": "acme_support_bot",
    "telegram.edited": False,
    "telegram.command": "help",
    "telegram.chat_title": None,
    "telegram.is_bot": False,
}
SMS_FIELDS = {
    "sms.to": "+14155550100",
    "sms.from_country": "DE",
    "sms.provider": "twilio",
    "sms.account": "main",
    "sms.media_count": 2,
    "sms.segments": 1,
    "sms.messaging_service": "MG0123",
    "sms.opt_out": None,
}
TWITTER_FIELDS = {
    "twitter.kind": "mention",
    "twitter.lang": "en",
    "twitter.username": "AnnLee",
    "twitter.account": "acme",
    "twitter.conversation_id": "1800",
    "twitter.is_reply": True,
    "twitter.verified": False,
}
CHANNEL_CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("telegram", TELEGRAM_FIELDS, {"telegram.chat_type": "private"}, True),
    ("telegram", TELEGRAM_FIELDS, {"telegram.chat_type": {"in": ["group", "supergroup"]}}, False),
    ("telegram", TELEGRAM_FIELDS, {"telegram.username": {"starts_with": "ANN"}}, True),
    ("telegram", TELEGRAM_FIELDS, {"telegram.bot": "acme_support_bot"}, True),
    ("telegram", TELEGRAM_FIELDS, {"telegram.edited": True}, False),
    ("telegram", TELEGRAM_FIELDS, {"telegram.command": "help"}, True),
    ("telegram", TELEGRAM_FIELDS, {"telegram.chat_title": {"exists": False}}, True),
    ("telegram", TELEGRAM_FIELDS, {"telegram.is_bot": False}, True),
    ("sms", SMS_FIELDS, {"sms.to": "+14155550100"}, True),
    ("sms", SMS_FIELDS, {"sms.from_country": {"in": ["de", "at", "ch"]}}, True),
    ("sms", SMS_FIELDS, {"sms.provider": "generic"}, False),
    ("sms", SMS_FIELDS, {"sms.account": "main"}, True),
    ("sms", SMS_FIELDS, {"sms.media_count": {"gt": 0}}, True),
    ("sms", SMS_FIELDS, {"sms.segments": {"gte": 2}}, False),
    ("sms", SMS_FIELDS, {"sms.messaging_service": {"starts_with": "MG"}}, True),
    ("sms", SMS_FIELDS, {"sms.opt_out": {"in": ["STOP", "stop"]}}, False),
    ("twitter", TWITTER_FIELDS, {"twitter.kind": "mention"}, True),
    ("twitter", TWITTER_FIELDS, {"twitter.lang": {"not_in": ["en", "es"]}}, False),
    ("twitter", TWITTER_FIELDS, {"twitter.username": "annlee"}, True),
    ("twitter", TWITTER_FIELDS, {"twitter.account": "acme"}, True),
    ("twitter", TWITTER_FIELDS, {"twitter.conversation_id": "1800"}, True),
    ("twitter", TWITTER_FIELDS, {"twitter.is_reply": True}, True),
    ("twitter", TWITTER_FIELDS, {"twitter.verified": True}, False),
    # another channel's field is missing on a message: no condition on it holds
    ("email", {}, {"telegram.chat_type": "private"}, False),
    ("email", {}, {"sms.media_count": {"gte": 0}}, False),
]


@pytest.mark.parametrize(("channel", "fields", "when", "expected"), CHANNEL_CASES)
def test_channel_field(
    channel: str, fields: dict[str, Any], when: dict[str, Any], expected: bool
) -> None:
    node = condition(when)
    make = lambda: facts(chat_message(channel, fields))  # noqa: E731
    assert verdicts(node, make) == (expected, expected, expected)


def test_every_field_is_exercised() -> None:
    used = {key for when, _ in OPERATOR_CASES if when for key in _field_names(when)}
    used |= {key for _, _, when, _ in CHANNEL_CASES for key in _field_names(when)}
    # Case fields are exercised by the routing tests (and case.queue by the SLA tests).
    routing_only = {name for name, spec in FIELDS.items() if spec.scope in ("routing", "sla")}
    assert set(FIELDS) - routing_only - used == set()


def _field_names(when: Any) -> Iterator[str]:
    if isinstance(when, dict):
        for key, value in when.items():
            if key in ("all", "any"):
                for item in value:
                    yield from _field_names(item)
            elif key == "not":
                yield from _field_names(value)
            else:
                yield key


def test_values_from_the_message_are_read_per_message() -> None:
    node = condition({"message.subject": {"contains": "refund"}})
    assert node.test(facts(message(subject="Refund please")))
    assert not node.test(facts(message(subject="Login broken")))


def test_unknown_customer_has_no_tier_attribute_or_entitlement() -> None:
    f = facts(message(), contact=None, entitled=False)
    assert condition({"customer.known": False}).test(f)
    assert condition({"customer.tier": {"exists": False}}).test(f)
    assert condition({"customer.attribute.region": {"exists": False}}).test(f)
    assert condition({"customer.has_entitlement": False}).test(f)
    assert not condition({"customer.tier": {"in": ["gold", "platinum"]}}).test(f)
    assert condition({"customer.tier": {"not_in": ["gold", "platinum"]}}).test(f)


def test_empty_lists_and_missing_values() -> None:
    bare = facts(message(recipients=[], attachments=[], language=None))
    assert condition({"message.to": {"exists": False}}).test(bare)
    assert not condition({"message.to": "support@example.com"}).test(bare)
    assert condition({"message.to": {"not_equals": "support@example.com"}}).test(bare)
    assert condition({"message.attachment_names": {"exists": False}}).test(bare)
    assert condition({"message.attachment_count": 0}).test(bare)
    assert condition({"message.language": {"exists": False}}).test(bare)
    assert not condition({"message.language": {"starts_with": "de"}}).test(bare)


def test_casefolding_and_regular_expressions_agree_on_non_ascii_text() -> None:
    f = facts(message(subject="Rückerstattung: Straße gesperrt", text="GROSSE Bitte"))
    assert condition({"message.subject": {"contains": "STRASSE"}}).test(f)  # casefold: ß = ss
    assert condition({"message.subject": {"contains": "rückerstattung"}}).test(f)
    # A pattern reads the text as written (ignoring case), not casefolded to "strasse"
    assert condition({"message.subject": {"matches": r"Straße gesperrt$"}}).test(f)
    assert condition({"message.subject": {"matches": r"^RÜCKERSTATTUNG"}}).test(f)
    assert condition({"message.text": {"matches": r"\bgrosse\b"}}).test(f)


def test_guard_flags_in_conditions() -> None:
    oof = message(subject="Automatic reply: Cannot log in", headers={})
    bounce = message(sender="mailer-daemon@mx.example.net", subject="Undeliverable")
    noreply = message(sender="no-reply@shop.example")
    auto = condition({"message.auto_reply": True})
    bounced = condition({"message.bounce": True})
    unanswerable = condition({"message.noreply": True})
    mails = (oof, bounce, noreply, message())
    assert [auto.test(facts(m)) for m in mails] == [True, False, False, False]
    assert [bounced.test(facts(m)) for m in mails] == [False, True, False, False]
    # mailer-daemon is no address to answer either
    assert [unanswerable.test(facts(m)) for m in mails] == [False, True, True, False]
    reply = Facts(message(), now=NOW, zone=ZoneInfo("UTC"), is_reply=True)
    assert condition({"message.is_reply": True}).test(reply)


# -- time ------------------------------------------------------------------------------


def test_weekday_and_hour_are_read_in_the_rules_timezone() -> None:
    friday_evening_utc = datetime(2026, 3, 6, 20, 30, tzinfo=UTC)
    # In Auckland (UTC+13 in March) it is already Saturday, 09:30.
    auckland = facts(now=friday_evening_utc, zone="Pacific/Auckland")
    utc = facts(now=friday_evening_utc, zone="UTC")
    weekend = condition({"time.weekday": ["sat", "sun"]})
    morning = condition({"time.hour": {"gte": 9, "lt": 12}})
    assert weekend.test(auckland)
    assert morning.test(auckland)
    assert not weekend.test(utc)
    assert not morning.test(utc)
    assert condition({"time.weekday": "friday", "time.hour": 20}).test(utc)
    # and New York (UTC-5 in early March): still Friday, 15:30
    assert condition({"time.weekday": "fri", "time.hour": 15}).test(
        facts(now=friday_evening_utc, zone="America/New_York")
    )


@pytest.mark.parametrize(
    ("instant", "open_"),
    [
        (datetime(2026, 3, 4, 10, 0, tzinfo=UTC), True),  # Wed 10:00 London (GMT)
        (datetime(2026, 3, 4, 12, 45, tzinfo=UTC), False),  # lunch break
        (datetime(2026, 3, 4, 17, 29, tzinfo=UTC), True),
        (datetime(2026, 3, 4, 17, 30, tzinfo=UTC), False),  # periods are closed-open
        (datetime(2026, 3, 7, 10, 0, tzinfo=UTC), False),  # Saturday
        (datetime(2026, 7, 1, 8, 30, tzinfo=UTC), True),  # 09:30 BST
        (datetime(2026, 7, 1, 16, 45, tzinfo=UTC), False),  # 17:45 BST
        (datetime(2026, 12, 25, 10, 0, tzinfo=UTC), False),  # a holiday, on a Friday
    ],
)
def test_business_hours_with_a_real_calendar(instant: datetime, open_: bool) -> None:
    calendars: dict[str, CalendarLike] = {"Standard": standard_calendar()}
    inside = condition({"business_hours": "Standard"})
    outside = condition({"not": {"business_hours": "Standard"}})
    f = facts(now=instant, calendars=calendars)
    assert inside.test(f) is open_
    assert outside.test(f) is not open_


# -- scope: case.* only in routing ------------------------------------------------------


def test_case_fields_only_in_routing_rules() -> None:
    case = {
        "title": "Refund for invoice 4711",
        "priority": "High",
        "product": "Printers",
        "category": "Billing",
        "channel": "sms",
        "custom": {"sku": "PX-100"},
    }
    f = facts(case=case)
    for when in (
        {"case.priority": "high"},
        {"case.category": {"in": ["billing", "refunds"]}},
        {"case.title": {"contains": "INVOICE"}},
        {"case.product": "printers"},
        {"case.channel": "sms"},
        {"case.custom.sku": {"starts_with": "px-"}},
        {"case.custom.colour": {"exists": False}},
    ):
        assert condition(when, "routing").test(f), when
    assert problems_of({"case.priority": "High"}) == [
        "case.priority: case.priority is only known to routing rules"
    ]
    assert problems_of({"any": [{"case.custom.sku": "X"}]}) == [
        "any.0.case.custom.sku: case.custom.sku is only known to routing rules"
    ]
    # Message and customer fields work in routing as well.
    assert condition({"message.channel": "email"}, "routing").test(f)


# -- what the parser refuses ------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (
            {"message.subjet": "x"},
            "message.subjet: unknown field 'message.subjet'; did you mean message.subject?"
            " (see the rules reference in the README)",
        ),
        (
            {"customer.teir": "gold"},
            "customer.teir: unknown field 'customer.teir'; did you mean customer.tier?"
            " (see the rules reference in the README)",
        ),
        (
            {"weather": "sunny"},
            "weather: unknown field 'weather' (see the rules reference in the README)",
        ),
        (
            {"message.subject": {"containz": "x"}},
            "message.subject.containz: unknown operator 'containz'; did you mean contains?",
        ),
        (
            {"message.subject": {"gt": 3}},
            "message.subject.gt: gt does not apply to message.subject (text); use one of equals,"
            " not_equals, in, not_in, contains, not_contains, starts_with, ends_with, matches,"
            " exists",
        ),
        (
            {"message.attachment_count": {"contains": "pdf"}},
            "message.attachment_count.contains: contains does not apply to"
            " message.attachment_count (a number); use one of equals, not_equals, in, not_in,"
            " gt, gte, lt, lte, exists",
        ),
        (
            {"message.auto_reply": {"matches": "yes"}},
            "message.auto_reply.matches: matches does not apply to message.auto_reply"
            " (true or false); use one of equals, not_equals, exists",
        ),
        (
            {"time.weekday": {"gt": "mon"}},
            "time.weekday.gt: gt does not apply to time.weekday (a weekday); use one of equals,"
            " not_equals, in, not_in",
        ),
        ({"time.weekday": "funday"}, "time.weekday: 'funday' is not a weekday (mon, tue, ... sun)"),
        (
            {"message.subject": {"matches": "(unclosed"}},
            "message.subject.matches: not a valid regular expression: missing ), unterminated"
            " subpattern at position 0",
        ),
        (
            {"message.subject": {"matches": 42}},
            "message.subject.matches: matches takes a regular expression in quotes",
        ),
        (
            {"customer.tier": {"in": "gold"}},
            "customer.tier.in: in takes a non-empty list, e.g. [gold, platinum]",
        ),
        ({"customer.tier": []}, "customer.tier: in takes a non-empty list, e.g. [gold, platinum]"),
        (
            {"message.attachment_count": {"gt": "3"}},
            "message.attachment_count.gt: gt takes a number",
        ),
        (
            {"message.attachment_count": "three"},
            "message.attachment_count: equals takes a number, not 'three'",
        ),
        ({"message.auto_reply": "yes please"}, "message.auto_reply: equals takes true or false"),
        (
            {"message.subject": {"exists": "maybe"}},
            "message.subject.exists: exists takes true or false",
        ),
        ({"message.subject": None}, "message.subject: equals takes text, not None"),
        (
            {"customer.attribute.plan": {"equals": ["a"]}},
            "customer.attribute.plan.equals: equals takes a single value, not ['a']",
        ),
        (
            {"message.subject": {"case_sensitive": True}},
            "message.subject: name an operator, e.g. {contains: refund}",
        ),
        (
            {"message.subject": {"equals": "x", "case_sensitive": "yes"}},
            "message.subject.case_sensitive: case_sensitive is true or false",
        ),
        (
            {"business_hours": "Weekend"},
            "business_hours: unknown calendar 'Weekend' (calendars: Standard)",
        ),
        ({"business_hours": 9}, "business_hours: business_hours takes the name of a calendar"),
        ({"all": []}, "all: all takes a non-empty list of conditions"),
        ({"any": {"message.channel": "sms"}}, "any: any takes a non-empty list of conditions"),
        (
            {"not": ["message.channel"]},
            "not: a condition is a mapping of fields to values, or all/any/not",
        ),
        ("message.channel", ": a condition is a mapping of fields to values, or all/any/not"),
    ],
    ids=lambda v: repr(v)[:60],
)
def test_parser_problems(when: Any, expected: str) -> None:
    assert problems_of(when) == [expected]


def test_parser_reports_every_problem_in_a_nested_condition() -> None:
    found = problems_of(
        {
            "all": [
                {"message.subjet": "x"},
                {"any": [{"message.channel": {"gt": 1}}, {"time.weekday": "someday"}]},
                {"not": {"business_hours": "Nowhere"}},
            ]
        }
    )
    assert [p.split(":")[0] for p in found] == [
        "all.0.message.subjet",
        "all.1.any.0.message.channel.gt",
        "all.1.any.1.time.weekday",
        "all.2.not.business_hours",
    ]


def test_unknown_calendar_when_none_are_configured() -> None:
    _, problems = parse_condition({"business_hours": "Standard"}, calendars=())
    assert problems == [
        (("business_hours",), "unknown calendar 'Standard' (calendars: none are configured)")
    ]


# -- explain(): what `rules test` prints ------------------------------------------------


def test_explain_says_why_an_item_does_not_hold() -> None:
    f = facts(message(subject="Hello", recipients=["support@example.com"]))
    assert (
        condition({"message.subject": {"contains": "invoice"}}).explain(f)
        == "message.subject contains 'invoice': it is 'Hello'"
    )
    assert (
        condition({"customer.tier": {"in": ["gold", "platinum"]}}).explain(f)
        == "customer.tier in ['gold', 'platinum']: it is None"
    )
    assert (
        condition({"message.to": {"not_contains": "support"}}).explain(f)
        == "message.to not contains 'support': it is ['support@example.com']"
    )
    assert (
        condition({"message.attachment_count": {"gte": 1}}).explain(f)
        == "message.attachment_count gte 1: it is 0"
    )
    assert (
        condition({"any": [{"message.auto_reply": True}, {"message.bounce": True}]}).explain(f)
        == "none of: message.auto_reply equals True: it is False;"
        " message.bounce equals True: it is False"
    )
    # all: the first condition that fails, not the ones after it
    assert (
        condition(
            {
                "all": [
                    {"message.channel": "email"},
                    {"time.hour": {"lt": 9}},
                    {"customer.known": False},
                ]
            }
        ).explain(f)
        == "time.hour lt 9: it is 15"
    )
    assert (
        condition({"not": {"message.channel": "email"}}).explain(f)
        == "not (message.channel equals 'email'): but it holds"
    )
    saturday = facts(
        now=datetime(2026, 3, 7, 10, 0, tzinfo=UTC), calendars={"Standard": standard_calendar()}
    )
    assert (
        condition({"business_hours": "Standard"}).explain(saturday)
        == "not inside business hours of 'Standard' at 2026-03-07T10:00:00+00:00"
    )
    # an item that holds has nothing to explain
    assert condition({"message.subject": "hello"}).explain(f) is None
    assert condition({}).explain(f) is None


def test_explain_shortens_long_values() -> None:
    f = facts(message(subject="x" * 200))
    why = condition({"message.subject": "y"}).explain(f)
    assert why == "message.subject equals 'y': it is '" + "x" * 76 + "..."


def test_describe_reads_like_the_rule() -> None:
    assert condition(
        {"any": [{"message.channel": "sms"}, {"customer.tier": ["gold"]}]}
    ).describe() == ("any of (message.channel equals 'sms'; customer.tier in ['gold'])")
    assert condition({"message.channel": "sms", "time.hour": {"gte": 9}}).describe() == (
        "message.channel equals 'sms' and time.hour gte 9"
    )
    assert condition({}).describe() == "always"


# -- loading and validating rule files --------------------------------------------------

RULES_10 = """\
    kind: record_creation
    name: Intake
    items:
      - name: Typo in a field
        when:
          message.subjet: {contains: refund}
        then:
          create_case: true
      - name: Wrong operator
        when:
          message.attachment_count: {contains: pdf}
        then:
          create_case: true
      - name: Bad regex
        when:
          message.text: {matches: "(unclosed"}
        then:
          create_case: true
      - name: Unknown queue
        when:
          message.channel: sms
        then:
          create_case: true
          queue: Nowhere
      - name: Unknown template
        when:
          message.channel: telegram
        then:
          create_case: true
          auto_response: acknowledgment
      - name: Unknown calendar
        when:
          business_hours: Weekend
        then:
          create_case: true
      - name: Unknown name in an expression
        when:
          message.channel: twitter
        then:
          create_case:
            title: "{{ mesage.subject }}"
      - name: Expression syntax error
        when:
          message.language: it
        then:
          create_case:
            category: "{{ message.subject "
      - name: Bad literal priority
        when:
          message.language: de
        then:
          create_case:
            priority: Urgent
      - name: Ignore and create
        when:
          message.from_domain: spam.example
        then:
          ignore: true
          create_case: true
      - name: Routing field in record creation
        when:
          case.priority: High
        then:
          create_case: true
      - name: Template using a name it is not given
        when:
          message.language: fr
        then:
          create_case: true
          auto_response: leaky
      - name: Broken template
        when:
          message.language: es
        then:
          create_case: true
          auto_response: broken
      - name: Unknown action
        when:
          message.language: nl
        then:
          create_case: true
          escalate: true
      - name: Catch-all
        then:
          create_case: true
      - name: After the catch-all
        when:
          message.channel: email
        then:
          create_case: true
      - name: Switched off after the catch-all
        enabled: false
        when:
          message.fromm: someone@example.com
        then:
          create_case: true
    """
RULES_20 = """\
    kind: record_creation
    name: More
    items:
      - name: Typo in a field
        when:
          message.subject: hello
        then:
          create_case: true
    """
RULES_30 = """\
    kind: record_creation
    items:
      - name: Broken
        when: {message.subject: [unclosed
        then: {create_case: true}
    """
RULES_40 = """\
    kind: record_creation
    items:
      - name: Renewal
        when:
          customer.attribute.renewal: 2026-02-30
        then: {create_case: true}
    """
RULES_50 = """\
    kind: routing
    name: Empty
    items: []
    """
RULES_60 = """\
    kind: routing
    name: Intake
    items:
      - name: To nowhere
        when:
          case.priority: {equal: High}
        then:
          queue: Nowhere
      - name: Without a queue
        when:
          case.category: Billing
        then: {}
    """
RULES_70 = """\
    kind: triage
    items:
      - name: X
        then: {create_case: true}
    """
RULES_80 = """\
    kind: record_creation
    items:
      - name: Twice
        when:
          message.subject: {contains: refund}
          message.subject: {contains: invoice}
        then: {create_case: true}
    """
TEMPLATES = {
    "acknowledgement.txt": ACK,
    "leaky.txt": "Subject: Hello {{ agent.name }}\n\nText\n",
    "broken.txt": "Subject: Hello\n\nDear {{ customer.name }},\n{% if case.priority %}\nBye\n",
}


def test_one_report_names_file_line_rule_and_field_of_every_problem(tmp_path: Path) -> None:
    files = {
        "10-intake.yaml": RULES_10,
        "20-more.yaml": RULES_20,
        "30-syntax.yaml": RULES_30,
        "40-date.yaml": RULES_40,
        "50-empty.yaml": RULES_50,
        "60-routing.yaml": RULES_60,
        "70-kind.yaml": RULES_70,
        "80-duplicate-key.yaml": RULES_80,
    }
    problems = load_problems(files, tmp_path, TEMPLATES)
    found = {(Path(p.file).name, p.line, p.rule, p.field): p.message for p in problems}

    def at(needle: str, text: str = RULES_10) -> int:
        return line_of(text, needle)

    expected: list[tuple[str, int | None, str | None, str, str]] = [
        (
            "10-intake.yaml",
            at("message.subjet"),
            "Typo in a field",
            "items[0].when.message.subjet",
            "unknown field 'message.subjet'; did you mean message.subject?",
        ),
        (
            "10-intake.yaml",
            at("{contains: pdf}"),
            "Wrong operator",
            "items[1].when.message.attachment_count.contains",
            "contains does not apply to message.attachment_count (a number)",
        ),
        (
            "10-intake.yaml",
            at("(unclosed"),
            "Bad regex",
            "items[2].when.message.text.matches",
            "not a valid regular expression: missing ), unterminated subpattern",
        ),
        (
            "10-intake.yaml",
            at("queue: Nowhere"),
            "Unknown queue",
            "items[3].then.queue",
            "unknown queue 'Nowhere' (queues in config: General Support, Gold Support, Billing)",
        ),
        (
            "10-intake.yaml",
            at("auto_response: acknowledgment"),
            "Unknown template",
            "items[4].then.auto_response",
            "unknown template 'acknowledgment': no acknowledgment.txt in",
        ),
        (
            "10-intake.yaml",
            at("business_hours: Weekend"),
            "Unknown calendar",
            "items[5].when.business_hours",
            "unknown calendar 'Weekend' (calendars: Standard)",
        ),
        (
            "10-intake.yaml",
            at("mesage.subject"),
            "Unknown name in an expression",
            "items[6].then.create_case.title",
            "unknown name 'mesage' in the template; did you mean message?"
            " (known: customer, message, now)",
        ),
        (
            "10-intake.yaml",
            at('category: "{{ message.subject "'),
            "Expression syntax error",
            "items[7].then.create_case.category",
            "template error: unexpected end of template",
        ),
        (
            "10-intake.yaml",
            at("priority: Urgent"),
            "Bad literal priority",
            "items[8].then.create_case.priority",
            "priority is one of High, Normal, Low, not 'Urgent'",
        ),
        (
            "10-intake.yaml",
            at("ignore: true") - 1,  # the `then:` that combines them
            "Ignore and create",
            "items[9].then",
            "ignore drops the message: it cannot be combined with create_case",
        ),
        (
            "10-intake.yaml",
            at("case.priority: High"),
            "Routing field in record creation",
            "items[10].when.case.priority",
            "case.priority is only known to routing rules",
        ),
        (
            "10-intake.yaml",
            at("auto_response: leaky"),
            "Template using a name it is not given",
            "items[11].then.auto_response",
            "template 'leaky': unknown name 'agent' in the template",
        ),
        (
            "10-intake.yaml",
            at("escalate: true"),
            "Unknown action",
            "items[13].then.escalate",
            "unknown field (check the spelling)",
        ),
        (
            "10-intake.yaml",
            at("- name: After the catch-all"),
            "After the catch-all",
            "",
            "unreachable: the catch-all 'Catch-all' (",
        ),
        (
            "10-intake.yaml",
            at("message.fromm"),
            "Switched off after the catch-all",  # checked, so that switching it on is safe
            "items[16].when.message.fromm",
            "unknown field 'message.fromm'; did you mean message.from?",
        ),
        (
            "20-more.yaml",
            line_of(RULES_20, "- name: Typo in a field"),
            "Typo in a field",
            "name",
            "another record-creation rule has this name (",
        ),
        (
            "20-more.yaml",
            line_of(RULES_20, "- name: Typo in a field"),
            "Typo in a field",
            "",
            "unreachable: the catch-all 'Catch-all' (",
        ),
        (
            "30-syntax.yaml",
            line_of(RULES_30, "then:"),
            None,
            "",
            "not valid YAML: ",
        ),
        (
            "40-date.yaml",
            line_of(RULES_40, "2026-02-30"),
            None,
            "items[0].when.customer.attribute.renewal",
            "'2026-02-30' reads as a date but is not one (day is out of range for month)",
        ),
        (
            "50-empty.yaml",
            line_of(RULES_50, "items: []"),
            None,
            "items",
            "List should have at least 1 item",
        ),
        (
            "60-routing.yaml",
            line_of(RULES_60, "{equal: High}"),
            "To nowhere",
            "items[0].when.case.priority.equal",
            "unknown operator 'equal'; did you mean equals?",
        ),
        (
            "60-routing.yaml",
            line_of(RULES_60, "queue: Nowhere"),
            "To nowhere",
            "items[0].then.queue",
            "unknown queue 'Nowhere'",
        ),
        (
            "60-routing.yaml",
            line_of(RULES_60, "then: {}"),
            "Without a queue",
            "items[1].then.queue",
            "required field is missing",
        ),
        (
            "60-routing.yaml",
            line_of(RULES_60, "name: Intake"),
            None,
            "name",
            "rule set 'Intake' is also defined in ",
        ),
        (
            "70-kind.yaml",
            line_of(RULES_70, "kind: triage"),
            None,
            "kind",
            "Input should be 'record_creation' or 'routing'",
        ),
        (
            "80-duplicate-key.yaml",
            line_of(RULES_80, "{contains: invoice}"),
            None,
            "items[0].when.message.subject",
            "this key appears twice here; one would be lost",
        ),
        (
            "broken.txt",
            4,  # the unclosed `{% if %}` in the body, counted in the file
            None,
            "",
            "template error: Unexpected end of template.",
        ),
    ]
    for file, line, rule, field, fragment in expected:
        key = (file, line, rule, field)
        assert key in found, (
            f"missing {key}: {fragment}\nfound: {json.dumps(list(map(str, problems)), indent=1)}"
        )
        assert fragment in found[key], (key, found[key])
    # No other problem, and none twice: the broken template is not also "unknown",
    # the switched-off item is not "unreachable".
    assert len(problems) == len(expected), "\n".join(map(str, problems))
    duplicate = next(p for p in problems if p.field == "name" and p.rule == "Typo in a field")
    assert f"10-intake.yaml:{at('- name: Typo in a field')});" in duplicate.message
    assert f"10-intake.yaml:{at('- name: Catch-all')}) matches every message first" in next(
        p.message for p in problems if p.rule == "After the catch-all"
    )


def test_problem_reads_as_file_line_rule_field_message() -> None:
    problem = Problem("rules/10.yaml", 7, "items[0].when.x", "unknown field 'x'", "Gold")
    assert str(problem) == "rules/10.yaml:7: rule 'Gold': items[0].when.x: unknown field 'x'"
    assert str(Problem("templates/a.txt", None, "", "cannot read")) == (
        "templates/a.txt: cannot read"
    )
    assert problem.as_dict() == {
        "file": "rules/10.yaml",
        "line": 7,
        "rule": "Gold",
        "field": "items[0].when.x",
        "message": "unknown field 'x'",
    }


def test_unreachable_after_a_channel_scoped_catch_all(tmp_path: Path) -> None:
    files = {
        "10-sms.yaml": """\
            kind: record_creation
            channels: [sms]
            items:
              - name: SMS catch-all
                then: {create_case: true}
            """,
        "20-everyone.yaml": """\
            kind: record_creation
            items:
              - name: Email from VIPs
                when: {customer.tier: vip}
                then: {create_case: true}
            """,
        "30-sms-more.yaml": """\
            kind: record_creation
            channels: [sms]
            items:
              - name: SMS keywords
                when: {message.text: {contains: STOP}}
                then: {ignore: true}
            """,
        "40-chat.yaml": """\
            kind: record_creation
            channels: [sms, telegram]
            items:
              - name: Chat keywords
                when: {message.text: {contains: help}}
                then: {create_case: true}
            """,
        "50-routing.yaml": """\
            kind: routing
            items:
              - name: Everything to billing
                then: {queue: Billing}
              - name: Never asked
                when: {case.priority: High}
                then: {queue: Gold Support}
            """,
    }
    problems = load_problems(files, tmp_path)
    assert [(Path(p.file).name, p.line, p.rule, p.message.split(" (")[0]) for p in problems] == [
        ("30-sms-more.yaml", 4, "SMS keywords", "unreachable: the catch-all 'SMS catch-all'"),
        ("50-routing.yaml", 5, "Never asked", "unreachable: the catch-all 'Everything to billing'"),
    ]


def test_a_valid_set_compiles_in_file_order(tmp_path: Path) -> None:
    book = load_dir(
        {
            "20-second.yaml": """\
                kind: record_creation
                items:
                  - name: Second
                    then: {create_case: true}
                """,
            "10-first.yaml": """\
                kind: record_creation
                channels: [sms]
                items:
                  - name: First
                    description: SMS only
                    when: {message.text: {contains: refund}}
                    then:
                      create_case: {category: Billing, priority: Low}
                  - name: Switched off
                    enabled: false
                    then: {ignore: true}
                """,
            "30-routing.yaml": """\
                kind: routing
                items:
                  - name: Low priority
                    when: {case.priority: Low}
                    then: {queue: Billing}
                """,
            "notes.txt": "not a rule file",
        },
        tmp_path,
    )
    assert [(i.name, i.rule_set, i.line, i.catch_all) for i in book.record_creation] == [
        ("First", "10-first", 4, False),
        ("Second", "20-second", 3, True),
    ]
    assert book.record_creation[0].channels == frozenset({"sms"})
    assert book.record_creation[0].description == "SMS only"
    assert book.record_creation[0].label == "rule 'First' (10-first.yaml)"
    assert [(i.name, i.queue) for i in book.routing] == [("Low priority", "Billing")]
    summary = book.summary()
    assert summary["files"] == ["10-first.yaml", "20-second.yaml", "30-routing.yaml"]
    assert (summary["record_creation_items"], summary["routing_items"]) == (2, 1)
    assert summary["templates"] == ["ack"]
    assert len(book.version) == 12

    sms = facts(message(channel="sms", identity_kind="phone", sender="+4477", text="A refund?"))
    mail = facts(message(text="A refund?"))
    first = book.match(sms)
    assert first is not None
    assert first.name == "First"
    second = book.match(mail)
    assert second is not None
    assert second.name == "Second"
    trace = book.trace(mail, "record_creation")
    assert [(t.item.name, t.matched, t.why_not) for t in trace] == [
        ("First", False, "the rule set is for ['sms']"),
        ("Second", True, None),
    ]


def test_version_follows_the_content_of_rules_and_templates(tmp_path: Path) -> None:
    rules = {"10.yaml": "kind: record_creation\nitems:\n- name: A\n  then: {create_case: true}\n"}
    first = load_dir(rules, tmp_path / "a").version
    assert load_dir(rules, tmp_path / "b").version == first  # same content, same version
    changed = {"10.yaml": rules["10.yaml"].replace("name: A", "name: B")}
    assert load_dir(changed, tmp_path / "c").version != first
    template = {"ack.txt": ACK.replace("Hello", "Hi")}
    assert load_dir(rules, tmp_path / "d", template).version != first


def test_set_defaults_apply_where_an_item_says_nothing(tmp_path: Path) -> None:
    book = load_dir(
        {
            "10.yaml": """\
                kind: record_creation
                defaults:
                  create_contact: true
                  auto_response: ack
                  queue: Billing
                  resolved_case_window: {hours: 72, reopen: true}
                items:
                  - name: Plain
                    when: {message.channel: sms}
                    then: {create_case: true}
                  - name: Strangers stay out
                    when: {message.channel: twitter}
                    then: {create_case: true, create_contact: false, queue: Gold Support}
                  - name: Newsletters
                    when: {message.from_domain: news.example}
                    then: {ignore: true}
                  - name: Follow-ups
                    when: {message.subject: {starts_with: "re:"}}
                    then: {existing_case_only: true}
                """
        },
        tmp_path,
    )
    actions = {i.name: i.actions for i in book.record_creation}
    plain = actions["Plain"]
    assert (plain.create_contact, plain.auto_response, plain.queue) == (True, "ack", "Billing")
    assert plain.resolved_case_window is not None
    assert (plain.resolved_case_window.hours, plain.resolved_case_window.reopen) == (72, True)
    assert plain.create_case is not None
    assert plain.create_case.title is None
    strangers = actions["Strangers stay out"]
    assert (strangers.create_contact, strangers.queue) == (False, "Gold Support")
    ignore = actions["Newsletters"]
    assert ignore.ignore
    assert ignore.create_contact is None
    assert ignore.queue is None
    assert ignore.auto_response is None
    assert ignore.resolved_case_window is None
    follow = actions["Follow-ups"]
    assert follow.existing_case_only
    assert follow.create_case is None
    assert (follow.queue, follow.auto_response) == (None, None)
    assert follow.create_contact is True
    assert follow.resolved_case_window is not None


def test_defaults_problems_are_reported_once_at_the_defaults(tmp_path: Path) -> None:
    text = """\
        kind: record_creation
        defaults:
          queue: Nowhere
          auto_response: missing
        items:
          - name: A
            when: {message.channel: sms}
            then: {create_case: true}
          - name: B
            then: {create_case: true, queue: Elsewhere}
        """
    problems = load_problems({"10.yaml": text}, tmp_path)
    assert [
        (p.line, p.rule, p.field, p.message.split(" (")[0].split(":")[0]) for p in problems
    ] == [
        (line_of(text, "queue: Nowhere"), None, "defaults.queue", "unknown queue 'Nowhere'"),
        (
            line_of(text, "auto_response: missing"),
            None,
            "defaults.auto_response",
            "unknown template 'missing'",
        ),
        (line_of(text, "Elsewhere"), "B", "items[1].then.queue", "unknown queue 'Elsewhere'"),
    ]


def test_routing_sets_have_no_defaults_and_need_items(tmp_path: Path) -> None:
    problems = load_problems(
        {
            "10.yaml": "kind: routing\ndefaults: {queue: Billing}\nitems:\n"
            "- name: A\n  then: {queue: Billing}\n",
            "20.yaml": "kind: record_creation\n",
            "30.yaml": "- just\n- a list\n",
        },
        tmp_path,
    )
    assert [(Path(p.file).name, p.line, p.field, p.message) for p in problems] == [
        ("10.yaml", 2, "defaults", "routing rule sets have no defaults"),
        ("20.yaml", 1, "items", "required field is missing"),
        ("30.yaml", 1, "", "a rule file is a mapping with kind, items and optionally name"),
    ]


def test_an_empty_rules_directory_is_valid(tmp_path: Path) -> None:
    book = load_dir({}, tmp_path)
    assert book.record_creation == ()
    assert book.routing == ()
    assert book.match(facts()) is None


def load_shipped() -> RuleBook:
    config = config_module.load(REPO / "config" / "ingestd.yaml", env={})
    return ruleset.load(REPO / config.rules_dir, REPO / config.templates_dir, settings_for(config))


def test_the_shipped_starter_set_is_valid_and_does_what_it_says() -> None:
    book = load_shipped()
    names = [i.name for i in book.record_creation]
    assert names[0] == "Automatic replies and bounces"
    assert book.record_creation[-1].catch_all
    assert "acknowledgement" in book.templates

    def matched(f: Facts) -> str | None:
        item = book.match(f)
        return item.name if item else None

    gold = Contact(full_name="Grace", tier="Gold", attributes={})
    assert matched(facts(message(subject="Out of office: back Monday"))) == names[0]
    assert matched(facts(message(sender="mailer-daemon@mx.example"))) == names[0]
    assert matched(facts(message(), contact=gold)) == "Gold customers"
    assert matched(facts(message(subject="Question about my INVOICE"))) == "Billing questions"
    assert matched(facts(message(text="See refund no. 1234"))) == "Billing questions"
    assert matched(facts(message(subject="Printer jammed"))) == names[-1]
    route = book.route(facts(case={"priority": "High", "category": None}))
    assert route is not None
    assert route.queue == "Gold Support"
    route = book.route(facts(case={"priority": "Normal", "category": "Billing"}))
    assert route is not None
    assert route.queue == "Billing"
    assert book.route(facts(case={"priority": "Normal", "category": None})) is None


# -- templates --------------------------------------------------------------------------


CONTEXT: dict[str, Any] = {
    "message": {"subject": "<script>alert(1)</script> & more", "sender": "bob@x.example"},
    "customer": {"name": "Bob", "known": True},
    "case": {"number": "CAS-01000-ABCDEF", "title": "Help", "priority": "High"},
    "now": NOW,
}


@pytest.mark.parametrize(
    "source",
    [
        "{{ message.__class__.__mro__ }}",
        "{{ message.subject.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ now.__class__.__init__.__globals__['sys'] }}",
        "{{ '{0.__class__.__mro__}'.format(message) }}",  # str.format is sandboxed too
    ],
)
def test_the_sandbox_refuses_at_render(source: str) -> None:
    expression = compile_expression(source, ["message", "now"])  # the names are allowed
    with pytest.raises(RenderError) as error:
        expression.render(CONTEXT)
    assert str(error.value).startswith("expression: ")
    assert "is unsafe" in str(error.value)


def test_undefined_names_and_attributes_fail_at_render() -> None:
    with pytest.raises(RenderError, match="'dict object' has no attribute 'nickname'"):
        compile_expression("{{ customer.nickname }}", ["customer"]).render(CONTEXT)
    with pytest.raises(RenderError, match="ZeroDivisionError"):
        compile_expression("{{ 1 // 0 }}", []).render(CONTEXT)
    with pytest.raises(RenderError, match="Range too big"):
        compile_expression("{{ range(10**7) | list }}", []).render(CONTEXT)
    assert compile_expression("  {{ customer.name | upper }}  ", ["customer"]).render(CONTEXT) == (
        "BOB"
    )


def test_expressions_only_use_the_names_they_are_given() -> None:
    with pytest.raises(
        ValueError, match=r"unknown name 'case' in the template \(known: customer, message, now\)"
    ):
        compile_expression("{{ case.number }}", ["message", "customer", "now"])
    with pytest.raises(ValueError, match="template error: No filter named 'titel'"):
        compile_expression("{{ message.subject | titel }}", ["message"])
    with pytest.raises(ValueError, match="template error: Expected an expression"):
        compile_expression("{% if %}x{% endif %}", ["message"])
    # names a template sets itself are not unknown
    expression = compile_expression("{% set x = message.subject %}{{ x }}", ["message"])
    assert expression.names == {"message"}


def test_mail_templates_html_is_autoescaped_text_is_not(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "ack.txt": "Subject:   Re:  {{ message.subject }}\n   [{{ case.number }}]\n\n"
            "You wrote: {{ message.subject }}\n",
            "ack.html": "<p>You wrote: {{ message.subject }}</p>\n",
        },
    )
    # The subject line must be one line: a continuation is a format problem.
    with pytest.raises(SourceError) as error:
        Templates.load(tmp_path)
    assert [str(p) for p in error.value.problems] == [
        f"{tmp_path / 'ack.txt'}:1: a template starts with one 'Subject: ...' line,"
        " then a blank line, then the body"
    ]
    (tmp_path / "ack.txt").write_text(
        "Subject:   Re:  {{ message.subject }}   [{{ case.number }}]\n\n"
        "You wrote: {{ message.subject }}\n"
    )
    rendered = Templates.load(tmp_path).get("ack").render(CONTEXT)
    assert rendered.subject == "Re: <script>alert(1)</script> & more [CAS-01000-ABCDEF]"
    assert rendered.text == "You wrote: <script>alert(1)</script> & more\n"
    assert rendered.html == "<p>You wrote: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more</p>\n"


def test_mail_template_render_errors_are_render_errors(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "escape.txt": "Subject: hi\n\n{{ message.__class__.__mro__ }}\n",
            "undefined.txt": "Subject: {{ case.nmuber }}\n\nx\n",
            "runaway.txt": "Subject: hi\n\n{% for i in range(99999) %}0123456789{% endfor %}\n",
        },
    )
    templates = Templates.load(tmp_path)
    with pytest.raises(RenderError, match=r"escape\.txt: access to attribute '__class__'"):
        templates.get("escape").render(CONTEXT)
    with pytest.raises(RenderError, match=r"undefined\.txt: 'dict object' has no attribute"):
        templates.get("undefined").render(CONTEXT)
    assert len(templates.get("runaway").render(CONTEXT).text) == 100_000  # MAX_OUTPUT


def test_template_syntax_errors_give_the_line_in_the_file(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "body.txt": "Subject: hi\n\nHello\n{{ customer.name\nbye\n",
            "subject.txt": "Subject: {{ case.number\n\nHello\n",
            "page.txt": "Subject: ok\n\nHello\n",
            "page.html": "<p>\n{% if x %}\n",
            "good.txt": "Subject: ok\n\nfine\n",
        },
    )
    report: list[Problem] = []
    templates = Templates.load(tmp_path, report)
    assert [(Path(p.file).name, p.line, p.message.split(":")[0]) for p in report] == [
        ("body.txt", 5, "template error"),
        ("page.html", 2, "template error"),
        ("subject.txt", 1, "template error"),
    ]
    assert sorted(templates.templates) == ["good"]
    assert templates.broken == {"body", "page", "subject"}
    with pytest.raises(SourceError) as error:
        Templates.load(tmp_path)
    assert len(error.value.problems) == 3


# -- the guard: mail that is never answered ---------------------------------------------


@pytest.mark.parametrize(
    ("headers", "subject", "auto_reply"),
    [
        ({"auto-submitted": "auto-replied"}, "Re: your case", True),
        ({"auto-submitted": "auto-generated"}, "Weekly report", True),
        ({"auto-submitted": "No"}, "Question", False),  # RFC 3834: "no" is a person
        ({"x-autoreply": "yes"}, "Re: your case", True),
        ({"x-autorespond": "1"}, "Re: your case", True),
        ({"x-auto-response-suppress": "OOF, AutoReply"}, "Re: your case", True),
        ({"precedence": "bulk"}, "Newsletter", True),
        ({"precedence": "junk"}, "Offer", True),
        ({"precedence": "list"}, "Digest", True),
        ({"list-id": "<users.lists.example>"}, "[users] question", True),
        ({"list-unsubscribe": "<mailto:leave@lists.example>"}, "Our news", True),
        ({"x-loop": "helpdesk"}, "Re: your case", True),
        ({}, "Automatic reply: Cannot log in", True),
        ({}, "Out of Office: Cannot log in", True),
        ({}, "Out of the office until Monday", True),
        ({}, "AutoReply: Cannot log in", True),
        ({}, "Auto-Response: ticket received", True),
        ({}, "Abwesenheitsnotiz: Ihre Anfrage", True),
        ({}, "Automatische Antwort: Ihre Anfrage", True),
        ({}, "Réponse automatique : Votre demande", True),
        ({}, "Respuesta automática: Su consulta", True),
        ({}, "Fuera de la oficina: Su consulta", True),
        ({}, "Automatisch antwoord: Uw vraag", True),
        ({}, "Risposta automatica: La sua richiesta", True),
        ({}, "Autosvar: Din förfrågan", True),
        ({}, "Absence du bureau : Votre demande", True),
        ({}, "Absence of a confirmation email", False),
        ({}, "Cannot log in", False),
        ({}, "Re: Automatic reply settings do not work", False),
        ({}, "Automatic replies stopped working", False),
        ({"precedence": "first-class"}, "Cannot log in", False),
    ],
)
def test_auto_reply_detection(headers: dict[str, str], subject: str, auto_reply: bool) -> None:
    msg = message(subject=subject, headers=headers)
    assert guard.is_auto_reply(msg) is auto_reply
    assert (guard.never_answer(msg) == "the message is an auto-reply") is auto_reply


DSN = b"""\
From: Mail Delivery System <mta@mx.example.net>
To: support@example.com
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-1@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

This is the mail system. Your message could not be delivered.
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; gone@customer.example
Action: failed
Status: 5.1.1

--B--
"""


def test_bounces_are_recognised() -> None:
    dsn = mime.parse(DSN)
    assert guard.is_bounce(dsn)
    assert guard.never_answer(dsn) == "the message is a bounce"
    assert not guard.is_noreply(dsn.sender)  # the content type alone decides
    daemon = message(sender="MAILER-DAEMON@mx.example.net", subject="failure notice")
    assert guard.is_bounce(daemon)
    assert guard.is_noreply(daemon.sender)
    assert guard.is_bounce(message(sender="postmaster@customer.example"))
    assert guard.is_bounce(message(headers={"x-failed-recipients": "gone@customer.example"}))
    read_receipt = message(
        headers={"content-type": "multipart/report; report-type=disposition-notification"}
    )
    assert not guard.is_bounce(read_receipt)  # a read receipt is no delivery failure
    assert not guard.is_bounce(message())


def test_auto_submitted_header_through_the_mime_parser() -> None:
    oof = email(subject="Re: your case", Auto_Submitted="auto-replied")
    parsed = mime.parse(oof.as_bytes())
    assert guard.is_auto_reply(parsed)
    assert guard.never_answer(parsed) == "the message is an auto-reply"


@pytest.mark.parametrize(
    ("address", "noreply"),
    [
        ("noreply@shop.example", True),
        ("no-reply@shop.example", True),
        ("No_Reply@shop.example", True),
        ("no.reply+orders@shop.example", True),
        ("do-not-reply@shop.example", True),
        ("donotreply@shop.example", True),
        ("DoNotReply@shop.example", True),
        ("bounces+12345@lists.example", True),
        ("bounce-abc@lists.example", True),
        ("postmaster@customer.example", True),
        ("mailer-daemon@customer.example", True),
        ("bob@customer.example", False),
        ("replyteam@customer.example", False),
        ("noreplyguy@customer.example", False),
        ("nora@customer.example", False),
        ("+447700900123", False),  # not an email address
        ("noreply", False),
    ],
)
def test_noreply_addresses(address: str, noreply: bool) -> None:
    assert guard.is_noreply(address) is noreply


def test_a_normal_mail_is_none_of_these() -> None:
    normal = mime.parse(email(subject="Printer on floor 3 is jammed").as_bytes())
    assert not guard.is_auto_reply(normal)
    assert not guard.is_bounce(normal)
    assert not guard.is_noreply(normal.sender)
    assert guard.never_answer(normal) is None


def test_never_answer_names_the_first_reason() -> None:
    both = message(sender="no-reply@shop.example", headers={"auto-submitted": "auto-replied"})
    assert guard.never_answer(both) == "the message is an auto-reply"
    assert guard.never_answer(message(sender="no-reply@shop.example")) == (
        "the sender is a no-reply address"
    )


# -- hot reload -------------------------------------------------------------------------

VALID_V1 = """\
kind: record_creation
items:
  - name: Billing
    when: {message.subject: {contains: invoice}}
    then: {create_case: {category: Billing}}
"""
VALID_V2 = """\
kind: record_creation
items:
  - name: Billing
    when: {message.subject: {contains: [invoice, refund]}}
    then: {create_case: {category: Billing}}
  - name: Everything else
    then: {create_case: true}
"""
INVALID = """\
kind: record_creation
items:
  - name: Billing
    when: {message.subjct: {contains: invoice}}
    then: {create_case: {category: Billing}}
"""


class Files:
    """Writes files with mtimes that move forward by whole seconds, so that polling sees
    every edit however fast the test writes (file systems with coarse mtimes included)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tick = 0

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.tick += 1
        stamp = (1_700_000_000 + self.tick) * 1_000_000_000
        os.utime(path, ns=(stamp, stamp))
        return path


def watcher_config(tmp_path: Path, **extra: Any) -> Config:
    return Config.model_validate(
        {
            "rules_dir": str(tmp_path / "rules"),
            "templates_dir": str(tmp_path / "templates"),
            "queues": [{"name": q} for q in QUEUES],
            "default_queue": "General Support",
            **extra,
        }
    )


@pytest.fixture
def files(tmp_path: Path) -> Files:
    files = Files(tmp_path)
    files.write("templates/ack.txt", ACK)
    return files


def test_a_valid_edit_replaces_the_book(tmp_path: Path, files: Files) -> None:
    files.write("rules/10.yaml", VALID_V1)
    watcher = RuleWatcher(watcher_config(tmp_path))
    old = watcher.current
    assert [i.name for i in old.record_creation] == ["Billing"]
    assert watcher.poll() is False  # nothing changed

    files.write("rules/10.yaml", VALID_V2)
    assert watcher.poll() is False  # first sight of the edit: wait one interval
    assert watcher.current is old
    assert watcher.poll() is True
    new = watcher.current
    assert new is not old
    assert new.version != old.version
    assert [i.name for i in new.record_creation] == ["Billing", "Everything else"]
    assert [i.name for i in old.record_creation] == ["Billing"]  # the old book is untouched
    report = watcher.report()
    assert report["ok"] is True
    assert report["version"] == new.version
    assert (report["record_creation_items"], report["reload_failures"]) == (2, 0)
    assert "error" not in report
    assert watcher.poll() is False  # loaded once

    # A template edit is an edit of the rules too.
    files.write("templates/ack.txt", ACK.replace("Hello", "Dear"))
    assert watcher.poll() is False
    assert watcher.poll() is True
    assert watcher.current.version not in (old.version, new.version)


def test_an_invalid_edit_keeps_the_old_book(
    tmp_path: Path, files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    files.write("rules/10.yaml", VALID_V1)
    watcher = RuleWatcher(watcher_config(tmp_path))
    old = watcher.current

    caplog.set_level(logging.ERROR, logger="ingest.rulewatch")
    path = files.write("rules/10.yaml", INVALID)
    assert watcher.poll() is False
    assert watcher.poll() is False  # read, refused
    assert watcher.current is old
    assert watcher.status.ok is False
    assert watcher.status.failures == 1
    assert watcher.status.problems is not None
    [problem] = watcher.status.problems
    assert (problem.file, problem.line, problem.rule, problem.field) == (
        str(path),
        4,
        "Billing",
        "items[0].when.message.subjct",
    )
    report = watcher.report()
    assert report["ok"] is False
    assert report["version"] == old.version
    assert report["reload_failures"] == 1
    assert report["error"].startswith(
        f"the last edit was not loaded; the rules in force stay: {path}:4: rule 'Billing': "
    )
    [event] = [r for r in caplog.records if r.getMessage().startswith("rules not loaded")]
    assert event.__dict__["version_in_force"] == old.version
    assert event.__dict__["problems"][0]["line"] == 4

    # The same broken files are reported once, not at every poll.
    assert watcher.poll() is False
    assert watcher.poll() is False
    assert watcher.status.failures == 1

    # A fix is loaded, and the status recovers.
    files.write("rules/10.yaml", VALID_V2)
    assert watcher.poll() is False
    assert watcher.poll() is True
    assert watcher.status.ok is True
    assert watcher.status.problems is None
    assert watcher.report()["reload_failures"] == 1  # the count of failures stays
    assert "error" not in watcher.report()


def test_an_edit_in_progress_is_not_loaded_until_the_files_are_still(
    tmp_path: Path, files: Files
) -> None:
    files.write("rules/10.yaml", VALID_V1)
    watcher = RuleWatcher(watcher_config(tmp_path))
    old = watcher.current
    # A half-saved file, then the rest of the save, then a second file: each poll
    # sees the files changing, so none of it is read.
    files.write("rules/10.yaml", VALID_V2[:60])
    assert watcher.poll() is False
    files.write("rules/10.yaml", VALID_V2)
    assert watcher.poll() is False
    files.write(
        "rules/20.yaml",
        "kind: routing\nitems:\n  - name: Billing to billing\n"
        "    when: {case.category: Billing}\n    then: {queue: Billing}\n",
    )
    assert watcher.poll() is False
    assert watcher.current is old
    assert watcher.status.ok
    assert watcher.status.failures == 0
    assert watcher.poll() is True  # still for one interval: loaded whole
    assert [i.name for i in watcher.current.record_creation] == ["Billing", "Everything else"]
    assert [i.name for i in watcher.current.routing] == ["Billing to billing"]
    # Removing a file is an edit as well.
    (tmp_path / "rules" / "20.yaml").unlink()
    assert watcher.poll() is False
    assert watcher.poll() is True
    assert watcher.current.routing == ()


def test_invalid_rules_at_start_run_the_fallback_book(tmp_path: Path, files: Files) -> None:
    files.write("rules/10.yaml", INVALID)
    watcher = RuleWatcher(watcher_config(tmp_path, rules_unmatched="skip"))
    book = watcher.current
    assert book.version == "fallback"
    assert book.record_creation == ()
    assert book.routing == ()
    assert book.settings.unmatched == "create_case"  # nothing skipped on a typo
    assert watcher.status.ok is False
    assert watcher.status.failures == 1
    report = watcher.report()
    assert report["version"] == "fallback"
    assert report["error"].startswith(
        "the rules could not be loaded at start; every message becomes a case in the default"
        " queue until they are fixed: "
    )
    assert "rule 'Billing': items[0].when.message.subjct: unknown field" in report["error"]
    # Fixing the files brings the real rules in.
    files.write("rules/10.yaml", VALID_V1)
    assert watcher.poll() is False
    assert watcher.poll() is True
    assert watcher.current.version != "fallback"
    assert watcher.status.ok


def test_the_fallback_book_makes_every_message_a_case(tmp_path: Path, files: Files) -> None:
    files.write("rules/10.yaml", INVALID)
    h = Harness(
        f"sqlite:///{tmp_path / 'fallback.db'}",
        rules_dir=str(tmp_path / "rules"),
        templates_dir=str(tmp_path / "templates"),
        rules_unmatched="skip",
    )
    try:
        receipts = [
            h.deliver(email(subject="Automatic reply: away", sender="new@stranger.example")),
            h.deliver(email(subject="Invoice 12", sender="other@stranger.example")),
        ]
        assert h.process() == 2
        for receipt in receipts:
            row = h.row(receipt.journal_id)
            assert row.outcome == Outcome.CREATED.value
            assert row.rules_version == "fallback"
            assert row.decided_by == intake.UNMATCHED_CREATE
            assert row.case_number is not None
            case = h.case(row.case_number)
            assert case.queue is not None
            assert case.queue.name == "General Support"
    finally:
        h.close()


# -- decide and apply on both stores ----------------------------------------------------

INTAKE_RULES = """\
kind: record_creation
name: Intake
defaults:
  create_contact: true
  resolved_case_window: {hours: 24, reopen: true}
items:
  - name: Newsletters
    when: {message.from_domain: news.example}
    then: {ignore: true}
  - name: Follow-ups only
    when: {message.subject: {starts_with: "[follow-up]"}}
    then: {existing_case_only: true}
  - name: Known senders only
    when: {message.subject: {starts_with: "[known only]"}}
    then: {create_case: true, create_contact: false}
  - name: Contract support
    when: {message.subject: {starts_with: "[contract]"}}
    then:
      create_case: {priority: High, category: Contract}
      require_entitlement: true
      queue: Gold Support
  - name: Sandbox probe
    when: {message.subject: {starts_with: "[probe]"}}
    then:
      create_case:
        title: "{{ message.__class__.__mro__ }}"
        priority: "{{ 'urgent' }}"
        custom: {sender: "{{ message.sender }}"}
  - name: Everything else
    then: {create_case: true}
"""


def intake_harness(url: str, tmp_path: Path) -> Harness:
    write_tree(tmp_path, {"rules/10-intake.yaml": INTAKE_RULES, "templates/ack.txt": ACK})
    return Harness(
        url,
        rules_dir=str(tmp_path / "rules"),
        templates_dir=str(tmp_path / "templates"),
        queues=[{"name": q} for q in QUEUES],
        default_queue="General Support",
    )


@pytest.fixture
def intake_h(database: Database, tmp_path: Path) -> Iterator[Harness]:
    """On each store the daemon supports."""
    harness = intake_harness(database.url, tmp_path)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def intake_sqlite(tmp_path: Path) -> Iterator[Harness]:
    """For what does not depend on the store."""
    harness = intake_harness(f"sqlite:///{tmp_path / 'intake.db'}", tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def parsed(
    subject: str, sender: str = "Ann Lee <ann@customer.example>", **headers: str
) -> InboundMessage:
    return mime.parse(email(subject=subject, sender=sender, **headers).as_bytes())


def add_customer(h: Harness, address: str) -> tuple[int, int]:
    """A contact in an account; returns (contact id, account id)."""
    now = h.clock.now()
    with h.store.write() as session:
        account = Account(
            name="Customer Ltd", tier="Gold", attributes={}, created_at=now, updated_at=now
        )
        contact = Contact(
            full_name="Ann Lee",
            email=address,
            attributes={},
            account=account,
            created_at=now,
            updated_at=now,
        )
        session.add(ContactIdentity(contact=contact, kind="email", address=address, created_at=now))
        session.flush()
        return contact.id, account.id


def add_entitlement(h: Harness, account_id: int, start: date, end: date) -> int:
    now = h.clock.now()
    with h.store.write() as session:
        entitlement = Entitlement(
            name="Premium support",
            account_id=account_id,
            start_date=start,
            end_date=end,
            state="Active",
            total_terms=None,
            remaining_terms=None,
            created_at=now,
            updated_at=now,
        )
        session.add(entitlement)
        session.flush()
        return entitlement.id


@dataclass(frozen=True)
class Applied:
    outcome: Outcome
    decided_by: str
    reason: str | None
    case_number: str | None
    problems: list[str]


def decide_and_apply(h: Harness, msg: InboundMessage) -> Applied:
    book = h.pipeline.rules.current
    now = h.clock.now()
    with h.store.write() as session:
        decision = intake.decide(session, book, msg, now, h.pipeline.env)
        case = intake.apply(session, decision, msg, None, now, book)
        return Applied(
            decision.outcome,
            decision.decided_by,
            decision.reason,
            case.number if case is not None else None,
            list(decision.new_case.problems) if decision.new_case else [],
        )


def test_unknown_senders_and_entitlements(intake_h: Harness) -> None:
    h = intake_h
    stranger = decide_and_apply(h, parsed("[known only] hello", "New <new@stranger.example>"))
    assert stranger == Applied(
        Outcome.SKIPPED,
        "rule 'Known senders only' (10-intake.yaml)",
        "unknown sender, and the rule does not create contacts",
        None,
        [],
    )
    assert (h.count(Contact), h.count(Case)) == (0, 0)  # skipped: no contact either

    _, account_id = add_customer(h, "ann@customer.example")
    known = decide_and_apply(h, parsed("[known only] hello again"))
    assert known.outcome is Outcome.CREATED
    assert known.case_number is not None
    assert h.count(Contact) == 1

    contract = "[contract] the printer is down"
    without = decide_and_apply(h, parsed(contract))
    assert (without.outcome, without.reason) == (
        Outcome.SKIPPED,
        "no valid entitlement for this customer on email",
    )
    today = h.clock.now().date()
    add_entitlement(h, account_id, today - timedelta(days=60), today - timedelta(days=1))
    expired = decide_and_apply(h, parsed(contract))
    assert expired.outcome is Outcome.SKIPPED  # an expired entitlement does not count

    entitlement_id = add_entitlement(h, account_id, today - timedelta(days=1), today)
    entitled = decide_and_apply(h, parsed(contract))
    assert entitled.outcome is Outcome.CREATED
    assert entitled.case_number is not None
    assert entitled.decided_by == "rule 'Contract support' (10-intake.yaml)"
    case = h.case(entitled.case_number)
    assert case.entitlement_id == entitlement_id
    assert (case.priority, case.category) == ("High", "Contract")
    assert case.queue is not None
    assert case.queue.name == "Gold Support"
    assert case.decided_by == entitled.decided_by
    assert case.rules_version == h.pipeline.rules.current.version
    assert h.count(Case) == 2


def test_a_sandbox_escape_in_an_expression_leaves_the_case_standing(
    intake_sqlite: Harness,
) -> None:
    applied = decide_and_apply(intake_sqlite, parsed("[probe] hello", "Eve <eve@customer.example>"))
    assert applied.outcome is Outcome.CREATED
    assert applied.case_number is not None
    assert len(applied.problems) == 2
    title, priority = applied.problems
    assert title.startswith("rule 'Sandbox probe' (10-intake.yaml) title: expression: access to")
    assert "'__class__' of 'dict' object is unsafe" in title
    assert priority == "rule 'Sandbox probe' (10-intake.yaml) priority: 'urgent' is not a priority"
    case = intake_sqlite.case(applied.case_number)
    assert case.title == "[probe] hello"  # the default title
    assert case.priority == "Normal"
    assert case.custom == {"sender": "eve@customer.example"}


def test_ignored_and_append_only_messages_are_journaled_as_skipped(intake_h: Harness) -> None:
    h = intake_h
    newsletter = h.deliver(email(subject="Our March news", sender="News <info@NEWS.example>"))
    follow_up = h.deliver(email(subject="[follow-up] any news?"))
    assert h.process() == 2
    row = h.row(newsletter.journal_id)
    assert row.outcome == Outcome.SKIPPED.value
    assert row.decided_by == "rule 'Newsletters' (10-intake.yaml)"
    assert row.reason == "ignored by rule 'Newsletters'"
    assert row.case_number is None
    assert row.rules_version == h.pipeline.rules.current.version
    row = h.row(follow_up.journal_id)
    assert (row.outcome, row.decided_by, row.reason) == (
        Outcome.SKIPPED.value,
        "rule 'Follow-ups only' (10-intake.yaml)",
        "the rule adds to existing cases only, and none was found",
    )
    assert (h.count(Case), h.count(Contact)) == (0, 0)


def _resolve(h: Harness, number: str) -> None:
    with h.store.write() as session:
        case = session.execute(select(Case).where(Case.number == number)).scalar_one()
        case.state = CaseState.RESOLVED.value
        case.status_reason = StatusReason.PROBLEM_SOLVED.value
        case.resolved_at = h.clock.now()


def test_resolved_case_window_on_both_sides_of_n_hours(intake_h: Harness) -> None:
    h = intake_h
    first = h.deliver(email(subject="Printer jammed", message_id="<first@customer.example>"))
    h.process()
    number = h.row(first.journal_id).case_number
    assert number is not None
    _resolve(h, number)

    # 23:59:59 after resolution: the reply joins the case and reopens it.
    h.advance(hours=23, minutes=59, seconds=59)
    inside = h.deliver(email(subject="Re: Printer jammed", in_reply_to="<first@customer.example>"))
    h.process()
    row = h.row(inside.journal_id)
    assert (row.outcome, row.case_number) == (Outcome.APPENDED.value, number)
    assert row.decided_by == (
        "thread:in-reply-to; resolved-case window of rule 'Everything else' (10-intake.yaml)"
    )
    case = h.case(number)
    assert (case.state, case.status_reason, case.resolved_at) == (
        CaseState.ACTIVE.value,
        StatusReason.IN_PROGRESS.value,
        None,
    )
    assert len(case.activities) == 2

    # Exactly 24 hours after the second resolution: a new case, linked to the old one.
    _resolve(h, number)
    h.advance(hours=24)
    outside = h.deliver(email(subject="Re: Printer jammed", in_reply_to="<first@customer.example>"))
    h.process()
    row = h.row(outside.journal_id)
    assert row.outcome == Outcome.CREATED.value
    assert row.case_number not in (None, number)
    assert row.decided_by == "rule 'Everything else' (10-intake.yaml)"
    assert row.case_number is not None
    new = h.case(row.case_number)
    old = h.case(number)
    assert new.previous_case_id == old.id
    assert old.state == CaseState.RESOLVED.value  # the old case stays resolved
    assert len(old.activities) == 2


# -- `ingestd rules check` and `ingestd rules test`, as real commands --------------------


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass(frozen=True)
class CliRuns:
    runs: dict[str, Run]
    rows_before: dict[str, int]
    rows_after: dict[str, int]
    book: RuleBook
    bad_dir: Path


def _row_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}


GOLD_EML = b"""\
From: Grace Gold <Gold@Customer.Example>
To: support@example.com
Subject: Printer on floor 3 is jammed
Message-ID: <gold-1@customer.example>
Date: Wed, 04 Mar 2026 09:58:00 +0000
Content-Type: text/plain; charset=utf-8

It shows error E42 since this morning.
"""
OOF_EML = b"""\
From: Grace Gold <gold@customer.example>
To: support@example.com
Subject: Automatic reply: We have your message
Auto-Submitted: auto-replied
Message-ID: <oof-1@customer.example>
Content-Type: text/plain; charset=utf-8

I am out of the office until Monday.
"""
SMS_JSON = {
    "channel": "sms",
    "id": "SM123",
    "from": "+447700900123",
    "to": ["+441234567890"],
    "text": "Hello, my invoice number 12345 is charged twice",
}
BAD_RULES = """\
kind: record_creation
items:
  - name: Typo
    when:
      message.subjet: hello
    then:
      create_case: true
      queue: Nowhere
"""


def seed_store(db: Path) -> None:
    """A migrated SQLite store that knows one customer: Grace Gold, of a Gold account."""
    store = Store(DatabaseConfig(url=f"sqlite:///{db}"))
    store.migrate()
    now = datetime(2026, 3, 1, tzinfo=UTC)
    with store.write() as session:
        account = Account(
            name="Gold Ltd", tier="Gold", attributes={}, created_at=now, updated_at=now
        )
        contact = Contact(
            full_name="Grace Gold",
            email="gold@customer.example",
            attributes={},
            account=account,
            created_at=now,
            updated_at=now,
        )
        session.add(
            ContactIdentity(
                contact=contact, kind="email", address="gold@customer.example", created_at=now
            )
        )
    store.dispose()


@dataclass(frozen=True)
class Started:
    processes: dict[str, subprocess.Popen[bytes]]
    output: Path
    db: Path
    rows_before: dict[str, int]
    book: RuleBook
    bad_dir: Path


@pytest.fixture(scope="module")
def cli_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """Every command started once, all at the same time: each costs a Python start-up."""
    root = tmp_path_factory.mktemp("cli")
    db = root / "store.db"
    seed_store(db)
    (root / "gold.eml").write_bytes(GOLD_EML)
    (root / "sms.json").write_text(json.dumps(SMS_JSON))
    bad_dir = write_tree(root / "bad", {"10-bad.yaml": BAD_RULES})

    book = load_shipped()
    rows_before = _row_counts(db)

    commands = {
        "check": ["rules", "check", "--json"],
        "check_bad": ["rules", "check", str(bad_dir), "--json"],
        "test_eml": ["rules", "test", str(root / "gold.eml"), "--json", "--at", "2026-03-04T10:00"],
        "test_sms": ["rules", "test", str(root / "sms.json"), "--json", "--rules", "rules"],
    }
    env = {**os.environ, "INGESTD_DATABASE_URL": f"sqlite:///{db}"}
    env.pop("INGESTD_CONFIG", None)
    processes = {}
    for name, args in commands.items():
        with (root / f"{name}.out").open("wb") as out, (root / f"{name}.err").open("wb") as err:
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", "ingest", "--config", "config/ingestd.yaml", *args],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=err,
            )
    try:
        yield Started(processes, root, db, rows_before, book, bad_dir)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="module", autouse=True)
def _cli_starts_with_the_module(request: pytest.FixtureRequest) -> None:
    """The commands run in the background while the in-process tests run, when any
    test that needs them is selected."""
    if any(
        "cli" in getattr(item, "fixturenames", ())
        and getattr(item, "module", None) is request.module
        for item in request.session.items
    ):
        request.getfixturevalue("cli_started")


@pytest.fixture(scope="module")
def cli(cli_started: Started) -> CliRuns:
    runs = {}
    for name, process in cli_started.processes.items():
        process.wait(timeout=60)
        runs[name] = Run(
            process.returncode,
            (cli_started.output / f"{name}.out").read_text(),
            (cli_started.output / f"{name}.err").read_text(),
        )
    return CliRuns(
        runs,
        cli_started.rows_before,
        _row_counts(cli_started.db),
        cli_started.book,
        cli_started.bad_dir,
    )


def test_rules_check_valid(cli: CliRuns) -> None:
    run = cli.runs["check"]
    assert run.returncode == 0, run.stderr
    report = run.json()
    assert set(report) == {
        "valid",
        "rules_dir",
        "version",
        "loaded_at",
        "files",
        "record_creation_items",
        "routing_items",
        "templates",
    }
    assert report["valid"] is True
    assert report["rules_dir"] == "rules"
    assert report["version"] == cli.book.version  # the same digest in every process
    assert report["files"] == ["10-record-creation.yaml", "20-routing.yaml"]
    assert report["record_creation_items"] == len(cli.book.record_creation)
    assert report["routing_items"] == len(cli.book.routing)
    assert "acknowledgement" in report["templates"]
    datetime.fromisoformat(report["loaded_at"])


def test_rules_check_invalid(cli: CliRuns) -> None:
    run = cli.runs["check_bad"]
    assert run.returncode == 1, run.stderr
    report = run.json()
    path = str(cli.bad_dir / "10-bad.yaml")
    assert report == {
        "valid": False,
        "rules_dir": str(cli.bad_dir),
        "problems": [
            {
                "file": path,
                "line": 5,
                "rule": "Typo",
                "field": "items[0].when.message.subjet",
                "message": "unknown field 'message.subjet'; did you mean message.subject? "
                "(see the rules reference in the README)",
            },
            {
                "file": path,
                "line": 8,
                "rule": "Typo",
                "field": "items[0].then.queue",
                "message": "unknown queue 'Nowhere' (queues in config: General Support, "
                "Gold Support, Billing)",
            },
        ],
    }


def _line(book: RuleBook, name: str) -> int | None:
    return next(i.line for i in (*book.record_creation, *book.routing) if i.name == name)


def test_rules_test_an_eml_from_a_known_gold_customer(cli: CliRuns) -> None:
    run = cli.runs["test_eml"]
    assert run.returncode == 0, run.stderr
    report = run.json()
    book = cli.book
    assert report["rules_version"] == book.version
    assert report["evaluated_at"] == "2026-03-04T10:00:00+00:00"
    assert report["customers_from"] == "the store"
    assert report["message"] == {
        "channel": "email",
        "from": "gold@customer.example",
        "subject": "Printer on floor 3 is jammed",
    }
    assert report["customer"] == {"known": True, "name": "Grace Gold"}
    first = "Automatic replies and bounces"
    assert report["record_creation"] == [
        {
            "rule": first,
            "file": "rules/10-record-creation.yaml",
            "line": _line(book, first),
            "matched": False,
            "why_not": "none of: message.auto_reply equals True: it is False;"
            " message.bounce equals True: it is False",
        },
        {
            "rule": "Gold customers",
            "file": "rules/10-record-creation.yaml",
            "line": _line(book, "Gold customers"),
            "matched": True,
            "why_not": None,
        },
    ]
    route = "High priority to Gold Support"
    assert report["routing"] == [
        {
            "rule": route,
            "file": "rules/20-routing.yaml",
            "line": _line(book, route),
            "matched": True,
            "why_not": None,
            "queue": "Gold Support",
        }
    ]
    assert report["outcome"] == "created"
    assert report["decided_by"] == (
        "rule 'Gold customers' (10-record-creation.yaml);"
        " routing: rule 'High priority to Gold Support' (20-routing.yaml)"
    )
    assert (report["reason"], report["appended_to"], report["reopens"]) == (None, None, False)
    assert report["case"] == {
        "title": "Printer on floor 3 is jammed",
        "priority": "High",
        "queue": "Gold Support",
        "routed_by": "rule 'High priority to Gold Support' (20-routing.yaml)",
        "product": None,
        "category": None,
        "custom": {},
        "follows": None,
        "contact_created": False,
        "expression_errors": [],
    }
    answer = report["auto_response"]
    assert set(answer) == {"template", "to", "subject", "text"}
    assert (answer["template"], answer["to"]) == ("acknowledgement", "gold@customer.example")
    assert answer["subject"] == "[CAS-(new)] We have your message: Printer on floor 3 is jammed"
    assert answer["text"].startswith("Hello Grace Gold,\n")
    assert "case CAS-(new), and our priority team has it." in answer["text"]


def test_rules_test_a_json_sms_from_a_stranger(cli: CliRuns) -> None:
    run = cli.runs["test_sms"]
    assert run.returncode == 0, run.stderr
    report = run.json()
    assert report["message"] == {"channel": "sms", "from": "+447700900123", "subject": ""}
    assert report["customer"] == {"known": False, "name": None}
    assert [(r["rule"], r["matched"], r["why_not"]) for r in report["record_creation"]] == [
        (
            "Automatic replies and bounces",
            False,
            "none of: message.auto_reply equals True: it is False;"
            " message.bounce equals True: it is False",
        ),
        ("Gold customers", False, "customer.tier in ['gold', 'platinum']: it is None"),
        ("Billing questions", True, None),
    ]
    assert [(r["rule"], r["matched"], r["why_not"], r["queue"]) for r in report["routing"]] == [
        (
            "High priority to Gold Support",
            False,
            "case.priority equals 'High': it is 'Normal'",
            "Gold Support",
        ),
        ("Billing category to Billing", True, None, "Billing"),
    ]
    assert report["outcome"] == "created"
    case = report["case"]
    assert (case["title"], case["priority"], case["category"], case["queue"]) == (
        "Hello, my invoice number 12345 is charged twice",
        "Normal",
        "Billing",
        "Billing",
    )
    assert case["contact_created"] is True
    # Only email can carry an auto-response so far: the rule's is withheld, with why.
    assert report["auto_response"] == {
        "template": "acknowledgement",
        "to": "+447700900123",
        "withheld": "no auto-responses on sms yet",
    }


def run_cli_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str, seed: bool = True
) -> tuple[int, str, str]:
    """The text output, which leads read: `ingestd` in this process (the commands run
    as real subprocesses above, in JSON)."""
    from ingest.cli import main

    db = tmp_path / "store.db"
    if seed:
        seed_store(db)
    config = tmp_path / "ingestd.yaml"
    config.write_text(
        json.dumps(
            {
                "database": {"url": f"sqlite:///{db}"},
                "rules_dir": str(REPO / "rules"),
                "templates_dir": str(REPO / "templates"),
                "queues": [{"name": q} for q in QUEUES],
                "default_queue": "General Support",
            }
        )
    )
    capsys.readouterr()
    code = main(["--config", str(config), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_rules_test_prints_the_trace_and_the_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "oof.eml").write_bytes(OOF_EML)
    code, out, _ = run_cli_in_process(tmp_path, capsys, "rules", "test", str(tmp_path / "oof.eml"))
    assert code == 0
    first = "Automatic replies and bounces"
    line = next(i.line for i in load_shipped().record_creation if i.name == first)
    assert "email from gold@customer.example: 'Automatic reply: We have your message'" in out
    assert "customer: Grace Gold (known)" in out
    assert any(
        first in row and f"10-record-creation.yaml:{line}" in row and "matched" in row
        for row in out.splitlines()
    ), out
    assert f"outcome: skipped  (rule '{first}' (10-record-creation.yaml))" in out
    assert f"reason: ignored by rule '{first}'" in out
    assert "the case that would be created" not in out
    assert "auto-response" not in out


def test_rules_test_prints_why_earlier_items_did_not_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sms.json").write_text(json.dumps(SMS_JSON))
    code, out, _ = run_cli_in_process(tmp_path, capsys, "rules", "test", str(tmp_path / "sms.json"))
    assert code == 0
    rows = out.splitlines()
    assert any(
        "Gold customers" in row and "no: customer.tier in ['gold', 'platinum']: it is None" in row
        for row in rows
    ), out
    assert any(
        "High priority to Gold Support" in row
        and "no: case.priority equals 'High': it is 'Normal'" in row
        for row in rows
    ), out
    assert "customer: unknown" in out
    assert "the case that would be created:" in out
    assert "  queue      Billing" in rows
    assert "  category   Billing" in rows
    assert "auto-response 'acknowledgement' withheld: no auto-responses on sms yet" in out


def test_rules_test_refuses_a_bad_time_or_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sms.json").write_text(json.dumps({"channel": "fax", "from": "+4471"}))
    code, out, err = run_cli_in_process(
        tmp_path, capsys, "rules", "test", str(tmp_path / "sms.json"), seed=False
    )
    assert (code, out) == (2, "")
    assert "unknown channel 'fax' (one of email, sms, telegram, twitter)" in err
    (tmp_path / "sms.json").write_text(json.dumps(SMS_JSON))
    code, out, err = run_cli_in_process(
        tmp_path, capsys, "rules", "test", str(tmp_path / "sms.json"), "--at", "noon", seed=False
    )
    assert (code, out) == (2, "")
    assert "--at 'noon' is not an ISO time" in err


def test_rules_check_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_tree(tmp_path / "bad", {"10-bad.yaml": BAD_RULES})
    code, out, _ = run_cli_in_process(tmp_path, capsys, "rules", "check", str(bad), seed=False)
    path = bad / "10-bad.yaml"
    assert code == 1
    assert out.splitlines() == [
        f"{bad}: 2 problems; the rules are not valid",
        f"  {path}:5: rule 'Typo': items[0].when.message.subjet: unknown field"
        " 'message.subjet'; did you mean message.subject? (see the rules reference in the"
        " README)",
        f"  {path}:8: rule 'Typo': items[0].then.queue: unknown queue 'Nowhere' (queues in"
        " config: General Support, Gold Support, Billing)",
    ]
    code, out, _ = run_cli_in_process(tmp_path, capsys, "rules", "check", seed=False)
    assert code == 0
    assert out.startswith(f"{REPO / 'rules'}: valid, version {load_shipped().version}: 2 files,")


def test_rules_test_writes_nothing(cli: CliRuns) -> None:
    assert cli.rows_before["contacts"] == 1  # the seeded customer
    assert cli.rows_after == cli.rows_before
    for name in ("test_eml", "test_sms"):
        assert "using an empty store" not in cli.runs[name].stderr


def test_a_loader_crash_is_a_refused_edit_not_a_dead_daemon(tmp_path: Path) -> None:
    from ingest.config import Config
    from ingest.rulewatch import RuleWatcher

    rules = tmp_path / "rules"
    rules.mkdir()
    # Deep enough to exhaust Python's recursion in the YAML composer.
    (rules / "deep.yaml").write_text("kind: record_creation\nitems: " + "[" * 20000 + "]" * 20000)
    config = Config.model_validate(
        {"rules_dir": str(rules), "templates_dir": str(tmp_path / "templates")}
    )
    watcher = RuleWatcher(config)
    assert watcher.current.version == "fallback"
    assert watcher.status.ok is False
    assert watcher.status.problems is not None
    assert "the rules could not be loaded: RecursionError" in str(watcher.status.problems[0])
