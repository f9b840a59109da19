"""Outbound X: a reply to the customer's post (a thread when long) or a direct message.

The row's recipient is the customer's X user id. `X-Account` names the
configured account (optional with one); `X-Mode` is `reply` (answer the post
in `X-Reply-To-Post`), `dm`, or `post` (a post of its own, which an agent
must ask for). A reply over 280 weighted characters becomes a thread, each
part answering the one before and numbered "(1/3)"; a DM is split at 10,000.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from tweepy.asynchronous import AsyncClient
from tweepy.errors import (
    BadRequest,
    Forbidden,
    HTTPException,
    NotFound,
    TooManyRequests,
    TwitterServerError,
    Unauthorized,
)

from channels.outparts import PartProgress, configured
from channels.textsplit import X_DM_LIMIT, X_POST_LIMIT, split, split_numbered, x_weighted_length
from channels.twitter_parse import ACCOUNT_HEADER, CHANNEL, MODE_HEADER, REPLY_TO_HEADER
from channels.xapi import close_client, make_client
from ingest.channelconfig import TwitterConfig
from ingest.outbox import OutboundMessage, PermanentFailure, Sent, TemporaryFailure


class TwitterSender:
    channel = CHANNEL

    def __init__(self, config: TwitterConfig) -> None:
        self.config = config
        self.accounts = {a.name: a for a in config.accounts}
        self._clients: dict[str, AsyncClient] = {}
        self.progress = PartProgress()

    def _client(self, message: OutboundMessage) -> AsyncClient:
        account = configured(self.accounts, message.headers.get(ACCOUNT_HEADER), "X account")
        if account.name not in self._clients:  # aiohttp sessions belong to the running loop
            self._clients[account.name] = make_client(account, self.config)
        return self._clients[account.name]

    async def send(self, message: OutboundMessage) -> Sent:
        client = self._client(message)
        text = (message.body_text or "").strip()
        if not text:
            raise PermanentFailure("the message has no text")
        reply_to = message.headers.get(REPLY_TO_HEADER)
        mode = message.headers.get(MODE_HEADER) or "reply"
        if mode == "dm":
            return await self._dm(client, message, text)
        if mode == "reply" and not reply_to:
            raise PermanentFailure(
                f"an X reply needs {REPLY_TO_HEADER} (or {MODE_HEADER}: dm or post)"
            )
        if mode not in ("reply", "post"):
            raise PermanentFailure(f"{MODE_HEADER} must be reply, dm or post, not {mode!r}")
        parts = split_numbered(text, X_POST_LIMIT, x_weighted_length)

        async def post(index: int, part: str, previous: str | None) -> str:
            answering = previous or reply_to
            answer = await client.create_tweet(
                text=part, in_reply_to_tweet_id=answering, user_auth=True
            )
            return str(answer["data"]["id"])

        ids = await self._sending(message, parts, post)
        return Sent(f"x posts {', '.join(ids)}", message_id=ids[0])

    async def _dm(self, client: AsyncClient, message: OutboundMessage, text: str) -> Sent:
        async def direct(index: int, part: str, previous: str | None) -> str:
            answer = await client.create_direct_message(
                participant_id=message.recipient, text=part, user_auth=True
            )
            return str(answer["data"]["dm_event_id"])

        ids = await self._sending(message, split(text, X_DM_LIMIT), direct)
        return Sent(f"x direct messages {', '.join(ids)}", message_id=f"dm:{ids[0]}")

    async def _sending(self, message: OutboundMessage, parts: list[str], one: Any) -> list[str]:
        try:
            sent: list[str] = await self.progress.send(message.id, parts, one)
        except TooManyRequests as exc:
            raise TemporaryFailure(f"X rate limit (429), resets at {exc.reset_time}") from None
        except (TwitterServerError, aiohttp.ClientError, TimeoutError) as exc:
            raise TemporaryFailure(f"X: {type(exc).__name__}: {exc}") from None
        except Unauthorized as exc:  # credentials: a config fix repairs it
            raise TemporaryFailure(f"X refused our credentials: {exc}") from None
        except (BadRequest, Forbidden, NotFound) as exc:  # deleted post, not allowed, duplicate
            raise PermanentFailure(f"X refused: {exc}") from None
        except HTTPException as exc:
            raise TemporaryFailure(f"X: {exc}") from None
        except (KeyError, TypeError) as exc:
            raise TemporaryFailure(f"X answered without an id: {exc!r}") from None
        return sent

    async def close(self) -> None:
        for client in self._clients.values():
            await close_client(client)
