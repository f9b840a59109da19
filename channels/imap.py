"""IMAP intake in the daemon: every configured mailbox read by a thread of its own.

Each mailbox runs under its store lease (`imap:<name>`), so of several daemons
sharing a database one reads it at a time. While the lease is held, a
dedicated thread connects, reads the folder (`FolderSync`), then waits with
IDLE (or sleeps `poll_interval` without it) and reads again. A failure closes
the connection and retries with backoff; a refused login (or a TLS setup that
cannot work) waits much longer, since retrying a wrong password only gets an
account locked. A mailbox never
blocks another: each has its own thread and socket timeouts, and messages go
to the journal through the loop's group commit (`LoopSink`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels import mime
from channels.imapconn import (
    NETWORK_ERRORS,
    AuthenticationFailed,
    ImapConnection,
    SetupFailed,
)
from channels.imapsync import FolderSync, JournalRefused, SyncOptions, Tally, cursor_name
from ingest.clock import Clock
from ingest.config import ImapConfig, ImapMailboxConfig
from ingest.journal import Journal
from ingest.leases import LeasedWork
from ingest.metrics import Metrics
from ingest.pollsink import LoopSink
from ingest.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

FIRST_BACKOFF = 1.0
AUTH_BACKOFF = 300.0  # first wait after a refused login or TLS setup …
AUTH_MAX_BACKOFF = 3600.0  # … doubled up to this
STOP_GRACE = 10.0
COUNTED = (
    "fetched",
    "new",
    "duplicates",
    "oversize",
    "acknowledged",
)  # seconds a stopping mailbox may take to finish its batch


@dataclass
class MailboxStatus:
    """What /healthz shows of one mailbox. Written by its thread, read by the loop."""

    name: str
    state: str = "starting"  # standby | connecting | idle | polling | reading | retrying | stopped
    connected: bool = False
    idle_supported: bool | None = None
    last_poll: datetime | None = None
    last_error: str | None = None
    failing_since: datetime | None = None
    needs_attention: bool = False  # a refused login or TLS setup: no point waiting
    totals: dict[str, int] = field(default_factory=dict)

    def report(self, now: datetime, degraded_after: float, held: bool) -> dict[str, Any]:
        failing_for = (now - self.failing_since).total_seconds() if self.failing_since else 0.0
        failing = self.needs_attention or (
            self.failing_since is not None and failing_for >= degraded_after
        )
        return {
            # Another daemon holds the lease: this one has nothing to answer for.
            "ok": not failing or not held,
            "state": self.state if held else "standby",
            "connected": self.connected,
            "idle": self.idle_supported,
            "last_poll": self.last_poll.isoformat() if self.last_poll else None,
            "last_error": self.last_error,
            "failing_since": self.failing_since.isoformat() if self.failing_since else None,
            **self.totals,
        }


class Mailbox:
    """One configured mailbox: its lease, its thread, its status."""

    def __init__(
        self,
        config: ImapMailboxConfig,
        settings: ImapConfig,
        journal: Journal,
        store: Store,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.config = config
        self.settings = settings
        self.journal = journal
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.status = MailboxStatus(config.name)
        self.lease = LeasedWork(
            store, f"imap:{config.name}", self._work, ttl=settings.lease_seconds
        )
        self._fields = {"channel": mime.CHANNEL, "mailbox": config.name}
        self._conn: ImapConnection | None = None
        self._tally: Tally | None = None
        self._counts: dict[str, int] = {}

    async def _work(self) -> None:
        """The leased work: run the mailbox's thread until the lease is lost or we stop."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        finished: asyncio.Future[None] = loop.create_future()

        def main() -> None:
            try:
                self._read_forever(
                    stop, LoopSink(self.store, self.clock, mime.CHANNEL, self.journal, loop)
                )
            except BaseException:  # pragma: no cover - _read_forever catches everything
                log.exception("imap mailbox thread crashed", extra=self._fields)
            finally:
                self.status.state = "stopped"
                self.status.connected = False
                with contextlib.suppress(RuntimeError):  # the loop may be closing
                    loop.call_soon_threadsafe(_settle, finished)

        thread = threading.Thread(target=main, name=f"imap:{self.config.name}", daemon=True)
        thread.start()
        try:
            await asyncio.shield(finished)
        finally:
            stop.set()
            # Let the thread finish its batch (journal, then acknowledge); a server
            # that hangs past the grace gets its socket shut under it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(finished), STOP_GRACE)
            if not finished.done():
                conn = self._conn
                if conn is not None:
                    conn.interrupt()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(finished), STOP_GRACE)
                if not finished.done():
                    log.warning("imap mailbox thread did not stop in time", extra=self._fields)

    # -- the thread ------------------------------------------------------

    def _read_forever(self, stop: threading.Event, sink: LoopSink) -> None:
        cfg = self.config
        delay = FIRST_BACKOFF
        auth_delay = AUTH_BACKOFF
        while not stop.is_set():
            conn = ImapConnection(cfg)
            self._conn = conn
            self.status.state = "connecting"
            try:
                conn.open()
                self.status.connected = True
                self.status.idle_supported = conn.can_idle
                self.metrics.imap_connected.labels(cfg.name).set(1)
                log.info(
                    "imap connected",
                    extra={**self._fields, "host": cfg.host, "idle": conn.can_idle and cfg.idle},
                )
                if cfg.processed_folder:
                    conn.ensure_folder(cfg.processed_folder)
                options = SyncOptions(cursor_name=cursor_name(cfg), scan=cfg.initial_scan)
                sync = FolderSync(
                    cfg, conn, sink, options, self.clock, stop=stop.is_set, progress=self._counted
                )
                while not stop.is_set():
                    self.status.state = "reading"
                    tally = sync.run_pass()
                    self._passed(tally)
                    delay = FIRST_BACKOFF
                    auth_delay = AUTH_BACKOFF
                    if stop.is_set():
                        break
                    if tally.candidates:
                        # Mail that arrived during a read may have been announced in
                        # the middle of it: look again before waiting.
                        continue
                    if cfg.idle and conn.can_idle:
                        self.status.state = "idle"
                        conn.idle(cfg.idle_timeout, stop)
                    else:
                        self.status.state = "polling"
                        if stop.wait(cfg.poll_interval):
                            break
            except SetupFailed as exc:
                kind = "auth" if isinstance(exc, AuthenticationFailed) else "tls"
                self._failed(kind, str(exc), setup=True)
                self._pause(stop, auth_delay)
                auth_delay = min(auth_delay * 2, AUTH_MAX_BACKOFF)
                continue
            except StoreUnavailable as exc:
                self._failed("store", f"store unavailable: {exc}")
            except JournalRefused as exc:
                self._failed("journal", str(exc))
            except NETWORK_ERRORS as exc:
                if stop.is_set():
                    break  # the socket was shut under us on purpose
                self._failed("connection", _describe(exc))
            except Exception as exc:
                log.exception("imap mailbox failed", extra=self._fields)
                self._failed("internal", _describe(exc))
            finally:
                self._conn = None
                conn.close()
                self.status.connected = False
                self.metrics.imap_connected.labels(cfg.name).set(0)
            self._pause(stop, delay)
            delay = min(delay * 2, self.settings.max_backoff)

    def _passed(self, tally: Tally) -> None:
        status = self.status
        if status.failing_since is not None:
            log.info("imap mailbox recovered", extra=self._fields)
        status.last_poll = self.clock.now()
        status.last_error = None
        status.failing_since = None
        status.needs_attention = False
        if tally.done:
            log.info("imap mailbox read", extra={**self._fields, **tally.as_dict()})

    def _counted(self, tally: Tally) -> None:
        """After each batch: metrics and totals move now, not at the end of a long read."""
        if tally is not self._tally:
            self._tally, self._counts = tally, dict.fromkeys(COUNTED, 0)
        name = self.config.name
        delta = {key: getattr(tally, key) - self._counts[key] for key in COUNTED}
        self._counts = {key: getattr(tally, key) for key in COUNTED}
        self.metrics.imap_fetched.labels(name).inc(delta["fetched"])
        self.metrics.imap_acknowledged.labels(name).inc(delta["acknowledged"])
        self.metrics.imap_oversize.labels(name).inc(delta["oversize"])
        self.metrics.accepted.labels(mime.CHANNEL, "new").inc(delta["new"])
        self.metrics.accepted.labels(mime.CHANNEL, "duplicate").inc(delta["duplicates"])
        for key, value in delta.items():
            self.status.totals[key] = self.status.totals.get(key, 0) + value

    def _failed(self, kind: str, error: str, setup: bool = False) -> None:
        self.metrics.imap_errors.labels(self.config.name, kind).inc()
        status = self.status
        status.state = "retrying"
        status.last_error = error
        status.needs_attention = setup
        if status.failing_since is None:
            status.failing_since = self.clock.now()
        level = logging.ERROR if setup else logging.WARNING
        log.log(level, "imap mailbox error", extra={**self._fields, "kind": kind, "error": error})

    @staticmethod
    def _pause(stop: threading.Event, seconds: float) -> None:
        # Jitter, so that mailboxes on one failed server do not reconnect in step.
        stop.wait(seconds * random.uniform(0.8, 1.2))


class ImapChannel:
    """All configured mailboxes, each under its own lease."""

    name = "imap"

    def __init__(
        self, config: ImapConfig, journal: Journal, store: Store, metrics: Metrics, clock: Clock
    ) -> None:
        self.config = config
        self.clock = clock
        self.mailboxes = [
            Mailbox(m, config, journal, store, metrics, clock)
            for m in config.mailboxes
            if m.enabled
        ]
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for mailbox in self.mailboxes:
            self._tasks.append(
                asyncio.create_task(
                    mailbox.lease.run(self._stopping), name=f"imap:{mailbox.config.name}"
                )
            )
        log.info(
            "imap started",
            extra={"channel": mime.CHANNEL, "mailboxes": [m.config.name for m in self.mailboxes]},
        )

    async def stop(self) -> None:
        """Stop reading; each mailbox finishes the batch it has (journal, acknowledge)."""
        self._stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def report(self) -> dict[str, Any]:
        now = self.clock.now()
        mailboxes = {
            m.config.name: m.status.report(now, self.config.degraded_after, m.lease.held)
            for m in self.mailboxes
        }
        return {"ok": all(m["ok"] for m in mailboxes.values()), "mailboxes": mailboxes}


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
