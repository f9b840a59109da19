"""X with tweepy's real async client against a local X API v2 server."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from channels.textsplit import x_weighted_length
from channels.twitter import XAccount
from channels.twitter_out import TwitterSender
from channels.xapi import close_client, make_client
from ingest.store.models import OutboxState
from tests.chatkit import ChatKit
from tests.providers import FakeX, serving
from tests.support import Database

KEYS = {
    "consumer_key": "ck-0123456789",
    "consumer_secret": "cs-0123456789",
    "access_token": "900-at0123456789",
    "access_token_secret": "ats-0123456789",
}


def x_config(fake: FakeX, **section: Any) -> dict[str, Any]:
    return {"accounts": [{"name": "acme", **KEYS}], "api_base_url": fake.server.url, **section}


class WallClock:
    """X's clock as the poller sees it (x-rate-limit-reset is a Unix time)."""

    def __init__(self, now: float = 2_000_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def account_of(kit: ChatKit, clock: WallClock) -> XAccount:
    [config] = kit.config.twitter.accounts
    return XAccount(
        config,
        kit.config.twitter,
        kit.acceptor,
        kit.store,
        kit.clock,
        wall_clock=clock,
        on_rate_limit=kit.metrics.rate_limited.labels("twitter").inc,
    )


def test_mentions_and_dms_are_polled_with_a_cursor_stored_after_the_journal(
    database: Database,
) -> None:
    with serving(FakeX(page_size_cap=2)) as fake:
        fake.mention("41", "@AcmeSupport an old complaint", created_at="2020-01-01T00:00:00.000Z")
        old_dm = fake.direct_message("43", "an old direct message")

        async def run() -> None:
            async with ChatKit(database.url, twitter=x_config(fake)) as kit:
                account = account_of(kit, WallClock())
                client = make_client(account.config, kit.config.twitter)
                try:
                    # First poll ever: the past is not imported; the cursors start here.
                    fake.server.call(
                        lambda: fake.dm_events[0].update(created_at="2020-01-01T00:00:00.000Z")
                    )
                    await account.poll_once(client)
                    assert kit.journal_rows("twitter") == []
                    mentions = kit.cursor("twitter:acme:mentions")
                    assert mentions is not None
                    assert "start_time" in mentions
                    assert kit.cursor("twitter:acme:dms") == {"since_id": old_dm}

                    first = fake.mention("41", "@AcmeSupport my order 77 never came")
                    reply = fake.mention(
                        "42",
                        "@AcmeSupport same here, also order 78",
                        conversation_id=first,
                        referenced_tweets=[{"type": "replied_to", "id": first}],
                        attachments={"media_keys": ["3_1"]},
                    )
                    fake.media["3_1"] = {
                        "media_key": "3_1",
                        "type": "photo",
                        "url": "https://pbs.twimg.example/media/receipt.jpg",
                    }
                    third = fake.mention("44", "@AcmeSupport hola", lang="es")
                    dm = fake.direct_message("43", "Can you call me back?")
                    ours = fake.direct_message(fake.user_id, "Our own answer")
                    await account.poll_once(client)
                    assert account.status["ok"] is True
                    await account.poll_once(client)  # nothing new: asks since the newest
                    assert fake.seen("mentions")[-1]["since_id"] == third
                finally:
                    await close_client(client)

                rows = kit.journal_rows("twitter")
                assert [r.external_id for r in rows] == [first, reply, third, f"dm:{dm}"]
                assert kit.cursor("twitter:acme:mentions") == {"since_id": third}
                assert kit.cursor("twitter:acme:dms") == {"since_id": ours}
                # Pages were followed (two per page), and the next poll asks since the newest.
                queries = fake.seen("mentions")
                assert any(q.get("pagination_token") for q in queries)
                assert "start_time" in queries[0]
                assert "since_id" not in queries[0]

                assert kit.process() == 4
                cases = kit.cases()
                assert len(cases) == 3  # the reply in the thread joined the first post's case
                thread, spanish, direct = cases
                assert [a.external_id for a in thread.activities] == [first, reply]
                assert [r.decided_by for r in kit.journal_rows("twitter")][1] == (
                    "thread:in-reply-to"
                )
                [receipt] = thread.activities[1].attachments
                assert receipt.url == "https://pbs.twimg.example/media/receipt.jpg"
                assert receipt.sha256 is None
                assert receipt.size is None
                assert spanish.activities[0].reply_route == {
                    "recipient": "44",
                    "headers": {"X-Account": "acme", "X-Mode": "reply", "X-Reply-To-Post": third},
                }
                assert direct.activities[0].reply_route == {
                    "recipient": "43",
                    "headers": {"X-Account": "acme", "X-Mode": "dm"},
                }
                identity = kit.identity("x", "41")
                assert identity is not None
                assert identity.handle == "user41"

        asyncio.run(run())


def test_rate_limit_waits_for_the_reset_time_then_resumes(tmp_path: Any) -> None:
    with serving(FakeX()) as fake:

        async def run() -> None:
            clock = WallClock()
            async with ChatKit(
                f"sqlite:///{tmp_path / 'db.sqlite'}", twitter=x_config(fake)
            ) as kit:
                account = account_of(kit, clock)
                client = make_client(account.config, kit.config.twitter)
                try:
                    await account.poll_once(client)
                    fake.mention("41", "@AcmeSupport help")
                    fake.rate_limit("mentions", reset=int(clock.now) + 120)
                    dm = fake.direct_message("43", "still here")
                    await account.poll_once(client)
                    # Mentions wait for the reset; DMs, limited separately, went on.
                    assert [r.external_id for r in kit.journal_rows("twitter")] == [f"dm:{dm}"]
                    assert account.status["ok"] is False
                    assert "429" in account.status["error"]
                    assert kit.metrics.rate_limited.labels("twitter")._value.get() == 1
                    assert account._not_before["mentions"] == clock.now + 121

                    asked = len(fake.seen("mentions"))
                    clock.now += 60
                    await account.poll_once(client)
                    assert len(fake.seen("mentions")) == asked  # not before the reset

                    clock.now += 62
                    await account.poll_once(client)
                    assert len(fake.seen("mentions")) == asked + 1
                    assert len(kit.journal_rows("twitter")) == 2
                    assert account.status["ok"] is True
                finally:
                    await close_client(client)

        asyncio.run(run())


def test_replies_go_out_as_posts_threads_and_direct_messages(tmp_path: Any) -> None:
    with serving(FakeX()) as fake:

        async def run() -> None:
            async with ChatKit(
                f"sqlite:///{tmp_path / 'db.sqlite'}", twitter=x_config(fake)
            ) as kit:
                sender = TwitterSender(kit.config.twitter)
                short = kit.enqueue("twitter", "41", "We are on it!", **{"X-Reply-To-Post": "1700"})
                long_text = "Thank you for your patience with us. " * 20
                long = kit.enqueue(
                    "twitter", "41", long_text, **{"X-Account": "acme", "X-Reply-To-Post": "1701"}
                )
                direct = kit.enqueue(
                    "twitter", "43", "Please send your order number.", **{"X-Mode": "dm"}
                )
                orphan = kit.enqueue("twitter", "41", "No post to answer")
                assert await kit.send_outbox({"twitter": sender}) == 4

                posted = fake.server.call(lambda: list(fake.posted))
                assert posted[0]["text"] == "We are on it!"
                assert posted[0]["reply"] == {"in_reply_to_tweet_id": "1700"}
                thread = posted[1:]
                assert len(thread) == 3
                assert thread[0]["reply"] == {"in_reply_to_tweet_id": "1701"}
                for earlier, later in itertools.pairwise(thread):
                    assert later["reply"] == {"in_reply_to_tweet_id": earlier["id"]}
                assert all(x_weighted_length(p["text"]) <= 280 for p in thread)
                assert thread[-1]["text"].endswith("(3/3)")
                [dm] = fake.server.call(lambda: list(fake.dms_sent))
                assert (dm["to"], dm["text"]) == ("43", "Please send your order number.")

                rows = {r.id: r for r in kit.outbox_rows()}
                assert rows[short].state == rows[long].state == rows[direct].state == "sent"
                assert rows[long].headers["Message-ID"] == thread[0]["id"]
                assert rows[orphan].state == OutboxState.FAILED.value
                assert "X-Reply-To-Post" in (rows[orphan].last_error or "")

                # 429 on a post: deferred, not failed.
                limited = kit.enqueue("twitter", "41", "Later", **{"X-Reply-To-Post": "1702"})
                fake.rate_limit("tweet", reset=2_000_000_000)
                await kit.send_outbox({"twitter": sender})
                row = {r.id: r for r in kit.outbox_rows()}[limited]
                assert row.state == OutboxState.PENDING.value
                assert "rate limit" in (row.last_error or "")
                await sender.close()

        asyncio.run(run())
