"""The daemon: one event loop holding the store, the pipeline, the listeners and HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from channels import chat, mime
from channels.email_out import EmailSender
from channels.imap import ImapChannel
from channels.smtp import SmtpChannel
from ingest import cases, mailpolicy, slaviews
from ingest.clock import Clock, FileClock, from_environment
from ingest.config import Config
from ingest.health import Health
from ingest.http import HttpServer, build_app
from ingest.journal import Journal
from ingest.metrics import Metrics
from ingest.outbox import OutboxDelivery, Sender
from ingest.pipeline import Pipeline
from ingest.rulewatch import RuleWatcher
from ingest.scheduler import Scheduler
from ingest.slasweep import SlaSweep
from ingest.store import Store, StoreUnavailable
from ingest.store.session import redacted

log = logging.getLogger(__name__)

DRAIN_SECONDS = 10.0
MAX_STORE_BACKOFF = 30.0


class Daemon:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or from_environment()
        self.metrics = Metrics()
        self.store = Store(config.database)
        self.rules = RuleWatcher(config)
        parsers = {mime.CHANNEL: mime.parse, **chat.PARSERS}
        self.pipeline = Pipeline(self.store, config, self.clock, parsers, self.metrics, self.rules)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.journal = Journal(self.store, self.clock, self._wake.set)
        self.health = Health(self.store, self.pipeline, self.journal, self.metrics)
        self.metrics.rules_reload_failures.inc(self.rules.status.failures)
        self._rules_reported()
        senders: dict[str, Sender] = {}
        if config.outbound_email.enabled:
            senders["email"] = EmailSender(config.outbound_email, self.clock)
        # --- chat channels (Telegram, SMS, X): senders, webhooks, pollers ---
        self.chat_senders = chat.senders(config)
        senders.update(self.chat_senders)
        self.chat = chat.ChatChannels(
            config,
            self.store,
            self.journal,
            self.metrics,
            self.clock,
            self.health,
            ready=lambda: self.health.ready and not self._stopping.is_set(),
        )
        # --- end chat channels ---
        # --- issue 4: automatic mail to a hard-bounced address is held back at send time too
        self.outbox = OutboxDelivery(
            self.store, config.outbox, self.clock, senders, screen=mailpolicy.screen
        )
        self._outbox_wake = asyncio.Event()
        self.smtp: SmtpChannel | None = None
        self.http: HttpServer | None = None
        # --- IMAP mailboxes (issue 4) ---
        self.imap: ImapChannel | None = None
        if any(m.enabled for m in config.imap.mailboxes):
            self.imap = ImapChannel(config.imap, self.journal, self.store, self.metrics, self.clock)
            self.health.probes["imap"] = self.imap.report
        # --- end IMAP ---
        # --- SLA sweep on the scheduler (issue 5) ---
        self.sla_sweep = SlaSweep(
            self.store,
            self.pipeline.sla,
            self.clock,
            lambda: self.rules.current.templates,
            config.sla.batch_size,
        )
        self.scheduler = Scheduler()
        self.health.scrape_hooks.append(self._sla_gauges)
        # --- end SLA ---

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        log.info("ingestd starting", extra={"database": redacted(self.store.url)})
        if isinstance(self.clock, FileClock):
            log.warning("test clock: time comes from a file", extra={"file": self.clock.path})
        # HTTP first, so that /healthz can say what start-up is waiting for.
        if self.config.http.enabled:
            self.http = HttpServer(self.config.http, build_app(self.health, self.chat.routes()))
            await self.http.start()
        if not await self._prepare_store():
            if self.http:
                await self.http.stop()
            return
        self.health.ready = True
        self.journal.start()
        worker = asyncio.create_task(self._pipeline_loop(), name="pipeline")
        sender = asyncio.create_task(self._outbox_loop(), name="outbox")
        watcher = asyncio.create_task(self._rules_loop(), name="rules")
        self.scheduler.every("sla-sweep", self.config.sla.sweep_interval, self._sla_sweep)
        self.scheduler.start()
        try:
            if self.config.smtp.enabled:
                self.smtp = SmtpChannel(self.config.smtp, self.journal, self.metrics)
                await self.smtp.start()
                self.health.set("smtp", True, port=self.smtp.port)
            if self.imap:  # IMAP mailboxes (issue 4)
                await self.imap.start()
            await self.chat.start()
            log.info("ingestd ready")
            await self._stopping.wait()
        finally:
            watcher.cancel()
            await self._shutdown(worker, sender)

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            log.info("ingestd stopping")
            self._stopping.set()
            self._wake.set()

    async def _prepare_store(self) -> bool:
        """Migrate and sync queues, waiting out a store that is not up yet."""
        delay = 1.0
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self._migrate_and_sync)
                self.health.set("migrations", True)
                return True
            except StoreUnavailable as exc:
                self.health.set("migrations", False, error=str(exc))
                log.warning(
                    "store unavailable at start, retrying",
                    extra={"error": str(exc), "retry_in": delay},
                )
                await _wait(self._stopping, delay)
                delay = min(delay * 2, MAX_STORE_BACKOFF)
        return False

    def _migrate_and_sync(self) -> None:
        self.store.migrate()
        with self.store.write() as session:
            cases.sync_queues(session, self.config.queues, self.clock.now())

    async def _pipeline_loop(self) -> None:
        delay = self.config.pipeline.poll_interval
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                handled = await asyncio.to_thread(self.pipeline.run_batch)
            except StoreUnavailable as exc:
                self.health.set("pipeline", False, error=str(exc))
                log.warning(
                    "pipeline: store unavailable", extra={"error": str(exc), "retry_in": delay}
                )
                await self._sleep(delay)
                delay = min(delay * 2, MAX_STORE_BACKOFF)
                continue
            except Exception as exc:
                self.health.set("pipeline", False, error=repr(exc))
                log.exception("pipeline batch failed")
                await self._sleep(delay)
                delay = min(delay * 2, MAX_STORE_BACKOFF)
                continue
            delay = self.config.pipeline.poll_interval
            self.health.set("pipeline", True)
            if handled:
                # What was just applied may have queued mail (auto-responses).
                self._outbox_wake.set()
                continue
            await self._sleep(self.config.pipeline.poll_interval)

    async def _rules_loop(self) -> None:
        failures = self.rules.status.failures
        while not self._stopping.is_set():
            await _wait(self._stopping, self.config.rules_reload_interval)
            try:
                changed = await asyncio.to_thread(self.rules.poll)
            except Exception:  # a watcher bug must not take the daemon down
                log.exception("rules watcher failed")
                continue
            if changed or self.rules.status.failures != failures:
                if self.rules.status.failures != failures:
                    self.metrics.rules_reload_failures.inc(self.rules.status.failures - failures)
                    failures = self.rules.status.failures
                self._rules_reported()

    def _rules_reported(self) -> None:
        report = self.rules.report()
        self.health.set("rules", report.pop("ok"), **report)
        self.metrics.rules(self.rules.current.version, self.rules.status.ok)

    async def _outbox_loop(self) -> None:
        interval = self.config.outbox.poll_interval
        delay = interval
        while not self._stopping.is_set():
            self._outbox_wake.clear()
            try:
                handled = await self.outbox.run_once()
            except StoreUnavailable as exc:
                self.health.set("outbox", False, error=str(exc))
                log.warning(
                    "outbox: store unavailable", extra={"error": str(exc), "retry_in": delay}
                )
                await _wait(self._stopping, delay)
                delay = min(delay * 2, MAX_STORE_BACKOFF)
                continue
            except Exception as exc:
                self.health.set("outbox", False, error=repr(exc))
                log.exception("outbox run failed")
                await _wait(self._stopping, delay)
                delay = min(delay * 2, MAX_STORE_BACKOFF)
                continue
            delay = interval
            self.health.set("outbox", True, senders=sorted(self.outbox.senders))
            if not handled:
                await _wait(self._outbox_wake, interval)

    async def _sla_sweep(self) -> None:
        try:
            result = await asyncio.to_thread(self.sla_sweep.run, self._stopping.is_set)
        except StoreUnavailable as exc:
            # The store's health already says so; the next sweep catches up.
            log.warning("sla sweep: store unavailable", extra={"error": str(exc)})
            return
        except Exception as exc:
            self.health.set("sla", False, error=repr(exc))
            log.exception("sla sweep failed")
            return
        self.health.set("sla", True)
        for kind, count in result.mail.items():
            if count:
                self.metrics.sla_notifications.labels(kind).inc(count)
        if any(result.mail.values()):
            self._outbox_wake.set()

    def _sla_gauges(self) -> None:
        with self.store.read() as session:
            counts = slaviews.status_counts(session)
        for status, count in counts.items():
            self.metrics.sla_kpis.labels(status).set(count)

    async def _sleep(self, seconds: float) -> None:
        await _wait(self._wake, seconds)

    async def _shutdown(self, worker: asyncio.Task[None], sender: asyncio.Task[None]) -> None:
        # Order matters: stop taking mail, write what was accepted, process it.
        if self.smtp:
            await self.smtp.stop()
        if self.imap:  # IMAP mailboxes (issue 4): their last batches still reach the journal
            await self.imap.stop()
        await self.chat.stop()
        await self.journal.stop()
        self._stopping.set()
        self._outbox_wake.set()
        # The outbox finishes its current batch rather than abandoning a send.
        await asyncio.gather(worker, sender, return_exceptions=True)
        await self.scheduler.stop()  # a sweep in progress commits or rolls back first
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline:
            try:
                if not await asyncio.to_thread(self.pipeline.run_batch):
                    break
            except Exception:
                log.warning("drain stopped early: rows left are processed at next start")
                break
        if self.http:
            await self.http.stop()
        await chat.close_senders(self.chat_senders)
        self.store.dispose()
        log.info("ingestd stopped")


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until the event is set or the time is up, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
