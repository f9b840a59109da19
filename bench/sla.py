"""The SLA sweep's cost at 10,000 and at 1,000,000 open cases, with the same number due.

Issue 5's goal: the larger store costs no more than twice the smaller, because
the due set, not the table, drives the cost of a sweep. For each store and size
this bulk-loads that many open cases, each with an In Progress KPI instance, of
which `--due` per round are past their warning time and the rest due in the
next 30 days; then it times `SlaSweep.run()` (the real sweep: the claim, the
status moves, a warning mail rendered from templates/ and written to the outbox
per KPI, one commit per batch) over a fresh due set per round, and a sweep with
nothing due (the claim alone).

    .venv/bin/python -m bench.sla                    # SQLite and PostgreSQL, ~3 min
    .venv/bin/python -m bench.sla --stores sqlite    # SQLite only
    .venv/bin/python -m bench.sla --sizes 10000,100000 --due 500

PostgreSQL is the server at INGESTD_TEST_POSTGRES_URL (as for the tests); the
benchmark creates a throwaway database and drops it. It is skipped, with a note,
when no server answers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert, text

from ingest import slaviews
from ingest.clock import ManualClock
from ingest.config import DatabaseConfig
from ingest.sla import SlaBook
from ingest.slasweep import SlaSweep
from ingest.store import Store
from ingest.store.models import Queue
from ingest.templating import Templates

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results-sla.json"
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
CHUNK = 20_000


CASE_COLUMNS = (
    "id", "number", "title", "origin", "priority", "state", "status_reason", "queue_id",
    "custom", "sla_policy", "entitlement_charged", "created_at", "updated_at",
)  # fmt: skip
KPI_COLUMNS = (
    "id", "case_id", "policy", "item", "kpi", "success_on", "calendar", "warn_minutes",
    "fail_minutes", "applicable_from", "paused_minutes", "warn_at", "fail_at", "due_at",
    "status", "created_at", "updated_at",
)  # fmt: skip


def rows(
    size: int, due: int, rounds: int, queue_id: int
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(case, KPI) rows: round r's due set falls due at NOW - 1 h + r minutes, the rest later."""
    rng = random.Random(size)
    for i in range(size):
        created = NOW - timedelta(days=2, seconds=i % 86_400)
        if i < due * rounds:
            due_at = NOW - timedelta(hours=1) + timedelta(minutes=i // due)
        else:
            due_at = NOW + timedelta(seconds=rng.randint(3_600, 30 * 86_400))
        case = {
            "id": i + 1,
            "number": f"CAS-{i + 1000:07d}-BENCH",
            "title": f"Printer {i} is jammed",
            "origin": "email",
            "priority": "Normal",
            "state": "Active",
            "status_reason": "In Progress",
            "queue_id": queue_id,
            "custom": {},
            "sla_policy": "Standard",
            "entitlement_charged": False,
            "created_at": created,
            "updated_at": created,
        }
        kpi = {
            "id": i + 1,
            "case_id": i + 1,
            "policy": "Standard",
            "item": "Resolve",
            "kpi": "resolution",
            "success_on": "resolved",
            "calendar": None,
            "warn_minutes": 60.0,
            "fail_minutes": 24 * 60.0,
            "applicable_from": created,
            "paused_minutes": 0.0,
            "warn_at": due_at,
            "fail_at": due_at + timedelta(days=1),
            "due_at": due_at,
            "status": "In Progress",
            "created_at": created,
            "updated_at": created,
        }
        yield case, kpi


def load(store: Store, size: int, due: int, rounds: int) -> float:
    """Bulk-load through the driver (executemany on SQLite, COPY on PostgreSQL)."""
    started = time.perf_counter()
    with store.write_engine.begin() as conn:
        queue_id = conn.execute(
            insert(Queue)
            .values(
                name="General Support",
                description="",
                owner_email="lead@example.com",
                created_at=NOW,
            )
            .returning(Queue.id)
        ).scalar_one()
    cases: list[tuple[Any, ...]] = []
    kpis: list[tuple[Any, ...]] = []
    for case, kpi in rows(size, due, rounds, queue_id):
        cases.append(tuple(case.values()))
        kpis.append(tuple(kpi.values()))
        if len(cases) == CHUNK:
            _flush(store, cases, kpis)
    _flush(store, cases, kpis)
    if store.dialect == "postgresql":
        with store.write_engine.begin() as conn:
            # What autovacuum would do after a bulk load; the planner needs the counts.
            conn.execute(text("ANALYZE"))
            for table in ("cases", "sla_kpi_instances"):
                conn.execute(
                    text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")  # noqa: S608
                )
    return time.perf_counter() - started


def _flush(store: Store, cases: list[tuple[Any, ...]], kpis: list[tuple[Any, ...]]) -> None:
    if not cases:
        return
    raw = store.write_engine.raw_connection()
    try:
        cursor = raw.cursor()
        if store.dialect == "sqlite":
            cursor.execute("BEGIN")  # the store's connections are in autocommit mode
        for table, columns, values in (
            ("cases", CASE_COLUMNS, cases),
            ("sla_kpi_instances", KPI_COLUMNS, kpis),
        ):
            if store.dialect == "postgresql":
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in values:
                        copy.write_row(_pg(row))
            else:
                marks = ", ".join("?" * len(columns))
                cursor.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",  # noqa: S608
                    [_sqlite(row) for row in values],
                )
        raw.commit()
    finally:
        raw.close()
    cases.clear()
    kpis.clear()


