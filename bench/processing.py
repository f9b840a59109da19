"""Processing: journaled messages to committed cases, per second, on SQLite and PostgreSQL.

The journal is filled first (not timed), then the pipeline runs in this process
until the backlog is empty: parse, identify (and create) the contact, thread,
the starter rules, the case, activity, queue item, auto-response outbox row,
and whatever the case opening starts (SLA timers once they exist). Twice per
store: messages that each open a new case, then replies (In-Reply-To) that
thread onto those cases.

    .venv/bin/python -m bench.processing [--messages 5000] [--stores sqlite postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import ROOT
from bench.smtpload import body
from channels import mime
from ingest import cases
from ingest.clock import SystemClock
from ingest.config import Config
from ingest.journal import Delivery, Journal
from ingest.pipeline import Pipeline
from ingest.store import Store

POSTGRES_ADMIN = os.environ.get(
    "INGESTD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
GOAL_SQLITE = 1000.0  # messages per second, new cases, SQLite


def _raw(index: int, text: bytes, reply_to: str | None = None) -> tuple[str, bytes]:
    message_id = f"{uuid.uuid4().hex}@bench.example"
    head = [
        f"From: Customer {index} <customer{index}@bench{index % 50}.example>",
        "To: support@example.com",
        f"Subject: {'Re: ' if reply_to else ''}Dashboard error E-42 number {index}",
        f"Message-ID: <{message_id}>",
        "Date: Wed, 25 Nov 2026 12:00:00 +0000",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
    ]
    if reply_to:
        head.append(f"In-Reply-To: <{reply_to}>")
    return message_id, ("\r\n".join(head) + "\r\n\r\n").encode() + text


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(POSTGRES_ADMIN)
    name = f"ingestd_bench_{uuid.uuid4().hex[:8]}"
    dsn = f"host={admin.host or '127.0.0.1'} port={admin.port or 5432} dbname={admin.database}"
    if admin.username:
        dsn += f" user={admin.username}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(journal: Journal, raws: list[bytes]) -> None:
    for start in range(0, len(raws), 500):
        deliveries = [
            Delivery("email", mime.message_key(raw), raw, {"rcpt_tos": ["support@example.com"]})
            for raw in raws[start : start + 500]
        ]
        journal.commit(deliveries)


def drain(pipeline: Pipeline) -> tuple[int, float]:
    started = time.perf_counter()
    handled = 0
    while batch := pipeline.run_batch():
        handled += batch
    return handled, time.perf_counter() - started


def run_store(kind: str, messages: int, workdir: Path) -> dict[str, Any]:
    text = body(3072)
    with database(kind, workdir) as url:
        config = Config.model_validate(
            {
                "database": {"url": url},
                "rules_dir": str(ROOT / "rules"),
                "templates_dir": str(ROOT / "templates"),
                "queues": [
                    {"name": "General Support"},
                    {"name": "Gold Support"},
                    {"name": "Billing"},
                ],
                "pipeline": {"batch_size": 100},
            }
        )
        store = Store(config.database)
        store.migrate()
        clock = SystemClock()
        with store.write() as session:
            cases.sync_queues(session, config.queues, clock.now())
        journal = Journal(store, clock, lambda: None)
        pipeline = Pipeline(store, config, clock, {"email": mime.parse})
        firsts = [_raw(i, text) for i in range(messages)]
        fill(journal, [raw for _, raw in firsts])
        new_count, new_seconds = drain(pipeline)
        replies = [_raw(i, text, reply_to=mid)[1] for i, (mid, _) in enumerate(firsts)]
        fill(journal, replies)
        reply_count, reply_seconds = drain(pipeline)
        store.dispose()
    return {
        "store": kind,
        "messages": messages,
        "new_cases_per_second": new_count / new_seconds,
        "replies_per_second": reply_count / reply_seconds,
        "new_cases_seconds": new_seconds,
        "replies_seconds": reply_seconds,
    }


def run(messages: int, stores: Sequence[str]) -> dict[str, Any]:
    rows = []
    for kind in stores:
        with tempfile.TemporaryDirectory(prefix="ingestd-bench-proc-") as tmp:
            rows.append(run_store(kind, messages, Path(tmp)))
    sqlite_row = next((r for r in rows if r["store"] == "sqlite"), None)
    return {
        "rows": rows,
        "goal_new_cases_per_second_sqlite": GOAL_SQLITE,
        "goal_pass": None
        if sqlite_row is None
        else sqlite_row["new_cases_per_second"] >= GOAL_SQLITE,
    }


def table(result: dict[str, Any]) -> Table:
    t = Table(title="Processing: journal row to case committed (starter rules)")
    for column in ("store", "messages", "new cases/s", "replies/s"):
        t.add_column(column, justify="right")
    for r in result["rows"]:
        t.add_row(
            r["store"],
            f"{r['messages']:,}",
            f"{r['new_cases_per_second']:,.0f}",
            f"{r['replies_per_second']:,.0f}",
        )
    return t


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args(argv)
    result = run(args.messages, args.stores)
    Console().print(table(result))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
