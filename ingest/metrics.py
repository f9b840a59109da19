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

    def render(self) -> bytes:
        return generate_latest(self.registry)
