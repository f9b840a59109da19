"""Telegram with the real python-telegram-bot against a local Bot API server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any

import httpx

from channels.telegram import SECRET_HEADER, TelegramBot
from channels.telegram_out import TelegramSender
from channels.telegram_parse import parse
from ingest.store import StoreUnavailable
from ingest.store.models import CaseState, OutboxState, Outcome
from tests.chatkit import ChatKit, http_server, raw_json, until
from tests.providers import BOT_ID, BOT_TOKEN, FakeTelegram, serving, tg_message, tg_user
from tests.support import Database

SECRET = "s3cret-token_for-webhooks"


def telegram_config(fake: FakeTelegram, **bot: Any) -> dict[str, Any]:
    return {
        "bots": [{"name": "main", "token": BOT_TOKEN, **bot}],
        "base_url": fake.base_url,
        "base_file_url": fake.base_file_url,
        "poll_timeout": 1,
        "max_file_size": 1000,
        "public_url": "https://support.example.com",
    }


def bot_of(kit: ChatKit) -> TelegramBot:
    [config] = kit.config.telegram.bots
    return TelegramBot(config, kit.config.telegram, kit.acceptor, kit.store, kit.clock)


def test_polling_stores_updates_before_confirming_them(database: Database) -> None:
    """Text, a photo (fetched through getFile), an edit, an update we do not keep, a re-sent
    update: the offset moves only past what is journaled, and each message is stored once."""
    with serving(FakeTelegram()) as fake:
        fake.files["photo-big"] = b"\xff\xd8 the larger photo"
        first = fake.add("message", **tg_message(1, "My router shows a red light"))
        photo = fake.add(
            "message",
            **tg_message(
                2,
                None,
                caption="This one",
                photo=[
                    {
                        "file_id": "photo-small",
                        "file_unique_id": "ps",
                        "width": 90,
                        "height": 90,
                        "file_size": 10,
                    },
                    {
                        "file_id": "photo-big",
                        "file_unique_id": "pb",
                        "width": 800,
                        "height": 600,
                        "file_size": 17,
                    },
                ],
            ),
        )
        ignored = fake.add("callback_query", id="cq", chat_instance="x", **{"from": tg_user()})

        async def run() -> None:
            async with ChatKit(database.url, telegram=telegram_config(fake)) as kit:
                bot = bot_of(kit)
                # The first offset write fails after the journal committed, as if the
                # daemon died there: the same updates come again and are stored once.
                write_offset, failed = bot._write_offset, list[int]()

                def flaky_write(offset: int) -> None:
                    if not failed:
                        failed.append(offset)
                        raise StoreUnavailable("disk full")
                    write_offset(offset)

                bot._write_offset = flaky_write  # type: ignore[method-assign]
                task = asyncio.create_task(bot.poll())
                try:
                    await until(
                        lambda: (kit.cursor(bot.cursor_name) or {}).get("offset") == ignored + 1
                    )
                    # The next getUpdates confirms them to Telegram, which then forgets them.
                    await until(lambda: fake.unconfirmed() == [])
                    edit = fake.add(
                        "edited_message",
                        **tg_message(
                            1, "My router shows a blinking red light", edit_date=1_790_000_500
                        ),
                    )
                    await until(
                        lambda: (kit.cursor(bot.cursor_name) or {}).get("offset") == edit + 1
                    )
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    await bot.close()
                assert failed == [ignored + 1]
                assert bot.status["ok"] is True
                assert fake.offsets[0] is None
                assert ignored + 1 in fake.offsets

                rows = kit.journal_rows("telegram")
                assert [r.external_id for r in rows] == [
                    f"{BOT_ID}:{first}",
                    f"{BOT_ID}:{photo}",
                    f"{BOT_ID}:{edit}",
                ]
                assert [r.duplicate_count for r in rows] == [1, 1, 0]
                files = raw_json(rows[1])["files"]
                assert [f["name"] for f in files] == ["photo_2.jpg"]  # the largest size only
                assert base64.b64decode(files[0]["data"]) == fake.files["photo-big"]

                assert kit.process() == 3
                [case] = kit.cases()
                assert case.origin == "telegram"
                assert case.title == "My router shows a red light"
                texts = [a.text for a in case.activities]
                assert texts == [
                    "My router shows a red light",
                    "This one",
                    "My router shows a blinking red light",
                ]
                [picture] = case.activities[1].attachments
                assert picture.sha256 == hashlib.sha256(fake.files["photo-big"]).hexdigest()
                assert picture.content_type == "image/jpeg"
                outcomes = [r.outcome for r in kit.journal_rows("telegram")]
                assert outcomes == ["created", "appended", "appended"]
                decided = [r.decided_by for r in kit.journal_rows("telegram")]
                assert decided[1:] == ["thread:conversation", "thread:in-reply-to"]
                identity = kit.identity("telegram", "4711")
                assert identity is not None
                assert (identity.display_name, identity.handle) == ("Ana Lima", "ana_lima")
                assert case.contact is not None
                assert case.contact.full_name == "Ana Lima"
                assert case.activities[0].reply_route == {
                    "recipient": "4711",
                    "headers": {"Telegram-Bot": "main"},
                }

        asyncio.run(run())


def test_files_too_large_are_noted_and_not_fetched(tmp_path: Any) -> None:
    with serving(FakeTelegram()) as fake:
        fake.files["doc-ok"] = b"%PDF small"
        fake.files["doc-lies"] = b"x" * 2000
        fake.get_file_size_override["doc-lies"] = 2000
        fake.server.call(lambda: None)

        async def run() -> None:
            async with ChatKit(
                f"sqlite:///{tmp_path / 'db.sqlite'}", telegram=telegram_config(fake)
            ) as kit:
                bot = bot_of(kit)
                await bot.identify()
                update = {
                    "update_id": 5,
                    "message": tg_message(
                        7,
                        None,
                        document={
                            "file_id": "doc-huge",
                            "file_unique_id": "h",
                            "file_name": "dump.zip",
                            "file_size": 10_000_000,
                        },
                    ),
                }
                delivery = await bot.delivery(update)
                assert delivery is not None
                msg = parse(delivery.raw, {**delivery.meta, "external_id": delivery.external_id})
                assert msg.attachments == []
                assert "[document dump.zip not stored: 10000000 bytes, more than" in msg.text
                assert "getFile" not in fake.calls  # never asked for

                for file_id, expected in (
                    ("doc-lies", "2000 bytes, more than max_file_size (1000)"),
                    ("doc-gone", "Telegram refused it"),
                ):
                    update["message"] = tg_message(
                        8,
                        None,
                        document={
                            "file_id": file_id,
                            "file_unique_id": file_id,
                            "file_name": "a.pdf",
                            "file_size": 10,
                        },
                    )
                    delivery = await bot.delivery(update)
                    assert delivery is not None
                    [item] = json.loads(delivery.raw)["files"]
                    assert item["data"] is None
                    assert expected in item["note"]

                update["message"] = tg_message(
                    9,
                    None,
                    document={
                        "file_id": "doc-ok",
                        "file_unique_id": "ok",
                        "file_name": "invoice.pdf",
                        "mime_type": "application/pdf",
                        "file_size": 10,
                    },
                )
                delivery = await bot.delivery(update)
                assert delivery is not None
                msg = parse(delivery.raw, dict(delivery.meta))
                [attachment] = msg.attachments
                assert (attachment.filename, attachment.content_type, attachment.data) == (
                    "invoice.pdf",
                    "application/pdf",
                    b"%PDF small",
                )
                assert msg.text == "[document]"
                await bot.close()

        asyncio.run(run())


def test_start_greets_end_closes_and_replies_go_out(database: Database) -> None:
    with serving(FakeTelegram()) as fake:

        async def run() -> None:
            async with ChatKit(
                database.url, telegram=telegram_config(fake), templates_dir="templates"
            ) as kit:
                bot = bot_of(kit)
                await bot.identify()

                async def receive(update_id: int, text: str) -> None:
                    delivery = await bot.delivery(
                        {"update_id": update_id, "message": tg_message(update_id, text)}
                    )
                    assert delivery is not None
                    assert await kit.acceptor.accept(delivery) is not None
                    kit.process()

                await receive(1, "/start")
                assert kit.cases() == []
                [start_row] = kit.journal_rows("telegram")
                assert (start_row.outcome, start_row.decided_by) == ("skipped", "command:/start")

                await receive(2, "Hello, my order 1234 has not arrived")
                await receive(3, "Any news?")
                [case] = kit.cases()
                assert len(case.activities) == 2

                await receive(4, f"/end@{fake.username}")
                [case] = kit.cases()
                assert (case.state, case.status_reason) == ("Resolved", "Problem Solved")
                assert [a.type for a in case.activities] == ["chat", "chat", "chat", "resolution"]

                await receive(5, "Another question")
                first, second = kit.cases()
                assert second.state == CaseState.ACTIVE.value
                assert second.id != first.id

                rows = kit.outbox_rows()
                assert [r.kind for r in rows] == ["command_reply", "command_reply"]
                assert all(r.recipient == "4711" for r in rows)
                assert rows[1].case_id == first.id

                long_reply = kit.enqueue("telegram", "4711", "Zeile. " * 1500)
                sender = TelegramSender(kit.config.telegram)
                assert await kit.send_outbox({"telegram": sender}) == 3
                sent = fake.server.call(lambda: list(fake.sent))
                assert sent[0]["text"].startswith("Hello Ana")
                assert f"Case {first.number} is closed now" in sent[1]["text"]
                long_parts = [s["text"] for s in sent[2:]]
                assert len(long_parts) == 3
                assert all(len(p) <= 4096 for p in long_parts)
                assert " ".join(long_parts) == ("Zeile. " * 1500).strip()
                states = {r.id: (r.state, r.headers.get("Message-ID")) for r in kit.outbox_rows()}
                assert states[long_reply][0] == OutboxState.SENT.value
                assert str(states[long_reply][1]).startswith(f"tg:{BOT_ID}:4711:")

                # The customer blocked the bot: that reply can never be delivered.
                blocked = kit.enqueue("telegram", "4711", "Are you still there?")
                fake.fail(
                    "sendMessage",
                    403,
                    {
                        "ok": False,
                        "error_code": 403,
                        "description": "Forbidden: bot was blocked by the user",
                    },
                )
                await kit.send_outbox({"telegram": sender})
                row = {r.id: r for r in kit.outbox_rows()}[blocked]
                assert row.state == OutboxState.FAILED.value
                assert "bot was blocked by the user" in (row.last_error or "")
                await sender.close()
                await bot.close()

        asyncio.run(run())


def test_webhook_checks_the_secret_and_stores_before_answering(tmp_path: Any) -> None:
    with serving(FakeTelegram()) as fake:

        async def run() -> None:
            config = telegram_config(fake, mode="webhook", webhook_secret=SECRET)
            async with ChatKit(f"sqlite:///{tmp_path / 'db.sqlite'}", telegram=config) as kit:
                bot = bot_of(kit)
                await bot.register_webhook()
                [hook] = fake.webhooks
                assert hook["url"] == "https://support.example.com/webhooks/telegram/main"
                assert hook["secret_token"] == SECRET
                assert hook["allowed_updates"] == ["message", "edited_message"]

                update = {"update_id": 77, "message": tg_message(3, "Webhook hello")}
                async with http_server([bot.route()]) as port, httpx.AsyncClient() as client:
                    url = f"http://127.0.0.1:{port}/webhooks/telegram/main"

                    async def post(headers: dict[str, str], body: Any = update) -> httpx.Response:
                        return await client.post(url, json=body, headers=headers)

                    assert (await post({})).status_code == 403
                    assert (await post({SECRET_HEADER: SECRET + "x"})).status_code == 403
                    assert (await post({SECRET_HEADER: SECRET[:-1]})).status_code == 403
                    assert kit.journal_rows("telegram") == []

                    answer = await post({SECRET_HEADER: SECRET})
                    assert answer.status_code == 200
                    assert answer.json()["duplicate"] is False
                    again = await post({SECRET_HEADER: SECRET})
                    assert again.status_code == 200
                    assert again.json()["duplicate"] is True
                    bad = await post({SECRET_HEADER: SECRET}, {"no": "update"})
                    assert bad.status_code == 400
                    other = await post(
                        {SECRET_HEADER: SECRET},
                        {"update_id": 78, "my_chat_member": {"x": 1}},
                    )
                    assert other.json() == {"ok": True, "ignored": True}
                    # Authentic but unreadable: kept as it came, to end as a dead letter.
                    broken = await post(
                        {SECRET_HEADER: SECRET}, {"update_id": 79, "message": {"message_id": 5}}
                    )
                    assert broken.status_code == 200

                row, unreadable = kit.journal_rows("telegram")
                assert (row.external_id, row.duplicate_count) == (f"{BOT_ID}:77", 1)
                assert row.meta["listener"] == "telegram-webhook"
                assert unreadable.external_id == f"{BOT_ID}:79"
                kit.process()
                [case] = kit.cases()
                assert case.title == "Webhook hello"
                row, unreadable = kit.journal_rows("telegram")
                assert row.outcome == Outcome.CREATED.value
                # A parser failure is deterministic: a dead letter at once, bytes kept.
                assert unreadable.outcome == Outcome.DEAD.value
                assert unreadable.last_error
                assert kit.metrics.rejected.labels("telegram", "bad_signature")._value.get() == 3
                await bot.close()

        asyncio.run(run())


def test_several_bots_are_polled_and_answer_each_their_own(tmp_path: Any) -> None:
    other_token = "987654321:AAF-second_bot_token_0123456789abcdef"
    with (
        serving(FakeTelegram()) as first,
        serving(FakeTelegram(token=other_token, username="acme_billing_bot")) as second,
    ):
        first.add("message", **tg_message(1, "Sales question"))
        second.add("message", **tg_message(1, "Billing question", user=tg_user(4712, "Bob")))
        # Flood control on the second bot's first poll: it waits, then carries on.
        second.fail(
            "getUpdates",
            429,
            {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 1",
                "parameters": {"retry_after": 1},
            },
        )

        async def run() -> None:
            config = telegram_config(first)
            config["bots"].append(
                {
                    "name": "billing",
                    "token": other_token,
                    "base_url": second.base_url,
                    "base_file_url": second.base_file_url,
                }
            )
            async with ChatKit(f"sqlite:///{tmp_path / 'db.sqlite'}", telegram=config) as kit:
                bots = [
                    TelegramBot(c, kit.config.telegram, kit.acceptor, kit.store, kit.clock)
                    for c in kit.config.telegram.bots
                ]
                tasks = [asyncio.create_task(bot.poll()) for bot in bots]
                try:
                    await until(lambda: len(kit.journal_rows("telegram")) == 2)
                    # The refused poll was asked again (after retry_after), not given up.
                    assert second.server.call(lambda: second.calls.count("getUpdates")) >= 2
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                keys = sorted(r.external_id for r in kit.journal_rows("telegram"))
                assert keys == sorted([f"{BOT_ID}:1001", "987654321:1001"])
                kit.process()
                routes = sorted(
                    (a.reply_route or {})["headers"]["Telegram-Bot"] for a in kit.activities()
                )
                assert routes == ["billing", "main"]

                sender = TelegramSender(kit.config.telegram)
                kit.enqueue(
                    "telegram", "4712", "Your invoice is on its way", **{"Telegram-Bot": "billing"}
                )
                kit.enqueue("telegram", "4711", "Busy right now")  # no bot named: two exist
                # Flood control while sending: the row waits and goes later.
                second.fail(
                    "sendMessage",
                    429,
                    {
                        "ok": False,
                        "error_code": 429,
                        "description": "Too Many Requests",
                        "parameters": {"retry_after": 3},
                    },
                )
                await kit.send_outbox({"telegram": sender})
                billing, unnamed = kit.outbox_rows()
                assert billing.state == OutboxState.PENDING.value
                assert "flood control" in (billing.last_error or "")
                assert unnamed.state == OutboxState.FAILED.value
                kit.advance(minutes=5)
                await kit.send_outbox({"telegram": sender})
                [sent] = second.server.call(lambda: list(second.sent))
                assert (sent["chat_id"], sent["text"]) == (4712, "Your invoice is on its way")
                assert first.server.call(lambda: list(first.sent)) == []
                await sender.close()
                for bot in bots:
                    await bot.close()

        asyncio.run(run())
