"""Local servers speaking the providers' documented wire protocols, for the real libraries.

- `FakeTelegram`: the Bot API (getMe, getUpdates with offset semantics and long
  polling, deleteWebhook, setWebhook, getFile, file download, sendMessage).
- `FakeX`: X API v2 (users/me, mentions with since_id and pagination, DM
  events, POST tweets, POST DMs; 429 with x-rate-limit-reset when told).
- `FakeSmsProvider`: Twilio's Messages resource (form POST, basic auth, 201
  JSON) and a generic provider's signed JSON send endpoint.

Each runs an aiohttp server on its own event loop in a thread, so the same
fake serves a daemon subprocess or a test's own event loop. Test code calls
the plain methods; they hand work to the server's loop where needed.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from channels.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, hmac_signature

T = TypeVar("T")
BOT_TOKEN = "123456789:AAE-test_token_for_the_local_bot_api_0123"
BOT_ID = 123456789
BOT_USERNAME = "acme_support_bot"


class ServerThread:
    """An aiohttp application served on 127.0.0.1 from a thread with its own loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._started.set()
        self.loop.run_forever()
        assert self._runner is not None
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's loop (where its state lives) and return its result."""
        future = asyncio.run_coroutine_threadsafe(_wrap(fn), self.loop)
        return future.result(10)


async def _wrap(fn: Callable[[], T]) -> T:
    return fn()


@contextmanager
def serving(fake: Any) -> Iterator[Any]:
    fake.server.start()
    try:
        yield fake
    finally:
        fake.server.stop()


async def _params(request: web.Request) -> dict[str, Any]:
    """Bot API parameters: form fields with JSON-encoded values (as PTB sends), or JSON."""
    if request.content_type == "application/json":
        body = await request.json()
        return dict(body) if isinstance(body, dict) else {}
    form = await request.post()
    out: dict[str, Any] = {}
    for key, value in form.items():
        try:
            out[key] = json.loads(str(value))
        except ValueError:
            out[key] = str(value)
    return out


# -- Telegram ---------------------------------------------------------------------


