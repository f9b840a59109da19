"""SMS: signatures (Twilio's published test vector), phone numbers, parsing, sending."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import ValidationError

from channels.signatures import hmac_problem, hmac_signature, twilio_signature, twilio_valid
from channels.sms import SmsWebhooks
from channels.sms_out import SmsSender
from channels.sms_parse import parse
from channels.textsplit import split, split_numbered, utf16_length, x_weighted_length
from ingest.config import Config
from ingest.phone import NotAPhoneNumber, e164, region_of, sender_address
from ingest.store.models import OutboxState
from tests.chatkit import ChatKit
from tests.providers import FakeSmsProvider, serving

# Twilio's documented example ("Validating Signatures from Twilio", twilio.com/docs/usage/security)
TWILIO_DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
TWILIO_DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_twilio_signature_matches_the_published_test_vector() -> None:
    params = list(TWILIO_DOC_PARAMS.items())
    assert twilio_signature("12345", TWILIO_DOC_URL, params) == TWILIO_DOC_SIGNATURE
    assert twilio_valid("12345", TWILIO_DOC_URL, params, TWILIO_DOC_SIGNATURE)
    # The vectors of Twilio's own SDK tests: other numbers, repeated names, ports.
    sdk = {**TWILIO_DOC_PARAMS, "Caller": "+14158675309", "From": "+14158675309"}
    assert twilio_signature("12345", TWILIO_DOC_URL, sdk.items()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert twilio_signature("12345", TWILIO_DOC_URL, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert twilio_valid("12345", TWILIO_DOC_URL, sdk.items(), "kvajT1Ptam85bY51eRf/AJRuM3w=")
    with_port = TWILIO_DOC_URL.replace(".com", ".com:1234")
    assert twilio_valid("12345", with_port, sdk.items(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


@pytest.mark.parametrize(
    ("token", "url", "change"),
    [
        ("12346", TWILIO_DOC_URL, {}),  # another account's token
        ("12345", TWILIO_DOC_URL.replace("foo=1", "foo=2"), {}),  # another URL
        ("12345", TWILIO_DOC_URL, {"Digits": "1235"}),  # a changed parameter
        ("12345", TWILIO_DOC_URL, {"Extra": ""}),  # an added one
    ],
)
def test_twilio_signature_refuses_any_change(token: str, url: str, change: dict[str, str]) -> None:
    params = {**TWILIO_DOC_PARAMS, **change}
    assert not twilio_valid(token, url, params.items(), TWILIO_DOC_SIGNATURE)


def test_generic_hmac_signature_and_replay_window() -> None:
    body = b'{"id": "m1", "from": "+4915112345678", "text": "Hallo"}'
    good = hmac_signature("secret-0123", "1700000000", body)
    assert good.startswith("v1=")
    assert len(good) == 67

    def check(
        ts: str | None, sig: str | None, data: bytes = body, now: float = 1_700_000_100.0
    ) -> str | None:
        return hmac_problem("secret-0123", ts, sig, data, now, 300)

    assert check("1700000000", good) is None
    assert check("1700000000", None) == "missing signature or timestamp"
    assert check(None, good) == "missing signature or timestamp"
    assert check("1700000000", good.replace("v1=", "v1=0")[:67]) == "bad signature"
    assert check("1700000000", good, body + b" ") == "bad signature"
    assert check("1700000001", good) == "bad signature"  # the timestamp is signed too
    stale = check("1700000000", good, now=1_700_000_301.0)
    assert stale is not None
    assert stale.startswith("stale")
    future = hmac_signature("secret-0123", "1700000200", body)
    assert check("1700000200", future, now=1_700_000_000.0) is None  # a clock a bit ahead
    assert (
        check("1700000301", hmac_signature("secret-0123", "1700000301", body), now=1_700_000_000.0)
        is not None
    )


def test_phone_numbers_become_e164() -> None:
    assert e164("+49 (151) 123-45678") == "+4915112345678"
    assert e164("0151 12345678", "DE") == "+4915112345678"
    assert e164("(415) 555-0100", "US") == "+14155550100"
    with pytest.raises(NotAPhoneNumber):
        e164("0151 12345678")  # national, and no region to read it in
    with pytest.raises(NotAPhoneNumber):
        e164("+1 23")
    assert sender_address("72345") == "72345"  # a short code stays who wrote
    assert sender_address(" ACME Bank ") == "ACMEBank"
    assert region_of("+4915112345678") == "DE"
    with pytest.raises(ValidationError, match=r"E\.164"):
        Config.model_validate(
            {
                "sms": {
                    "accounts": [
                        {
                            "name": "t",
                            "provider": "twilio",
                            "account_sid": "AC1",
                            "auth_token": "x",
                            "numbers": ["555-0100"],
                        }
                    ]
                }
            }
        )


def test_twilio_form_and_generic_json_become_messages() -> None:
    form = urlencode(
        [
            ("ToCountry", "US"),
            ("SmsMessageSid", "SM1"),
            ("NumMedia", "2"),
            ("Body", "Photo of the damage"),
            ("FromCountry", "DE"),
            ("To", "+14155550100"),
            ("NumSegments", "1"),
            ("MessageSid", "SM1"),
            ("AccountSid", "AC1"),
            ("From", "+4915112345678"),
            ("ApiVersion", "2010-04-01"),
            ("MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/SM1/Media/ME1"),
            ("MediaContentType0", "image/jpeg"),
            ("MediaUrl1", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/SM1/Media/ME2"),
            ("MediaContentType1", "video/mp4"),
        ]
    ).encode()
    msg = parse(form, {"provider": "twilio", "account": "main", "external_id": "SM1"})
    assert (msg.sender, msg.identity_kind, msg.recipients) == (
        "+4915112345678",
        "phone",
        ["+14155550100"],
    )
    assert [
        (a.url.rpartition("/")[2] if a.url else None, a.content_type, a.data)
        for a in msg.attachments
    ] == [("ME1", "image/jpeg", b""), ("ME2", "video/mp4", b"")]
    assert msg.fields["sms.from_country"] == "DE"
    assert msg.fields["sms.media_count"] == 2
    assert msg.reply_route is not None
    assert msg.reply_route.as_dict() == {
        "recipient": "+4915112345678",
        "headers": {"SMS-Account": "main", "SMS-From": "+14155550100"},
    }

    generic = parse(
        b'{"id": "g1", "from": "+4930123456", "to": "+4930999", "text": "",'
        b' "media": [{"url": "https://cdn.example/a.png", "content_type": "image/png"}],'
        b' "sent_at": "2026-11-26T09:00:00Z"}',
        {
            "provider": "generic",
            "account": "gw",
            "from": "+4930123456",
            "to": "+4930999",
            "external_id": "gw:g1",
        },
    )
    assert generic.text == "[MMS without text]"
    assert generic.sent_at is not None
    assert generic.sent_at.isoformat() == "2026-11-26T09:00:00+00:00"
    assert generic.fields["sms.provider"] == "generic"


def test_text_is_split_where_channels_need_it() -> None:
    assert split("short", 10) == ["short"]
    parts = split("First paragraph here.\n\nSecond paragraph that is longer.", 30)
    assert parts == ["First paragraph here.", "Second paragraph that is", "longer."]
    assert split("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert utf16_length("😀") == 2
    assert x_weighted_length("a" * 10) == 10
    assert x_weighted_length("日本語") == 6  # CJK counts double
    assert x_weighted_length("see https://example.com/a/very/long/path/indeed") == 4 + 23
    numbered = split_numbered("word " * 120, 280, x_weighted_length)
    assert [p.rpartition(" ")[2] for p in numbered] == ["(1/3)", "(2/3)", "(3/3)"]
    assert all(x_weighted_length(p) <= 280 for p in numbered)


def test_sms_sender_speaks_twilio_and_the_generic_provider(tmp_path: Any) -> None:
    with serving(FakeSmsProvider()) as fake:

        async def run() -> None:
            config = {
                "accounts": [
                    {
                        "name": "main",
                        "provider": "twilio",
                        "account_sid": fake.account_sid,
                        "auth_token": fake.auth_token,
                        "numbers": ["+14155550100"],
                        "api_base_url": fake.server.url,
                    },
                    {
                        "name": "gw",
                        "provider": "generic",
                        "secret": fake.generic_secret,
                        "numbers": ["+4930123456"],
                        "send_url": f"{fake.server.url}/send",
                    },
                ]
            }
            async with ChatKit(f"sqlite:///{tmp_path / 'db.sqlite'}", sms=config) as kit:
                sender = SmsSender(kit.config.sms)
                long_text = "Your replacement router ships today. " * 60  # ~2,200 characters
                split_row = kit.enqueue(
                    "sms", "+4915112345678", long_text, **{"SMS-Account": "main"}
                )
                generic_row = kit.enqueue(
                    "sms", "+4915199999999", "Hallo!", **{"SMS-From": "+4930123456"}
                )
                plain = kit.enqueue("sms", "+4915100000000", "Hello", **{"SMS-Account": "main"})
                assert await kit.send_outbox({"sms": sender}) == 3
                rows = {r.id: r for r in kit.outbox_rows()}
                assert rows[split_row].state == "sent", rows[split_row].last_error
                messages = fake.server.call(lambda: list(fake.messages))
                assert [m["To"] for m in messages[:2]] == ["+4915112345678"] * 2
                assert all(m["From"] == "+14155550100" for m in messages)
                assert all(len(m["Body"]) <= 1600 for m in messages)
                assert " ".join(m["Body"] for m in messages[:2]) == long_text.strip()
                assert rows[generic_row].state == "sent"
                [sent] = fake.server.call(lambda: list(fake.generic))
                assert (sent["to"], sent["from"], sent["text"]) == (
                    "+4915199999999",
                    "+4930123456",
                    "Hallo!",
                )

                # Twilio: 21610 (the customer sent STOP) is final; 429 and 500 are retried.
                fake.answer(
                    400,
                    {
                        "code": 21610,
                        "message": "Attempt to send to unsubscribed recipient",
                        "status": 400,
                    },
                )
                fake.answer(429, {"code": 20429, "message": "Too Many Requests", "status": 429})
                fake.answer(500, {"code": 20500, "message": "Internal Server Error", "status": 500})
                second = kit.enqueue("sms", "+4915112345678", "Retry me", **{"SMS-Account": "main"})
                third = kit.enqueue(
                    "sms", "+4915112345678", "Retry me too", **{"SMS-Account": "main"}
                )
                fourth = kit.enqueue("sms", "+4915112345678", "And me", **{"SMS-Account": "main"})
                await kit.send_outbox({"sms": sender})
                rows = {r.id: r for r in kit.outbox_rows()}
                assert rows[plain].state == "sent"  # the first round, before the answers
                assert rows[second].state == OutboxState.FAILED.value
                assert "21610" in (rows[second].last_error or "")
                assert rows[third].state == OutboxState.PENDING.value
                assert "429" in (rows[third].last_error or "")
                assert rows[fourth].state == OutboxState.PENDING.value
                assert "500" in (rows[fourth].last_error or "")
                await sender.close()

        asyncio.run(run())


def test_a_messaging_service_finds_the_account_and_sends_for_it(tmp_path: Any) -> None:
    with serving(FakeSmsProvider()) as fake:

        async def run() -> None:
            service = {
                "accounts": [
                    {
                        "name": "numbers",
                        "provider": "twilio",
                        "account_sid": "AC-other",
                        "auth_token": "other-token-0123",
                        "numbers": ["+14155550100"],
                    },
                    {
                        "name": "service",
                        "provider": "twilio",
                        "account_sid": fake.account_sid,
                        "auth_token": fake.auth_token,
                        "messaging_service_sid": "MG0123",
                        "api_base_url": fake.server.url,
                    },
                ]
            }
            async with ChatKit(f"sqlite:///{tmp_path / 'db.sqlite'}", sms=service) as kit:
                hooks = SmsWebhooks(kit.config.sms, kit.acceptor)
                found = hooks._twilio_account("+14155550999", "MG0123")
                assert found is not None
                assert found.name == "service"
                by_number = hooks._twilio_account("+14155550100", None)
                assert by_number is not None
                assert by_number.name == "numbers"
                assert hooks._twilio_account("+14155550999", "MG9999") is None

                sender = SmsSender(kit.config.sms)
                kit.enqueue("sms", "+4915112345678", "Hi", **{"SMS-Account": "service"})
                await kit.send_outbox({"sms": sender})
                [sent] = fake.server.call(lambda: list(fake.messages))
                assert (sent["MessagingServiceSid"], sent["To"]) == ("MG0123", "+4915112345678")
                assert "From" not in sent
                await sender.close()

        asyncio.run(run())
