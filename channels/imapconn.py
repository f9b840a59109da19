"""One IMAP connection (imapclient, blocking): log in, look, fetch, acknowledge, wait.

Runs in a mailbox's own worker thread, never in the event loop. Every network
step has a socket timeout, so a server that stops answering costs its own
mailbox a reconnect and nobody else anything. Nothing here sets a flag by
itself: bodies are fetched with BODY.PEEK[], and `acknowledge` is the only
call that marks or moves mail.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, IMAPClientError, LoginError
from imapclient.tls import create_default_context

from ingest.config import ImapMailboxConfig

log = logging.getLogger(__name__)

SEEN = b"\\Seen"
DELETED = b"\\Deleted"
HEADER_LIMIT = 65536  # bytes of a header block kept for a message too large to fetch
# Commands stay well under servers' line limits (Dovecot: 64 KB).
UIDS_PER_COMMAND = 500
# How often a waiting thread looks at its stop flag.
STOP_CHECK_SECONDS = 0.5

# What a broken connection or a refusing server raises through imapclient.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, IMAPClientError, ssl.SSLError)


class SetupFailed(Exception):
    """Retrying soon will not help: a person must fix the configuration or the server."""


class AuthenticationFailed(SetupFailed):
    """The server refused the username or password."""


class TlsFailed(SetupFailed):
    """The server's certificate is not trusted, or it does not offer STARTTLS."""


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None


@dataclass(frozen=True)
class MessageInfo:
    uid: int
    size: int
    seen: bool
    internaldate: datetime | None
    message_id_header: bytes


