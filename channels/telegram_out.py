"""Outbound Telegram: an outbox row becomes `sendMessage` calls to its chat.

The row's recipient is the chat id; `Telegram-Bot` names the configured bot
that sends it (optional with a single bot) and `Telegram-Reply-To` a message
to answer. Text over Telegram's 4,096 characters is sent as several messages.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

import httpx
from telegram import ReplyParameters
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)

from channels.outparts import PartProgress, configured
from channels.telegram import make_bot
from channels.telegram_parse import BOT_HEADER, CHANNEL, REPLY_TO_HEADER, message_key
from channels.textsplit import TELEGRAM_LIMIT, split, utf16_length
from ingest.channelconfig import TelegramConfig
from ingest.outbox import OutboundMessage, PermanentFailure, Sent, TemporaryFailure


class TelegramSender:
    channel = CHANNEL

    def __init__(self, config: TelegramConfig) -> None:
        self.config = config
        self.bots = {b.name: (b.name, b.bot_id, make_bot(b, config)) for b in config.bots}
        self._ready: set[str] = set()
        self.progress = PartProgress()

    async def send(self, message: OutboundMessage) -> Sent:
        name, bot_id, bot = configured(self.bots, message.headers.get(BOT_HEADER), "Telegram bot")
        text = (message.body_text or "").strip()
        if not text:
            raise PermanentFailure("the message has no text")
        try:
            chat_id = int(message.recipient)
            reply_to = message.headers.get(REPLY_TO_HEADER)
            reply = (
                ReplyParameters(int(reply_to), allow_sending_without_reply=True)
                if (reply_to)
                else None
            )
        except ValueError as exc:
            raise PermanentFailure(f"not a Telegram chat or message id: {exc}") from None

        async def send_one(index: int, part: str, previous: str | None) -> str:
            sent = await bot.send_message(
                chat_id, part, reply_parameters=reply if previous is None else None
            )
            return str(sent.message_id)

        try:
            if name not in self._ready:
                await bot.initialize()
                self._ready.add(name)
            ids = await self.progress.send(
                message.id, split(text, TELEGRAM_LIMIT, utf16_length), send_one
            )
        except RetryAfter as exc:
            wait = exc.retry_after
            seconds = wait.total_seconds() if isinstance(wait, timedelta) else wait
            raise TemporaryFailure(f"Telegram flood control: retry in {seconds:g}s") from None
        except Forbidden as exc:  # the user blocked the bot, or left the group
            raise PermanentFailure(f"Telegram refused: {exc.message}") from None
        except ChatMigrated as exc:
            raise PermanentFailure(f"the group became supergroup {exc.new_chat_id}") from None
        except BadRequest as exc:  # chat not found, message to reply to gone...
            raise PermanentFailure(f"Telegram refused: {exc.message}") from None
        except InvalidToken as exc:  # the bot's token was revoked: fix the config, then it goes
            raise TemporaryFailure(f"Telegram: invalid token for bot {name!r}: {exc}") from None
        except (TelegramError, httpx.HTTPError) as exc:
            raise TemporaryFailure(f"Telegram: {type(exc).__name__}: {exc}") from None
        return Sent(
            f"telegram messages {', '.join(ids)} to chat {chat_id}",
            message_id=message_key(bot_id, chat_id, int(ids[0])),
        )

    async def close(self) -> None:
        for name in self._ready:
            with contextlib.suppress(Exception):
                await self.bots[name][2].shutdown()
