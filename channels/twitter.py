"""X (Twitter) accounts: mentions and direct messages, polled with tweepy's async client.

Mentions are read with `since_id`; the DM events endpoint has no `since_id`,
so its pages (newest first) are read until an event at or below the stored id.
Either cursor is stored only after every item newer than it is journaled (a
crash in between re-reads a few, and the journal's key, the post or event id,
drops them). On the very first poll a cursor starts at "now" (or
`backfill_hours` earlier), so connecting an account does not import its past.

Rate limits: a `429` waits until the `x-rate-limit-reset` time X sends (capped
at `max_backoff_seconds`); server errors and network trouble back off
exponentially. Only the endpoint that failed waits: each has its own cursor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from typing import Any

import aiohttp
from tweepy.errors import HTTPException, TooManyRequests, TwitterServerError

from channels.acceptor import Acceptor
from channels.twitter_parse import CHANNEL, DM, MENTION, dm_key, parse_time, post_key
from channels.xapi import close_client, make_client
from ingest import cursors, failpoints
from ingest.channelconfig import TwitterAccountConfig, TwitterConfig
from ingest.clock import Clock
from ingest.journal import Delivery
from ingest.leases import LeasedWork
from ingest.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

AFTER_COMMIT = "twitter.after_commit"  # failpoint: journaled, cursor not yet stored
PAGE_SIZE = 100
MAX_PAGES = 20  # X serves at most the 800 newest mentions anyway
TWEET_FIELDS = [
    "author_id",
    "conversation_id",
    "created_at",
    "in_reply_to_user_id",
    "lang",
    "referenced_tweets",
    "attachments",
    "entities",
]
USER_FIELDS = ["name", "username", "verified"]
MEDIA_FIELDS = ["type", "url", "preview_image_url"]
DM_FIELDS = [
    "id",
    "text",
    "event_type",
    "created_at",
    "sender_id",
    "dm_conversation_id",
    "attachments",
]


# A post or DM event as the API gave it, its author, and its media objects.
Found = tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]


class XAccount:
    """One configured X account: polls its mentions and DMs, journals each."""

    def __init__(
        self,
        config: TwitterAccountConfig,
        section: TwitterConfig,
        acceptor: Acceptor,
        store: Store,
        clock: Clock,
        wall_clock: Callable[[], float] = time.time,
        on_rate_limit: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.section = section
        self.acceptor = acceptor
        self.store = store
        self.clock = clock
        self.wall_clock = wall_clock  # x-rate-limit-reset is a Unix time on X's clock
        self.on_rate_limit = on_rate_limit
        self.me: dict[str, Any] | None = None
        self.status: dict[str, Any] = {"ok": True}
        self._not_before: dict[str, float] = {}  # endpoint -> wall time it may be called again
        self._failures: dict[str, int] = {}

    @property
    def fields(self) -> dict[str, Any]:
        return {"channel": CHANNEL, "account": self.config.name}

    def lease(self) -> LeasedWork:
        return LeasedWork(
            self.store, f"twitter:{self.config.name}", self.poll, ttl=self.section.lease_seconds
        )

    async def poll(self) -> None:
        """Poll forever (while this daemon holds the account's lease)."""
        client = make_client(self.config, self.section)
        try:
            while True:
                await self.poll_once(client)
                await asyncio.sleep(self._next_wait())
        finally:
            await close_client(client)

    async def poll_once(self, client: Any) -> None:
        """One round: each endpoint that is not waiting out a limit or a backoff."""
        if self.me is None and not await self._guarded(
            "users/me", client, lambda: self._identify(client)
        ):
            return
        if self.config.mentions:
            await self._guarded("mentions", client, lambda: self._mentions(client))
        if self.config.direct_messages:
            await self._guarded("dm_events", client, lambda: self._dms(client))

    def _next_wait(self) -> float:
        now = self.wall_clock()
        waits = [t - now for t in self._not_before.values() if t > now]
        return max(min([self.section.poll_interval, *waits]), 0.05)

    async def _guarded(
        self, endpoint: str, client: Any, call: Callable[[], Awaitable[None]]
    ) -> bool:
        now = self.wall_clock()
        if self._not_before.get(endpoint, 0) > now:
            return False
        try:
            await call()
        except TooManyRequests as exc:
            reset = exc.reset_time
            wait = (reset - now + 1) if reset else self._backoff(endpoint)
            wait = min(max(wait, 1.0), self.section.max_backoff_seconds)
            self._wait(endpoint, wait, f"rate limited (429) until x-rate-limit-reset, {wait:g}s")
            if self.on_rate_limit:
                self.on_rate_limit()
            return False
        except (TwitterServerError, aiohttp.ClientError, TimeoutError, StoreUnavailable) as exc:
            self._wait(endpoint, self._backoff(endpoint), f"{type(exc).__name__}: {exc}")
            return False
        except HTTPException as exc:  # 401, 403...: a person must act; retried slowly
            self._wait(endpoint, self.section.max_backoff_seconds, f"{type(exc).__name__}: {exc}")
            return False
        self._failures.pop(endpoint, None)
        self._not_before.pop(endpoint, None)
        if not self._failures:
            self.status.update(ok=True, error=None)
        return True

    def _backoff(self, endpoint: str) -> float:
        count = self._failures.get(endpoint, 0)
        return float(min(2.0**count * 5, self.section.max_backoff_seconds))

    def _wait(self, endpoint: str, seconds: float, error: str) -> None:
        self._failures[endpoint] = self._failures.get(endpoint, 0) + 1
        self._not_before[endpoint] = self.wall_clock() + seconds
        self.status.update(ok=False, error=f"{endpoint}: {error}")
        log.warning(
            "x polling paused",
            extra={**self.fields, "endpoint": endpoint, "error": error, "retry_in": seconds},
        )

    async def _identify(self, client: Any) -> None:
        answer = await client.get_me(user_auth=True, user_fields=["username", "name"])
        self.me = answer["data"]
        log.info("x account identified", extra={**self.fields, "username": self.me["username"]})

    # -- mentions -----------------------------------------------------------------

    async def _mentions(self, client: Any) -> None:
        assert self.me is not None
        name = f"twitter:{self.config.name}:mentions"
        cursor = await self._cursor(name)
        params: dict[str, Any] = {
            "max_results": PAGE_SIZE,
            "tweet_fields": TWEET_FIELDS,
            "expansions": ["author_id", "attachments.media_keys"],
            "user_fields": USER_FIELDS,
            "media_fields": MEDIA_FIELDS,
        }
        if cursor.get("since_id"):
            params["since_id"] = cursor["since_id"]
        else:
            params["start_time"] = cursor["start_time"]
        posts: list[Found] = []
        newest: int | None = None
        token: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.get_users_mentions(
                self.me["id"], user_auth=True, pagination_token=token, **params
            )
            users, media = _includes(page)
            for post in page.get("data") or []:
                newest = max(newest or 0, int(post["id"]))
                if str(post.get("author_id")) == str(self.me["id"]):
                    continue  # our own post naming ourselves
                keys = (post.get("attachments") or {}).get("media_keys") or []
                posts.append(
                    (
                        post,
                        users.get(str(post.get("author_id")), {}),
                        [media[k] for k in keys if k in media],
                    )
                )
            token = (page.get("meta") or {}).get("next_token")
            if not token:
                break
        await self._commit(name, MENTION, posts, newest)

    # -- direct messages ----------------------------------------------------------

    async def _dms(self, client: Any) -> None:
        assert self.me is not None
        name = f"twitter:{self.config.name}:dms"
        cursor = await self._cursor(name)
        since = int(cursor["since_id"]) if cursor.get("since_id") else None
        start = parse_time(cursor.get("start_time"))
        events: list[Found] = []
        newest: int | None = None
        token: str | None = None
        done = False
        for _ in range(MAX_PAGES):
            page = await client.get_direct_message_events(
                event_types="MessageCreate",
                max_results=PAGE_SIZE,
                pagination_token=token,
                dm_event_fields=DM_FIELDS,
                expansions=["sender_id", "attachments.media_keys"],
                user_fields=USER_FIELDS,
                media_fields=MEDIA_FIELDS,
                user_auth=True,
            )
            users, media = _includes(page)
            for event in page.get("data") or []:
                event_id = int(event["id"])
                if since is not None and event_id <= since:
                    done = True  # newest first: everything after this was seen
                    break
                newest = max(newest or 0, event_id)
                created = parse_time(event.get("created_at"))
                if since is None and start and created and created < start:
                    done = True  # older than the first poll: not imported
                    break
                if str(event.get("sender_id")) == str(self.me["id"]):
                    continue  # our own answers
                keys = (event.get("attachments") or {}).get("media_keys") or []
                events.append(
                    (
                        event,
                        users.get(str(event.get("sender_id")), {}),
                        [media[k] for k in keys if k in media],
                    )
                )
            token = (page.get("meta") or {}).get("next_token")
            if done or not token:
                break
        await self._commit(name, DM, events, newest)

    # -- journal and cursors ------------------------------------------------------

    async def _commit(self, cursor: str, kind: str, found: list[Found], newest: int | None) -> None:
        """Journal what was found, oldest first as it happened; then move the cursor."""
        found.sort(key=lambda f: int(f[0]["id"]))
        for item, author, media in found:
            key = post_key(item["id"]) if kind == MENTION else dm_key(item["id"])
            await self._journal(kind, key, item, author, media)
        if newest is not None:
            failpoints.hit(AFTER_COMMIT)
            await self._advance(cursor, {"since_id": str(newest)})

    async def _journal(
        self,
        kind: str,
        key: str,
        item: dict[str, Any],
        author: dict[str, Any],
        media: list[dict[str, Any]],
    ) -> None:
        assert self.me is not None
        raw = json.dumps(
            {"kind": kind, "item": item, "author": author, "media": media}, ensure_ascii=False
        ).encode()
        meta = {
            "listener": "x-polling",
            "account": self.config.name,
            "account_id": str(self.me["id"]),
            "account_username": self.me.get("username"),
        }
        if await self.acceptor.accept(Delivery(CHANNEL, key, raw, meta)) is None:
            raise StoreUnavailable("the journal could not commit the post")

    async def _cursor(self, name: str) -> dict[str, Any]:
        value = await asyncio.to_thread(self._read, name)
        if value:
            return value
        # First poll ever: start now (or backfill_hours ago), and remember that.
        start = self.clock.now() - timedelta(hours=self.section.backfill_hours)
        value = {"start_time": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        await self._advance(name, value)
        return value

    async def _advance(self, name: str, value: dict[str, Any]) -> None:
        await asyncio.to_thread(self._write, name, value)

    def _read(self, name: str) -> dict[str, Any] | None:
        with self.store.read() as session:
            return cursors.get(session, name)

    def _write(self, name: str, value: dict[str, Any]) -> None:
        with self.store.write() as session:
            cursors.put(session, name, value, self.clock.now())


def _includes(page: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    includes = page.get("includes") or {}
    users = {str(u["id"]): u for u in includes.get("users") or []}
    media = {str(m["media_key"]): m for m in includes.get("media") or []}
    return users, media
