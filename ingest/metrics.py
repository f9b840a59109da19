"""Prometheus metrics, one registry per daemon."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "ingestd_messages_accepted",
            "Messages acknowledged to the sender after the journal commit",
            ["channel", "result"],  # result: new | duplicate
            registry=self.registry,
        )
        self.rejected = Counter(
            "ingestd_messages_rejected",
            "Messages refused at the channel, by reason",
            ["channel", "reason"],
            registry=self.registry,
        )
        self.processed = Counter(
            "ingestd_messages_processed",
            "Journal rows processed by the pipeline, by outcome",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ingestd_pipeline_latency_seconds",
            "From journal commit to case committed",
            ["channel"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.journal_backlog = Gauge(
            "ingestd_journal_backlog",
            "Journal rows waiting to be processed (pending or to be retried)",
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "ingestd_dead_letters",
            "Journal rows whose retries are exhausted",
            registry=self.registry,
        )
        self.store_up = Gauge(
            "ingestd_store_up", "1 when the store answered the last check", registry=self.registry
        )

        self.rules_info = Gauge(
            "ingestd_rules_info",
            "1 for the version of the rules in force",
            ["version"],
            registry=self.registry,
        )
        self.rules_reload_ok = Gauge(
            "ingestd_rules_last_reload_ok",
            "1 when the last edit of the rules was loaded, 0 when it was refused",
            registry=self.registry,
        )
        self.rules_reload_failures = Counter(
            "ingestd_rules_reload_failures",
            "Edits of the rules refused because they did not validate",
            registry=self.registry,
        )

        # IMAP mailboxes (issue 4), per configured mailbox name.
        self.imap_fetched = Counter(
            "ingestd_imap_fetched",
            "Message bodies downloaded from IMAP mailboxes",
            ["mailbox"],
            registry=self.registry,
        )
        self.imap_acknowledged = Counter(
            "ingestd_imap_acknowledged",
            "IMAP messages flagged \\Seen (and moved) after the journal commit",
            ["mailbox"],
            registry=self.registry,
        )
        self.imap_oversize = Counter(
            "ingestd_imap_oversize",
            "IMAP messages over the size cap: left on the server, recorded in quarantine",
            ["mailbox"],
            registry=self.registry,
        )
        self.imap_errors = Counter(
            "ingestd_imap_errors",
            "IMAP mailbox failures, by kind (auth, connection, store, journal, internal)",
            ["mailbox", "kind"],
            registry=self.registry,
        )
        self.imap_connected = Gauge(
            "ingestd_imap_connected",
            "1 while the mailbox has a logged-in connection",
            ["mailbox"],
            registry=self.registry,
        )
        self.sla_kpis = Gauge(
            "ingestd_sla_kpis",
            "SLA KPI instances by status (refreshed on each scrape)",
            ["status"],
            registry=self.registry,
        )
        self.sla_notifications = Counter(
            "ingestd_sla_notifications",
            "SLA warning and failure mails written to the outbox",
            ["kind"],  # warning | failure
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "ingestd_provider_rate_limited",
            "Times a provider API answered 429 and polling waited for its reset",
            ["channel"],
            registry=self.registry,
        )

    def rules(self, version: str, ok: bool) -> None:
        self.rules_info.clear()
        self.rules_info.labels(version).set(1)
        self.rules_reload_ok.set(1 if ok else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