@dataclass
class FakeTelegram:
    """The Bot API for one bot. Updates wait until a getUpdates offset confirms them."""

    token: str = BOT_TOKEN
    username: str = BOT_USERNAME
    pending: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # file_id -> content
    sent: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[int | None] = field(default_factory=list)  # offset of each getUpdates
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    # method -> list of scripted answers (status, body) used before normal service
    failures: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    get_file_size_override: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._message_ids = itertools.count(9000)
        self._arrived: asyncio.Event | None = None
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self.server = ServerThread(app)

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.server.url}/file/bot"

    # -- test side ---------------------------------------------------------------

    def add(self, kind: str = "message", **fields: Any) -> int:
        """Queue an update (`message`, `edited_message`, `callback_query`...); return its id."""

        def add() -> int:
            update_id = next(self._ids) + 1000
            self.pending.append({"update_id": update_id, kind: fields})
            if self._arrived is not None:
                self._arrived.set()
            return update_id

        return self.server.call(add)

    def unconfirmed(self) -> list[int]:
        return self.server.call(lambda: [u["update_id"] for u in self.pending])

    def fail(self, method: str, status: int, body: dict[str, Any], times: int = 1) -> None:
        self.server.call(
            lambda: self.failures.setdefault(method, []).extend([(status, body)] * times)
        )

    # -- server side -------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        self.calls.append(method)
        params = await _params(request)
        scripted = self.failures.get(method)
        if scripted:
            status, body = scripted.pop(0)
            return web.json_response(body, status=status)
        handler = getattr(self, f"_{method}", None)
        if handler is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        result = await handler(params)
        if isinstance(result, web.Response):
            return result
        return web.json_response({"ok": True, "result": result})

    async def _getMe(self, params: dict[str, Any]) -> Any:
        return {
            "id": int(self.token.partition(":")[0]),
            "is_bot": True,
            "first_name": "Acme Support",
            "username": self.username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _deleteWebhook(self, params: dict[str, Any]) -> Any:
        return True

    async def _setWebhook(self, params: dict[str, Any]) -> Any:
        self.webhooks.append(params)
        return True

    async def _getUpdates(self, params: dict[str, Any]) -> Any:
        offset = params.get("offset")
        self.offsets.append(offset)
        if offset is not None:
            # Telegram forgets every update below the offset: they are confirmed.
            self.pending = [u for u in self.pending if u["update_id"] >= int(offset)]
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        while True:
            ready = [u for u in self.pending if offset is None or u["update_id"] >= int(offset)]
            if ready or time.monotonic() >= deadline:
                return ready[: int(params.get("limit") or 100)]
            self._arrived = asyncio.Event()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())

    async def _getFile(self, params: dict[str, Any]) -> Any:
        file_id = str(params["file_id"])
        if file_id not in self.files:
            return web.json_response(
                {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"},
                status=400,
            )
        size = self.get_file_size_override.get(file_id, len(self.files[file_id]))
        return {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "file_size": size,
            "file_path": f"documents/{file_id}.bin",
        }

    async def _file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["path"].rpartition("/")[2].removesuffix(".bin")
        if request.match_info["token"] != self.token or file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id])

    async def _sendMessage(self, params: dict[str, Any]) -> Any:
        text = str(params.get("text", ""))
        if len(text.encode("utf-16-le")) // 2 > 4096:
            return web.json_response(
                {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"},
                status=400,
            )
        self.sent.append(params)
        chat_id = int(params["chat_id"])
        return {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "from": await self._getMe({}),
            "text": text,
        }


def tg_user(
    user_id: int = 4711, first: str = "Ana", last: str = "Lima", **extra: Any
) -> dict[str, Any]:
    return {
        "id": user_id,
        "is_bot": False,
        "first_name": first,
        "last_name": last,
        "username": "ana_lima",
        "language_code": "pt-BR",
        **extra,
    }


def tg_message(
    message_id: int,
    text: str | None = "Hello",
    *,
    user: dict[str, Any] | None = None,
    chat: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    sender = user or tg_user()
    message: dict[str, Any] = {
        "message_id": message_id,
        "date": 1_790_000_000 + message_id,
        "chat": chat or {"id": sender["id"], "type": "private", "first_name": sender["first_name"]},
        "from": sender,
        **extra,
    }
    if text is not None:
        message["text"] = text
    return message


# -- X ----------------------------------------------------------------------------


@dataclass
class FakeX:
    """X API v2 for one account. Posts and DM events are listed newest first."""

    user_id: str = "900"
    username: str = "AcmeSupport"
    page_size_cap: int = 100
    mentions: list[dict[str, Any]] = field(default_factory=list)
    dm_events: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    posted: list[dict[str, Any]] = field(default_factory=list)
    dms_sent: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str], bool]] = field(default_factory=list)
    limited: dict[str, list[int]] = field(default_factory=dict)  # path kind -> reset times

    def __post_init__(self) -> None:
        self._ids = itertools.count(1_800_000_000_000_000_000)
        app = web.Application()
        app.router.add_get("/2/users/me", self._me)
        app.router.add_get("/2/users/{id}/mentions", self._mentions)
        app.router.add_get("/2/dm_events", self._dm_events)
        app.router.add_post("/2/tweets", self._tweet)
        app.router.add_post("/2/dm_conversations/with/{participant}/messages", self._dm)
        self.server = ServerThread(app)

    def next_id(self) -> str:
        return self.server.call(lambda: str(next(self._ids)))

    def mention(self, author: str, text: str, **extra: Any) -> str:
        def add() -> str:
            post_id = str(next(self._ids))
            self.users.setdefault(
                author, {"id": author, "name": f"User {author}", "username": f"user{author}"}
            )
            self.mentions.insert(
                0,
                {
                    "id": post_id,
                    "text": text,
                    "author_id": author,
                    "conversation_id": extra.pop("conversation_id", post_id),
                    "created_at": extra.pop("created_at", _now()),
                    "lang": "en",
                    "edit_history_tweet_ids": [post_id],
                    **extra,
                },
            )
            return post_id

        return self.server.call(add)

    def direct_message(self, sender: str, text: str) -> str:
        def add() -> str:
            event_id = str(next(self._ids))
            self.users.setdefault(
                sender, {"id": sender, "name": f"User {sender}", "username": f"user{sender}"}
            )
            self.dm_events.insert(
                0,
                {
                    "id": event_id,
                    "event_type": "MessageCreate",
                    "text": text,
                    "sender_id": sender,
                    "dm_conversation_id": f"{sender}-{self.user_id}",
                    "created_at": _now(),
                },
            )
            return event_id

        return self.server.call(add)

    def rate_limit(self, kind: str, reset: int, times: int = 1) -> None:
        self.server.call(lambda: self.limited.setdefault(kind, []).extend([reset] * times))

    def seen(self, kind: str) -> list[dict[str, str]]:
        return self.server.call(lambda: [q for k, _, q, _ in self.requests if k == kind])

    def _record(self, kind: str, request: web.Request) -> web.Response | None:
        signed = request.headers.get("Authorization", "").startswith("OAuth ")
        self.requests.append((kind, request.path, dict(request.query), signed))
        if not signed:
            return web.json_response({"title": "Unauthorized", "status": 401}, status=401)
        resets = self.limited.get(kind)
        if resets:
            reset = resets.pop(0)
            return web.json_response(
                {"title": "Too Many Requests", "detail": "Too Many Requests", "status": 429},
                status=429,
                headers={"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"},
            )
        return None

    async def _me(self, request: web.Request) -> web.Response:
        return self._record("me", request) or web.json_response(
            {"data": {"id": self.user_id, "name": "Acme Support", "username": self.username}}
        )

    def _page(self, items: list[dict[str, Any]], request: web.Request, key: str) -> web.Response:
        size = min(int(request.query.get("max_results", "10")), self.page_size_cap)
        start = int(request.query.get("pagination_token") or 0)
        page = items[start : start + size]
        meta: dict[str, Any] = {"result_count": len(page)}
        if page:
            meta["newest_id"], meta["oldest_id"] = page[0]["id"], page[-1]["id"]
        if start + size < len(items):
            meta["next_token"] = str(start + size)
        body: dict[str, Any] = {"meta": meta}
        if page:
            body["data"] = page
            authors = {str(i[key]) for i in page}
            body["includes"] = {"users": [self.users[a] for a in sorted(authors)]}
            keys = [k for i in page for k in (i.get("attachments") or {}).get("media_keys", [])]
            if keys:
                body["includes"]["media"] = [self.media[k] for k in keys if k in self.media]
        return web.json_response(body)

    async def _mentions(self, request: web.Request) -> web.Response:
        refused = self._record("mentions", request)
        if refused:
            return refused
        since = request.query.get("since_id")
        start = request.query.get("start_time")
        items = [
            m
            for m in self.mentions
            if (since is None or int(m["id"]) > int(since))
            and (start is None or m["created_at"] >= start)
        ]
        return self._page(items, request, "author_id")

    async def _dm_events(self, request: web.Request) -> web.Response:
        return self._record("dm_events", request) or self._page(
            self.dm_events, request, "sender_id"
        )

    async def _tweet(self, request: web.Request) -> web.Response:
        refused = self._record("tweet", request)
        if refused:
            return refused
        body = await request.json()
        text = str(body.get("text", ""))
        from channels.textsplit import x_weighted_length

        if x_weighted_length(text) > 280:
            return web.json_response(
                {"title": "Invalid Request", "detail": "text too long", "status": 400}, status=400
            )
        post_id = str(next(self._ids))
        self.posted.append({"id": post_id, **body})
        return web.json_response({"data": {"id": post_id, "text": text}}, status=201)

    async def _dm(self, request: web.Request) -> web.Response:
        refused = self._record("dm", request)
        if refused:
            return refused
        body = await request.json()
        event_id = str(next(self._ids))
        self.dms_sent.append({"to": request.match_info["participant"], "id": event_id, **body})
        return web.json_response(
            {"data": {"dm_conversation_id": "c", "dm_event_id": event_id}}, status=201
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# -- SMS providers ----------------------------------------------------------------


@dataclass
class FakeSmsProvider:
    """Twilio's Messages resource, and a generic provider's send endpoint."""

    account_sid: str = "AC00000000000000000000000000000001"
    auth_token: str = "twilio-auth-token-0123456789"
    generic_secret: str = "generic-provider-secret-0123"
    messages: list[dict[str, str]] = field(default_factory=list)
    generic: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._twilio)
        app.router.add_post("/send", self._generic)
        self.server = ServerThread(app)

    def answer(self, status: int, body: dict[str, Any], times: int = 1) -> None:
        self.server.call(lambda: self.answers.extend([(status, body)] * times))

    async def _twilio(self, request: web.Request) -> web.Response:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}" or (
            request.match_info["sid"] != self.account_sid
        ):
            return web.json_response(
                {"code": 20003, "message": "Authenticate", "status": 401}, status=401
            )
        if self.answers:
            status, body = self.answers.pop(0)
            return web.json_response(body, status=status)
        form = {k: str(v) for k, v in (await request.post()).items()}
        sid = f"SM{next(self._ids):032d}"
        self.messages.append({"sid": sid, **form})
        return web.json_response(
            {
                "sid": sid,
                "status": "queued",
                "to": form.get("To"),
                "from": form.get("From"),
                "body": form.get("Body"),
                "num_segments": "1",
            },
            status=201,
        )

    async def _generic(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        good = hmac_signature(self.generic_secret, stamp, body)
        if request.headers.get(SIGNATURE_HEADER) != good:
            return web.json_response({"error": "bad signature"}, status=403)
        doc = json.loads(body)
        self.generic.append(doc)
        return web.json_response({"id": f"gen-{len(self.generic)}"}, status=202)