class ImapConnection:
    """A logged-in session on one mailbox's server."""

    def __init__(self, config: ImapMailboxConfig) -> None:
        self.config = config
        self.client: IMAPClient | None = None
        self.capabilities: frozenset[bytes] = frozenset()
        self._lock = threading.Lock()  # guards `client` against `interrupt` from another thread

    # -- session ---------------------------------------------------------

    def open(self) -> None:
        cfg = self.config
        context = _tls_context(cfg) if cfg.security != "none" else None
        try:
            client = IMAPClient(
                cfg.host,
                port=cfg.server_port,
                ssl=cfg.security == "tls",
                ssl_context=context,
                timeout=cfg.timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise TlsFailed(f"the certificate of {cfg.host} is not trusted: {exc}") from None
        with self._lock:
            self.client = client
        client.normalise_times = False  # INTERNALDATE stays timezone-aware
        if cfg.security == "starttls":
            try:
                client.starttls(context)
            except CapabilityError:
                raise TlsFailed(
                    f"{cfg.host}:{cfg.server_port} does not offer STARTTLS: use security tls "
                    "on port 993, or ask for STARTTLS to be enabled"
                ) from None
            except ssl.SSLCertVerificationError as exc:
                raise TlsFailed(f"the certificate of {cfg.host} is not trusted: {exc}") from None
        try:
            client.login(cfg.username, cfg.password.get_secret_value())
        except LoginError as exc:
            raise AuthenticationFailed(
                f"the server refused the login of {cfg.username!r} at {cfg.host}: "
                f"{_server_text(exc)}"
            ) from None
        self.capabilities = frozenset(c.upper() for c in client.capabilities())

    def close(self) -> None:
        with self._lock:
            client, self.client = self.client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:  # the connection may be gone already; nothing to save
            with contextlib.suppress(Exception):
                client.shutdown()

    def interrupt(self) -> None:
        """From another thread: break a blocked read so the owner thread can stop."""
        with self._lock:
            client = self.client
        if client is None:
            return
        with contextlib.suppress(OSError):
            client.socket().shutdown(socket.SHUT_RDWR)

    @property
    def can_idle(self) -> bool:
        return b"IDLE" in self.capabilities

    def _client(self) -> IMAPClient:
        if self.client is None:
            raise ConnectionError("not connected")
        return self.client

    # -- reading ---------------------------------------------------------

    def select(self, folder: str, readonly: bool = False) -> FolderState:
        response = self._client().select_folder(folder, readonly=readonly)
        uidnext = response.get(b"UIDNEXT")
        return FolderState(
            uidvalidity=int(response[b"UIDVALIDITY"]),
            uidnext=int(uidnext) if uidnext is not None else None,
        )

    def ensure_folder(self, folder: str) -> None:
        client = self._client()
        if not client.folder_exists(folder):
            client.create_folder(folder)
            log.info("imap folder created", extra={"channel": "email", "folder": folder})

    def uids_after(self, uid: int) -> list[int]:
        """UIDs above `uid`, ascending. (`n:*` always names the last message: filtered.)"""
        found = self._client().search(["UID", f"{uid + 1}:*"])
        return sorted(u for u in found if u > uid)

    def search(self, criteria: Sequence[Any]) -> list[int]:
        return sorted(self._client().search(list(criteria)))

    def infos(self, uids: Sequence[int]) -> dict[int, MessageInfo]:
        """Size, flags, arrival and Message-ID header: everything but the body."""
        out: dict[int, MessageInfo] = {}
        client = self._client()
        for chunk in _chunks(uids, UIDS_PER_COMMAND):
            items = [
                "RFC822.SIZE",
                "FLAGS",
                "INTERNALDATE",
                "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]",
            ]
            for uid, data in client.fetch(chunk, items).items():
                if b"RFC822.SIZE" not in data:
                    continue  # an unsolicited FLAGS update, not our answer
                out[uid] = MessageInfo(
                    uid=uid,
                    size=int(data[b"RFC822.SIZE"]),
                    seen=SEEN in data.get(b"FLAGS", ()),
                    internaldate=data.get(b"INTERNALDATE"),
                    message_id_header=_item(data, b"BODY[HEADER.FIELDS (MESSAGE-ID)]") or b"",
                )
        return out

    def bodies(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The raw messages, without setting \\Seen. A UID gone meanwhile is left out."""
        if not uids:
            return {}
        fetched = self._client().fetch(list(uids), ["BODY.PEEK[]"])
        return {uid: raw for uid, data in fetched.items() if (raw := _item(data, b"BODY[]"))}

    def header(self, uid: int) -> bytes | None:
        """The header block only, at most HEADER_LIMIT bytes, without setting \\Seen."""
        fetched = self._client().fetch([uid], [f"BODY.PEEK[HEADER]<0.{HEADER_LIMIT}>"])
        data = fetched.get(uid)
        if data is None:
            return None
        for key, value in data.items():
            if isinstance(key, bytes) and key.startswith(b"BODY[HEADER]"):
                return bytes(value) if value is not None else b""
        return b""

    # -- acknowledging ---------------------------------------------------

    def acknowledge(self, uids: Sequence[int], processed_folder: str | None) -> None:
        """Mark the messages \\Seen and, when configured, move them out of the folder."""
        if not uids:
            return
        client = self._client()
        for chunk in _chunks(uids, UIDS_PER_COMMAND):
            client.add_flags(chunk, [SEEN], silent=True)
            if processed_folder is None:
                continue
            if b"MOVE" in self.capabilities:
                client.move(chunk, processed_folder)
                continue
            client.copy(chunk, processed_folder)
            client.add_flags(chunk, [DELETED], silent=True)
            if b"UIDPLUS" in self.capabilities:
                client.uid_expunge(chunk)
            # Without UIDPLUS an EXPUNGE would also remove other people's deleted
            # mail: the copies stay flagged \Deleted for the mail client to purge.

    # -- waiting ---------------------------------------------------------

    def idle(self, seconds: float, stop: threading.Event) -> bool:
        """IDLE until the server reports a change, `seconds` pass, or `stop` is set.

        True when the server said something worth a look.
        """
        client = self._client()
        client.idle()
        changed = self._buffered_news(client)
        deadline = time.monotonic() + (0 if changed else seconds)
        silent_wakeups = 0
        try:
            while not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = min(left, STOP_CHECK_SECONDS)
                began = time.monotonic()
                responses = client.idle_check(timeout=wait)
                if any(_worth_a_look(r) for r in responses):
                    changed = True
                    break
                # imapclient swallows EOF and returns nothing at once: a socket that
                # keeps waking us with nothing to read is a closed connection.
                if not responses and time.monotonic() - began < wait / 10:
                    silent_wakeups += 1
                    if silent_wakeups >= 3:
                        raise ConnectionError("the server closed the connection during IDLE")
                else:
                    silent_wakeups = 0
        finally:
            if client.socket().fileno() >= 0:
                with contextlib.suppress(*NETWORK_ERRORS):
                    # News that came in after the last idle_check arrives with DONE.
                    _, responses = client.idle_done()
                    changed = changed or any(_worth_a_look(r) for r in responses)
        return changed

    def _buffered_news(self, client: IMAPClient) -> bool:
        """Whether the server already announced something that imaplib has buffered.

        Servers may send `* 1 EXISTS` in the same packet as `+ idling` (Dovecot does
        for mail that arrived since the last command). imaplib reads both into its
        buffer, and idle_check, which polls the socket, never sees the second line.
        """
        reader = getattr(client._imap, "file", None)
        peek = getattr(reader, "peek", None)
        if peek is None:
            return False
        sock = client.socket()
        news = False
        sock.setblocking(False)
        try:
            while True:
                try:
                    if not peek(1):
                        break
                except OSError:  # nothing buffered and the socket would block
                    break
                line = client._imap._get_line()
                news = news or not line.startswith(b"* OK")
        finally:
            sock.settimeout(self.config.timeout)
        return news


def _tls_context(cfg: ImapMailboxConfig) -> ssl.SSLContext:
    context: ssl.SSLContext = create_default_context()
    if cfg.ca_file is not None:
        context.load_verify_locations(cafile=str(cfg.ca_file))
    return context


def _server_text(exc: BaseException) -> str:
    text = str(exc).strip()
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text or type(exc).__name__


def _item(data: dict[Any, Any], key: bytes) -> bytes | None:
    value = data.get(key)
    return bytes(value) if value is not None else None


def _worth_a_look(response: Any) -> bool:
    # "* OK Still here" keep-alives carry no news; EXISTS, RECENT, EXPUNGE,
    # FETCH and BYE do (BYE makes the next command fail: a reconnect).
    return not (isinstance(response, tuple) and response and response[0] == b"OK")


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