def _sqlite(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # As SQLAlchemy stores them: naive UTC text with microseconds, JSON as text.
    return tuple(
        v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        if isinstance(v, datetime)
        else json.dumps(v)
        if isinstance(v, dict)
        else v
        for v in row
    )


def _pg(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        v.astimezone(UTC).replace(tzinfo=None)
        if isinstance(v, datetime)
        else json.dumps(v)
        if isinstance(v, dict)
        else v
        for v in row
    )


def measure(store: Store, size: int, due: int, rounds: int) -> dict[str, Any]:
    templates = Templates.load(REPO / "templates")
    clock = ManualClock(NOW - timedelta(hours=2))
    sweep = SlaSweep(store, SlaBook({}, {}), clock, lambda: templates, batch_size=200)

    def due_set(r: int) -> float:
        clock.advance(NOW - timedelta(hours=1) + timedelta(minutes=r, seconds=30) - clock.now())
        started = time.perf_counter()
        result = sweep.run()
        assert (result.moved, result.mail["warning"]) == (due, due), result
        return time.perf_counter() - started

    due_set(0)  # warms up: statement compilation, the connection pool, template code
    idle = []
    for _ in range(rounds):  # set 1 falls due half a minute later: nothing is due now
        started = time.perf_counter()
        assert sweep.run().moved == 0
        idle.append(time.perf_counter() - started)
    busy = [due_set(r) for r in range(1, rounds + 1)]
    counts = []
    for _ in range(3):
        started = time.perf_counter()
        with store.read() as session:
            slaviews.status_counts(session)
        counts.append(time.perf_counter() - started)
    return {
        "sweep_ms": [round(s * 1000, 2) for s in busy],
        "idle_ms": [round(s * 1000, 3) for s in idle],
        "sweep_median_ms": round(statistics.median(busy) * 1000, 1),
        "idle_median_ms": round(statistics.median(idle) * 1000, 2),
        "status_counts_ms": round(statistics.median(counts) * 1000, 1),
    }


def run_store(
    kind: str, sizes: list[int], due: int, rounds: int, console: Console
) -> list[dict[str, Any]]:
    out = []
    for size in sizes:
        if kind == "sqlite":
            directory = tempfile.mkdtemp(prefix="ingestd-bench-sla-")
            url = f"sqlite:///{directory}/bench.db"
            drop = None
        else:
            url, drop = _postgres_database()
        store = Store(DatabaseConfig(url=url))
        try:
            store.migrate()
            console.print(f"{kind}: loading {size:,} open cases ...", highlight=False)
            loaded = load(store, size, due, rounds + 1)
            figures = measure(store, size, due, rounds)
        finally:
            store.dispose()
            if drop is not None:
                drop()
        out.append(
            {"store": kind, "open_cases": size, "due": due, "load_s": round(loaded, 1), **figures}
        )
        console.print(
            f"  sweep of {due} due: {figures['sweep_median_ms']} ms; nothing due: "
            f"{figures['idle_median_ms']} ms; KPIs by status (/metrics): "
            f"{figures['status_counts_ms']} ms (load {loaded:.0f} s)",
            highlight=False,
        )
    return out


def _postgres_database() -> tuple[str, Any]:
    from tests.support import POSTGRES_URL, PostgresServer

    server = PostgresServer(POSTGRES_URL)
    url = server.create_database()
    return url, lambda: server.drop_database(url)


def _postgres_available() -> str | None:
    try:
        _, drop = _postgres_database()
    except Exception as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    drop()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sla", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000", help="open cases, comma-separated")
    parser.add_argument("--due", type=int, default=1000, help="KPIs due per sweep")
    parser.add_argument("--rounds", type=int, default=5, help="sweeps timed per size")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--no-save", action="store_true", help="do not write results-sla.json")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    console = Console(width=120)
    results: list[dict[str, Any]] = []
    notes = []
    for kind in args.stores.split(","):
        if kind == "postgresql":
            why = _postgres_available()
            if why is not None:
                notes.append(f"PostgreSQL skipped: {why}")
                console.print(notes[-1])
                continue
        results.extend(run_store(kind, sizes, args.due, args.rounds, console))

    table = Table(title=f"SLA sweep: {args.due} KPIs due, median of {args.rounds} sweeps")
    for column in (
        "store",
        "open cases",
        "sweep ms",
        "per KPI ms",
        "nothing due ms",
        "vs smallest",
        "KPIs by status ms",
    ):
        table.add_column(column, justify="right")
    summary = []
    for kind in dict.fromkeys(r["store"] for r in results):
        mine = [r for r in results if r["store"] == kind]
        base = mine[0]["sweep_median_ms"]
        for r in mine:
            ratio = r["sweep_median_ms"] / base
            r["ratio_to_smallest"] = round(ratio, 2)
            table.add_row(
                kind,
                f"{r['open_cases']:,}",
                f"{r['sweep_median_ms']:.0f}",
                f"{r['sweep_median_ms'] / args.due:.2f}",
                f"{r['idle_median_ms']:.2f}",
                f"{ratio:.2f}x",
                f"{r['status_counts_ms']:.0f}",
            )
        largest = mine[-1]
        verdict = "pass" if largest["ratio_to_smallest"] <= 2 else "FAIL"
        summary.append(
            f"{kind}: {largest['open_cases']:,} vs {mine[0]['open_cases']:,} open cases: "
            f"{largest['ratio_to_smallest']:.2f}x ({verdict} against the goal of at most 2x)"
        )
    console.print(table)
    for line in summary + notes:
        console.print(line, highlight=False)
    if not args.no_save:
        RESULTS.write_text(
            json.dumps(
                {
                    "benchmark": "sla",
                    "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": {
                        "python": platform.python_version(),
                        "platform": platform.platform(),
                        "cpus": os.cpu_count(),
                    },
                    "method": {
                        "due_per_sweep": args.due,
                        "rounds": args.rounds,
                        "sweep": "SlaSweep.run(): claim, move to Nearing Noncompliance, render "
                        "templates/sla_warning, outbox row per KPI; batches of 200",
                        "statistic": "median wall time of the sweeps",
                    },
                    "results": results,
                    "summary": summary,
                    "notes": notes,
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if all("FAIL" not in line for line in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
