"""The chat channels inside the daemon: Telegram bots, SMS webhooks, X accounts.

Built from config; each channel is off until it lists a bot, account or
provider. Pollers (Telegram in polling mode, X) run under a store lease, so
among several daemons on one database exactly one polls each bot and account.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute

from channels.acceptor import Acceptor
from channels.base import Parser
from ingest.clock import Clock
from ingest.config import Config
from ingest.health import Health
from ingest.journal import Journal
from ingest.leases import LeasedWork
from ingest.message import InboundMessage
from ingest.metrics import Metrics
from ingest.outbox import Sender
from ingest.store import Store

if TYPE_CHECKING:
    from channels.sms import SmsWebhooks
    from channels.telegram import TelegramBot
    from channels.twitter import XAccount

log = logging.getLogger(__name__)

REPORT_EVERY = 1.0

# The provider libraries (python-telegram-bot, tweepy, aiohttp) are imported only
# by a daemon that uses them: every daemon and CLI start pays for what it imports.


def _telegram(raw: bytes, meta: dict[str, Any]) -> InboundMessage:
    from channels import telegram_parse

    return telegram_parse.parse(raw, meta)


def _sms(raw: bytes, meta: dict[str, Any]) -> InboundMessage:
    from channels import sms_parse

    return sms_parse.parse(raw, meta)


def _twitter(raw: bytes, meta: dict[str, Any]) -> InboundMessage:
    from channels import twitter_parse

    return twitter_parse.parse(raw, meta)


# Journal rows of every chat channel are parsed, configured or not (rows stay).
PARSERS: dict[str, Parser] = {"telegram": _telegram, "sms": _sms, "twitter": _twitter}


def senders(config: Config) -> dict[str, Sender]:
    """The outbox senders of the configured chat channels."""
    found: dict[str, Sender] = {}
    if config.telegram.bots:
        from channels.telegram_out import TelegramSender

        found["telegram"] = TelegramSender(config.telegram)
    if config.sms.accounts:
        from channels.sms_out import SmsSender

        found["sms"] = SmsSender(config.sms)
    if config.twitter.accounts:
        from channels.twitter_out import TwitterSender

        found["twitter"] = TwitterSender(config.twitter)
    return found


async def close_senders(found: dict[str, Sender]) -> None:
    for sender in found.values():
        close = getattr(sender, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


class ChatChannels:
    def __init__(
        self,
        config: Config,
        store: Store,
        journal: Journal,
        metrics: Metrics,
        clock: Clock,
        health: Health,
        ready: Callable[[], bool],
    ) -> None:
        self.health = health
        self.acceptor = Acceptor(journal, metrics, ready)
        self.bots: list[TelegramBot] = []
        self.sms: SmsWebhooks | None = None
        self.accounts: list[XAccount] = []
        if config.telegram.bots:
            from channels.telegram import TelegramBot

            self.bots = [
                TelegramBot(bot, config.telegram, self.acceptor, store, clock)
                for bot in config.telegram.bots
            ]
        if config.sms.accounts:
            from channels.sms import SmsWebhooks

            self.sms = SmsWebhooks(config.sms, self.acceptor)
        if config.twitter.accounts:
            from channels.twitter import XAccount

            rate_limited = metrics.rate_limited.labels("twitter").inc
            self.accounts = [
                XAccount(
                    account, config.twitter, self.acceptor, store, clock, on_rate_limit=rate_limited
                )
                for account in config.twitter.accounts
            ]
        if self.routes() and not config.http.enabled:
            log.error(
                "webhooks configured but http.enabled is false: they cannot be reached",
                extra={"routes": [getattr(r, "path", "") for r in self.routes()]},
            )
        self._leases: dict[str, LeasedWork] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [b.route() for b in self.bots if b.config.mode == "webhook"]
        if self.sms is not None:
            routes.extend(self.sms.routes())
        return routes

    async def start(self) -> None:
        for bot in self.bots:
            if bot.config.mode == "polling":
                lease = self._leases[f"telegram:{bot.config.name}"] = bot.lease()
                self._spawn(lease.run(self._stopping), f"telegram:{bot.config.name}")
            else:
                self._spawn(bot.register_webhook(), f"telegram-webhook:{bot.config.name}")
        for account in self.accounts:
            lease = self._leases[f"twitter:{account.config.name}"] = account.lease()
            self._spawn(lease.run(self._stopping), f"twitter:{account.config.name}")
        if self.bots or self.accounts or self.sms:
            self._spawn(self._report_loop(), "chat-health")
            log.info(
                "chat channels started",
                extra={
                    "telegram_bots": [b.config.name for b in self.bots],
                    "sms_accounts": len(self.sms.config.accounts) if self.sms else 0,
                    "x_accounts": [a.config.name for a in self.accounts],
                },
            )

    def _spawn(self, work: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def _report_loop(self) -> None:
        while not self._stopping.is_set():
            self.report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), REPORT_EVERY)

    def report(self) -> None:
        """Each poller's state into /healthz (advisory: a provider outage is not ours)."""
        if self.bots:
            bots = {
                b.config.name: {
                    **b.status,
                    "username": b.username,
                    **self._held(f"telegram:{b.config.name}"),
                }
                for b in self.bots
            }
            self.health.set("telegram", all(b["ok"] for b in bots.values()), bots=bots)
        if self.accounts:
            accounts = {
                a.config.name: {
                    **a.status,
                    "username": (a.me or {}).get("username"),
                    **self._held(f"twitter:{a.config.name}"),
                }
                for a in self.accounts
            }
            self.health.set("twitter", all(a["ok"] for a in accounts.values()), accounts=accounts)
        if self.sms is not None:
            self.health.set("sms", True, accounts=[a.name for a in self.sms.config.accounts])

    def _held(self, name: str) -> dict[str, Any]:
        lease = self._leases.get(name)
        return {} if lease is None else {"polling_here": lease.held}

    async def stop(self) -> None:
        """Stop polling (a batch being journaled finishes or is re-read next time)."""
        self._stopping.set()
        for task in self._tasks:
            if not task.get_name().startswith(("telegram:", "twitter:")):
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for bot in self.bots:
            await bot.close()
