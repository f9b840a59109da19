"""tweepy's async X API v2 client, pointed at a configurable base URL.

tweepy hard-codes `https://api.twitter.com`; the client takes any object with
aiohttp's `request(method, url, **kwargs)` as its session, so ours rewrites
that prefix. OAuth 1.0a signatures are computed over the original URL, which
is what the real API checks when the base URL is the real one.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from tweepy.asynchronous import AsyncClient
from yarl import URL

from ingest.channelconfig import TwitterAccountConfig, TwitterConfig
from ingest.logs import redact_secret

TWEEPY_HOST = "https://api.twitter.com"


class RebasedSession:
    """An aiohttp session that sends tweepy's requests to `base_url` instead."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    def request(self, method: str, url: str | URL, **kwargs: Any) -> Any:
        return self._session.request(method, self.rebase(url), **kwargs)

    def rebase(self, url: str | URL) -> str | URL:
        if self.base_url == TWEEPY_HOST:
            return url
        if isinstance(url, URL):
            text = str(url)
            if text.startswith(TWEEPY_HOST):
                # Already percent-encoded for the OAuth signature: keep it as it is.
                return URL(self.base_url + text[len(TWEEPY_HOST) :], encoded=True)
            return url
        if url.startswith(TWEEPY_HOST):
            return self.base_url + url[len(TWEEPY_HOST) :]
        return url

    async def close(self) -> None:
        await self._session.close()


def make_client(account: TwitterAccountConfig, section: TwitterConfig) -> AsyncClient:
    """A user-context (OAuth 1.0a) client returning plain JSON dicts; call in the event loop."""
    secrets = (
        account.consumer_key,
        account.consumer_secret,
        account.access_token,
        account.access_token_secret,
    )
    for secret in secrets:
        redact_secret(secret.get_secret_value())
    client = AsyncClient(
        consumer_key=account.consumer_key.get_secret_value(),
        consumer_secret=account.consumer_secret.get_secret_value(),
        access_token=account.access_token.get_secret_value(),
        access_token_secret=account.access_token_secret.get_secret_value(),
        return_type=dict,
        wait_on_rate_limit=False,  # we wait ourselves, cancellably, and log it
    )
    client.session = RebasedSession(section.api_base_url, section.timeout)
    return client


async def close_client(client: AsyncClient) -> None:
    session = client.session
    if isinstance(session, RebasedSession):
        await session.close()
