"""The chat channels through the real daemon: webhooks as the providers send them, pollers
killed after the journal commit and before the cursor moved, replies going out."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from channels.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, hmac_signature, twilio_signature
from ingest import failpoints
from tests.providers import (
    BOT_ID,
    BOT_TOKEN,
    FakeSmsProvider,
    FakeTelegram,
    FakeX,
    serving,
    tg_message,
    tg_user,
)
from tests.support import REPO, Daemon, Database, wait_until

PUBLIC = "https://support.example.com"
TWILIO_NUMBER = "+14155550100"
GATEWAY_NUMBER = "+4930123456"
# The shipped starter rules and templates (they acknowledge each new case), and their queues.
STARTER: dict[str, Any] = {
    "rules_dir": str(REPO / "rules"),
    "templates_dir": str(REPO / "templates"),
    "queues": [{"name": "General Support"}, {"name": "Gold Support"}, {"name": "Billing"}],
}
# A row the killed daemon had claimed is sent once its short lease is over (at least
# once: it may have gone out just before the kill, see ingest/outbox.py).
QUICK_OUTBOX = {
    "poll_interval": 0.2,
    "backoff_base_seconds": 1,
    "lease_seconds": 3,
    "send_timeout": 2,
}


def twilio_form(
    sid: str, sender: str, body: str, media: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """The fields Twilio posts for an incoming message, as its docs list them."""
    form = [
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("SmsMessageSid", sid),
        ("NumMedia", str(len(media))),
        ("ToCity", "SAN FRANCISCO"),
        ("FromZip", ""),
        ("SmsSid", sid),
        ("FromState", ""),
        ("SmsStatus", "received"),
        ("FromCity", ""),
        ("Body", body),
        ("FromCountry", "DE"),
        ("To", TWILIO_NUMBER),
        ("ToZip", "94105"),
        ("NumSegments", "1"),
        ("ReferralNumMedia", "0"),
        ("MessageSid", sid),
        ("AccountSid", FakeSmsProvider.account_sid),
        ("From", sender),
        ("ApiVersion", "2010-04-01"),
    ]
    for i, url in enumerate(media):
        form += [(f"MediaContentType{i}", "image/jpeg"), (f"MediaUrl{i}", url)]
    return form


def post_twilio(
    daemon: Daemon,
    form: list[tuple[str, str]],
    token: str | None = None,
    url: str | None = None,
    signed: list[tuple[str, str]] | None = None,
) -> httpx.Response:
    """POST `form` as Twilio does, signed (with `token`) over `url` and `signed` (or `form`)."""
    signed_url = url or f"{PUBLIC}/webhooks/twilio/sms"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if token is not None:
        headers["X-Twilio-Signature"] = twilio_signature(token, signed_url, signed or form)
    return httpx.post(
        f"http://127.0.0.1:{daemon.http_port}/webhooks/twilio/sms",
        content=urlencode(form).encode(),
        headers=headers,
        timeout=30,
    )


def post_generic(
    daemon: Daemon, doc: dict[str, Any], secret: str, age: float = 0
) -> httpx.Response:
    body = json.dumps(doc).encode()
    stamp = str(int(time.time() - age))
    return httpx.post(
        f"http://127.0.0.1:{daemon.http_port}/webhooks/sms/gateway",
        content=body,
        headers={
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: hmac_signature(secret, stamp, body),
        },
        timeout=30,
    )


def journal(daemon: Daemon, channel: str) -> list[dict[str, Any]]:
    rows = json.loads(daemon.cli("journal", "list", "--json", "--limit", "1000").stdout)
    return sorted((r for r in rows if r["channel"] == channel), key=lambda r: r["id"])


def test_sms_webhooks_signatures_dedupe_outage_and_replies(
    tmp_path: Path, database: Database
) -> None:
    with serving(FakeSmsProvider()) as fake:
        sms = {
            "public_url": PUBLIC,
            "accounts": [
                {
                    "name": "main",
                    "provider": "twilio",
                    "account_sid": fake.account_sid,
                    "auth_token": fake.auth_token,
                    "numbers": [TWILIO_NUMBER],
                    "api_base_url": fake.server.url,
                },
                {
                    "name": "gateway",
                    "provider": "generic",
                    "secret": fake.generic_secret,
                    "numbers": [GATEWAY_NUMBER],
                    "send_url": f"{fake.server.url}/send",
                },
            ],
        }
        daemon = Daemon(tmp_path, database, {"sms": sms, "outbox": QUICK_OUTBOX, **STARTER})
        daemon.start()
        try:
            media = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/SMa/Media/MEa"
            first = twilio_form("SM" + "a" * 32, "+4915112345678", "My bill is wrong", (media,))
            answer = post_twilio(daemon, first, fake.auth_token)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/xml")
            assert answer.text == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
            # Twilio retries a webhook it thinks failed: the same MessageSid is stored once.
            assert post_twilio(daemon, first, fake.auth_token).status_code == 200

            # Unsigned, signed by someone else, signed for another URL, tampered: 403.
            refused = [
                post_twilio(daemon, first),
                post_twilio(daemon, first, "not-the-auth-token"),
                post_twilio(
                    daemon, first, fake.auth_token, url="http://127.0.0.1/webhooks/twilio/sms"
                ),
                post_twilio(
                    daemon,
                    [(k, "forged" if k == "Body" else v) for k, v in first],
                    fake.auth_token,
                    signed=first,
                ),
            ]
            assert [r.status_code for r in refused] == [403, 403, 403, 403]
            unknown = [(k, "+15550000000" if k == "To" else v) for k, v in first]
            assert post_twilio(daemon, unknown, fake.auth_token).status_code == 404

            generic = {
                "id": "gw-1",
                "from": "+4915199999999",
                "to": GATEWAY_NUMBER,
                "text": "Wo bleibt meine Lieferung?",
            }
            answer = post_generic(daemon, generic, fake.generic_secret)
            assert answer.status_code == 200
            assert answer.json()["duplicate"] is False
            assert post_generic(daemon, generic, fake.generic_secret, age=600).status_code == 403
            assert post_generic(daemon, generic, "wrong-secret-0123").status_code == 403

            # The store is down: 503, so the provider retries; nothing is lost.
            second = twilio_form("SM" + "b" * 32, "+4915112345678", "Still wrong")
            with database.outage():
                during = post_twilio(daemon, second, fake.auth_token)
            assert during.status_code == 503
            assert post_twilio(daemon, second, fake.auth_token).status_code == 200

            daemon.wait_settled()
            rows = journal(daemon, "sms")
            assert [(r["external_id"], r["duplicates"]) for r in rows] == [
                ("SM" + "a" * 32, 1),
                ("gateway:gw-1", 0),
                ("SM" + "b" * 32, 0),
            ]
            assert [r["outcome"] for r in rows] == ["created", "created", "appended"]
            cases = daemon.cases()
            assert len(cases) == 2
            bill = daemon.case(next(c["number"] for c in cases if c["title"] == "My bill is wrong"))
            assert bill["channel"] == "sms"
            assert [a["text"] for a in bill["activities"]] == ["My bill is wrong", "Still wrong"]
            [photo] = bill["activities"][0]["attachments"]
            assert (photo["url"], photo["sha256"], photo["size"]) == (media, None, None)

            # The starter rules acknowledge each new case, on the channel it came from.
            wait_until(lambda: len(fake.messages) >= 1 and len(fake.generic) >= 1, 15)
            [reply] = fake.messages
            assert (reply["To"], reply["From"]) == ("+4915112345678", TWILIO_NUMBER)
            assert bill["number"] in reply["Body"]
            [relayed] = fake.generic
            assert (relayed["to"], relayed["from"]) == ("+4915199999999", GATEWAY_NUMBER)
            metrics = daemon.http_get("/metrics")[1].decode()
            assert (
                'ingestd_messages_rejected_total{channel="sms",reason="bad_signature"} 5.0'
                in metrics
            )
            assert 'ingestd_messages_rejected_total{channel="sms",reason="stale"} 1.0' in metrics
        finally:
            daemon.stop()
        assert fake.auth_token not in daemon.log()


def test_telegram_killed_after_commit_loses_and_duplicates_nothing(
    tmp_path: Path, database: Database
) -> None:
    with serving(FakeTelegram()) as fake:
        telegram = {
            "bots": [{"name": "main", "token": BOT_TOKEN}],
            "base_url": fake.base_url,
            "base_file_url": fake.base_file_url,
            "poll_timeout": 1,
            # The killed daemon's lease on the bot runs out this soon; then the new one polls.
            "lease_seconds": 2,
        }
        ana, bob = tg_user(4711), tg_user(4712, "Bob", "Stone", username="bob")
        updates = [
            fake.add("message", **tg_message(1, "The app crashes on login", user=ana)),
            fake.add("message", **tg_message(2, "I was charged twice", user=bob)),
        ]
        daemon = Daemon(
            tmp_path, database, {"telegram": telegram, "outbox": QUICK_OUTBOX, **STARTER}
        )
        # Dies right after journaling the batch, before the offset is stored or sent.
        daemon.start(wait_healthy=False, env={"INGESTD_FAILPOINTS": "telegram.after_commit"})
        assert daemon.process is not None
        assert daemon.process.wait(30) == failpoints.EXIT_CODE, daemon.log()
        assert fake.unconfirmed() == updates  # Telegram still holds them

        daemon.start()
        try:
            wait_until(lambda: fake.unconfirmed() == [], 20)
            daemon.wait_settled()
            rows = journal(daemon, "telegram")
            assert [(r["external_id"], r["duplicates"]) for r in rows] == [
                (f"{BOT_ID}:{update}", 1) for update in updates
            ]
            assert sorted(c["title"] for c in daemon.cases()) == [
                "I was charged twice",
                "The app crashes on login",
            ]
            # An acknowledgement for each case, in each customer's chat.
            wait_until(lambda: {int(s["chat_id"]) for s in fake.sent} == {4711, 4712}, 20)
            assert all("Your request is case CAS-" in s["text"] for s in fake.sent)
            health = daemon.health()
            assert health["telegram"]["bots"]["main"]["polling_here"] is True
            assert health["outbox"]["senders"] == ["telegram"]
        finally:
            daemon.stop()
        assert BOT_TOKEN not in daemon.log()  # the token is in every Bot API URL
        assert BOT_TOKEN not in daemon.cli("config").stdout


def test_x_killed_after_commit_loses_and_duplicates_nothing(
    tmp_path: Path, database: Database
) -> None:
    with serving(FakeX()) as fake:
        twitter = {
            "accounts": [
                {
                    "name": "acme",
                    "consumer_key": "ck-0123456789",
                    "consumer_secret": "cs-0123456789",
                    "access_token": "900-at0123456789",
                    "access_token_secret": "ats-0123456789",
                    "direct_messages": False,
                }
            ],
            "api_base_url": fake.server.url,
            "poll_interval": 0.3,
            "backfill_hours": 1,  # the first poll reads the last hour, not only what follows
            "lease_seconds": 2,
        }
        first = fake.mention("41", "@AcmeSupport the update broke my printer")
        second = fake.mention("42", "@AcmeSupport refund please")
        daemon = Daemon(tmp_path, database, {"twitter": twitter, "outbox": QUICK_OUTBOX, **STARTER})
        daemon.start(wait_healthy=False, env={"INGESTD_FAILPOINTS": "twitter.after_commit"})
        assert daemon.process is not None
        assert daemon.process.wait(30) == failpoints.EXIT_CODE, daemon.log()

        daemon.start()
        try:
            wait_until(lambda: any(q.get("since_id") == second for q in fake.seen("mentions")), 20)
            daemon.wait_settled()
            rows = journal(daemon, "twitter")
            assert [(r["external_id"], r["duplicates"]) for r in rows] == [(first, 1), (second, 1)]
            assert len(daemon.cases()) == 2

            # Each acknowledgement answers the customer's post, in public.
            def answered() -> set[str]:
                return {p["reply"]["in_reply_to_tweet_id"] for p in fake.posted}

            wait_until(lambda: answered() == {first, second}, 20)
        finally:
            daemon.stop()
        assert "ats-0123456789" not in daemon.log()
