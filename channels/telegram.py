"""Telegram bots (python-telegram-bot): long polling by default, or a webhook.

Polling calls `getUpdates` itself rather than through PTB's `Updater`: the
Updater confirms updates to Telegram (by asking for a higher offset) before
our journal has committed them. Here the offset is stored, and sent, only
after every update below it is in the journal; a crash in between leaves
them unconfirmed at Telegram, so they come again and the journal's key (bot
id, update id) drops the copies.

Files (photos, documents, voice...) are fetched through the Bot API before the
update is journaled, so processing never waits on Telegram; a file larger than
`max_file_size` (the public Bot API serves at most 20 MB) is noted, not fetched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import os
import time
from datetime import timedelta
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from telegram import Bot, Update
from telegram.error import BadRequest, Conflict, RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from channels.acceptor import Acceptor, read_body
from channels.telegram_parse import CHANNEL, FileRef, files_of, message_of
from ingest import cursors, failpoints
from ingest.channelconfig import TelegramBotConfig, TelegramConfig
from ingest.clock import Clock
from ingest.journal import Delivery
from ingest.leases import LeasedWork
from ingest.logs import redact_secret
from ingest.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

# Opt in now to what PTB 23 makes the default (time periods as timedelta), which
# also silences a deprecation warning on every flood-control error.
os.environ.setdefault("PTB_TIMEDELTA", "true")

ALLOWED_UPDATES = ["message", "edited_message"]
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
AFTER_COMMIT = "telegram.after_commit"  # failpoint: journaled, offset not yet stored
MAX_BACKOFF = 60.0
IDLE_RESET = 6 * 24 * 3600.0  # seconds without updates before the offset is dropped


def make_bot(config: TelegramBotConfig, section: TelegramConfig, read_timeout: float = 30) -> Bot:
    token = config.token.get_secret_value()
    redact_secret(token)
    return Bot(
        token,
        base_url=config.base_url or section.base_url,
        base_file_url=config.base_file_url or section.base_file_url,
        local_mode=section.local_mode,
        request=HTTPXRequest(connection_pool_size=8, read_timeout=read_timeout),
        get_updates_request=HTTPXRequest(connection_pool_size=1, read_timeout=10),
    )


def webhook_path(config: TelegramBotConfig) -> str:
    return f"/webhooks/telegram/{config.name}"


class TelegramBot:
    """One configured bot: polls or serves its webhook, fetches files, journals updates."""

    def __init__(
        self,
        config: TelegramBotConfig,
        section: TelegramConfig,
        acceptor: Acceptor,
        store: Store,
        clock: Clock,
    ) -> None:
        self.config = config
        self.section = section
        self.acceptor = acceptor
        self.store = store
        self.clock = clock
        self.bot = make_bot(config, section)
        self.username: str | None = None
        self.cursor_name = f"telegram:{config.bot_id}:offset"
        self.status: dict[str, Any] = {"ok": True, "mode": config.mode}
        self._last_update = time.monotonic()
        self._secret = (
            config.webhook_secret.get_secret_value().encode() if config.webhook_secret else b""
        )

    @property
    def fields(self) -> dict[str, Any]:
        return {"channel": CHANNEL, "bot": self.config.name}

    # -- identity ---------------------------------------------------------------

    async def identify(self) -> None:
        """getMe, once: the bot's username, for commands addressed to it in groups."""
        if self.username is None:
            await self.bot.initialize()
            self.username = self.bot.username
            log.info("telegram bot identified", extra={**self.fields, "username": self.username})

    # -- turning an update into a journal delivery --------------------------------

    async def delivery(self, data: dict[str, Any]) -> Delivery | None:
        """The journal delivery for an update, files fetched; None for updates we do not keep.

        Raises TelegramError or httpx.HTTPError when a file could not be fetched
        for a reason that may pass: the update is then not acknowledged.
        """
        update = Update.de_json(data, self.bot)
        message, _ = message_of(update)
        if message is None:
            return None
        files = [await self._fetch(ref) for ref in files_of(message, self.section.max_file_size)]
        raw = json.dumps({"update": data, "files": files}, ensure_ascii=False).encode()
        return Delivery(CHANNEL, f"{self.config.bot_id}:{update.update_id}", raw, self._meta())

    def _meta(self) -> dict[str, Any]:
        return {
            "listener": f"telegram-{self.config.mode}",
            "bot": self.config.name,
            "bot_id": self.config.bot_id,
            "bot_username": self.username,
        }

    def quarantine(self, data: dict[str, Any], error: Exception) -> Delivery:
        """An update we cannot read is still journaled, as it came: it becomes a dead
        letter with its error, and it does not block the updates after it."""
        log.warning("telegram update not readable", extra={**self.fields, "error": repr(error)})
        raw = json.dumps({"update": data, "files": [], "error": repr(error)}).encode()
        return Delivery(CHANNEL, f"{self.config.bot_id}:{data.get('update_id')}", raw, self._meta())

    async def _fetch(self, ref: FileRef) -> dict[str, Any]:
        item: dict[str, Any] = {
            "kind": ref.kind,
            "name": ref.name,
            "content_type": ref.content_type,
            "size": ref.size,
            "file_unique_id": ref.file_unique_id,
            "data": None,
            "note": None,
        }
        cap = self.section.max_file_size
        if ref.size is not None and ref.size > cap:
            item["note"] = f"{ref.size} bytes, more than max_file_size ({cap})"
            return item
        try:
            remote = await self.bot.get_file(ref.file_id)
        except BadRequest as exc:  # e.g. "file is too big": it will not get better
            item["note"] = f"Telegram refused it: {exc.message}"
            return item
        if remote.file_size is not None and remote.file_size > cap:
            item["note"] = f"{remote.file_size} bytes, more than max_file_size ({cap})"
            return item
        data = await remote.download_as_bytearray()
        if len(data) > cap:
            item["note"] = f"{len(data)} bytes, more than max_file_size ({cap})"
            return item
        item["data"] = base64.b64encode(bytes(data)).decode("ascii")
        item["size"] = len(data)
        return item

    # -- polling ----------------------------------------------------------------

    def lease(self) -> LeasedWork:
        return LeasedWork(
            self.store, f"telegram:{self.config.bot_id}", self.poll, ttl=self.section.lease_seconds
        )

    async def poll(self) -> None:
        """getUpdates forever (while this daemon holds the bot's lease).

        The first call of a session sends no offset: Telegram then returns every
        update not yet confirmed, which is exactly what may be missing from the
        journal (a stored offset adds nothing, and is wrong after Telegram
        renumbers). Each later call confirms what the journal holds.
        """
        delay = 1.0
        offset: int | None = None
        self._last_update = time.monotonic()
        ready = False
        while True:
            try:
                if not ready:
                    await self.identify()
                    # getUpdates answers 409 while a webhook is set.
                    await self.bot.delete_webhook(drop_pending_updates=False)
                    ready = True
                if time.monotonic() - self._last_update > IDLE_RESET:
                    # Telegram numbers updates afresh, at random, after a week without
                    # any; an old offset above the new numbers would confirm (drop) them.
                    offset = None
                updates = await self.bot.get_updates(
                    offset=offset,
                    timeout=self.section.poll_timeout,
                    allowed_updates=ALLOWED_UPDATES,
                )
                offset = await self._take(updates, offset)
            except RetryAfter as exc:
                wait = _seconds(exc.retry_after)
                self._failed(f"flood control: retry in {wait:g}s", wait)
                await asyncio.sleep(wait)
                continue
            except (TelegramError, httpx.HTTPError, StoreUnavailable) as exc:
                hint = (
                    " (a webhook is set, or another poller runs)"
                    if isinstance(exc, Conflict)
                    else ""
                )
                self._failed(f"{type(exc).__name__}: {exc}{hint}", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = 1.0
            self.status.update(ok=True, error=None, polling=True, offset=offset)

    async def _take(self, updates: tuple[Update, ...], offset: int | None) -> int | None:
        """Journal a batch of updates, then store and return the next offset."""
        if not updates:
            return offset
        self._last_update = time.monotonic()
        for update in updates:
            data = update.to_dict()
            try:
                delivery = await self.delivery(data)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                delivery = self.quarantine(data, exc)
            if delivery is None:
                continue
            if await self.acceptor.accept(delivery) is None:
                raise StoreUnavailable("the journal could not commit the update")
        failpoints.hit(AFTER_COMMIT)
        following = max(u.update_id for u in updates) + 1
        await asyncio.to_thread(self._write_offset, following)
        return following

    def _write_offset(self, offset: int) -> None:
        with self.store.write() as session:
            cursors.put(session, self.cursor_name, {"offset": offset}, self.clock.now())

    def _failed(self, error: str, retry_in: float) -> None:
        self.status.update(ok=False, error=error)
        log.warning(
            "telegram polling failed", extra={**self.fields, "error": error, "retry_in": retry_in}
        )

    # -- webhook ----------------------------------------------------------------

    def route(self) -> Route:
        return Route(webhook_path(self.config), self.webhook, methods=["POST"])

    async def register_webhook(self) -> None:
        """setWebhook with our secret, retried until Telegram takes it."""
        url = f"{self.section.public_url}{webhook_path(self.config)}"
        delay = 1.0
        while True:
            try:
                await self.identify()
                await self.bot.set_webhook(
                    url,
                    secret_token=self.config.webhook_secret.get_secret_value()
                    if self.config.webhook_secret
                    else None,
                    allowed_updates=ALLOWED_UPDATES,
                )
            except (TelegramError, httpx.HTTPError) as exc:
                self.status.update(ok=False, error=f"setWebhook: {exc}")
                log.warning(
                    "telegram setWebhook failed",
                    extra={**self.fields, "error": str(exc), "retry_in": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            self.status.update(ok=True, error=None, webhook=url)
            log.info("telegram webhook set", extra={**self.fields, "url": url})
            return

    async def webhook(self, request: Request) -> Response:
        acceptor = self.acceptor
        if not acceptor.ready():
            return acceptor.unavailable(CHANNEL, "starting")
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            return acceptor.refuse(
                CHANNEL, 403, "missing secret token", "bad_signature", bot=self.config.name
            )
        if not hmac.compare_digest(given.encode(), self._secret):
            return acceptor.refuse(
                CHANNEL, 403, "bad secret token", "bad_signature", bot=self.config.name
            )
        body = await read_body(request)
        if body is None:
            return acceptor.refuse(
                CHANNEL, 413, "body too large", "bad_request", bot=self.config.name
            )
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("no update_id")
        except ValueError as exc:
            return acceptor.refuse(
                CHANNEL, 400, f"not an update: {exc}", "bad_request", bot=self.config.name
            )
        try:
            delivery = await self.delivery(data)
        except (TelegramError, httpx.HTTPError) as exc:
            return acceptor.unavailable(CHANNEL, f"could not fetch a file: {exc}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            delivery = self.quarantine(data, exc)
        if delivery is None:
            return JSONResponse({"ok": True, "ignored": True})
        receipt = await acceptor.accept(delivery)
        if receipt is None:
            return acceptor.unavailable(CHANNEL, "store unavailable")
        return JSONResponse(
            {"ok": True, "journal_id": receipt.journal_id, "duplicate": receipt.duplicate}
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.bot.shutdown()


def _seconds(value: int | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return max(seconds, 1.0)
