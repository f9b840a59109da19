"""SMTP acceptance: the daemon with its real store against a bare aiosmtpd (the ceiling).

For 1, 16 and 64 client connections, a load generator in its own process sends
3 KB messages for a fixed time to each server in turn, measuring messages per
second and the latency from the end of DATA to the reply. The daemon runs as
shipped (SQLite, synchronous=FULL, the starter rules, its pipeline processing
what arrives); the ceiling is aiosmtpd whose handler only answers 250.

    .venv/bin/python -m bench.smtp [--seconds 6] [--connections 1 16 64]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import BenchDaemon, free_port, percentile

CONNECTIONS = (1, 16, 64)
GOAL_THROUGHPUT = 0.60  # of the ceiling, at 16 connections
GOAL_P99 = 2.0  # at most this multiple of the ceiling's p99, at 16 connections


def load(port: int, connections: int, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.smtpload",
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        check=True,
        timeout=seconds + 120,
    )
    raw = json.loads(out.stdout)
    latencies: list[float] = raw.pop("latencies")
    raw["per_second"] = raw["acknowledged"] / raw["seconds"] if raw["seconds"] else 0.0
    raw["p50_ms"] = percentile(latencies, 50) * 1000
    raw["p99_ms"] = percentile(latencies, 99) * 1000
    return dict(raw)


@contextlib.contextmanager
def bare_server() -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.baresmtp", str(port)], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the bare SMTP server did not start")
        yield port
    finally:
        process.terminate()
        process.wait(10)


def run(seconds: float, connections: Sequence[int], workdir: Path) -> dict[str, Any]:
    daemon = BenchDaemon(workdir, f"sqlite:///{workdir / 'ingestd.db'}").start()
    rows = []
    try:
        with bare_server() as bare_port:
            # Warm both up (imports, the first SQLite pages), then measure each
            # connection count on both servers back to back.
            load(bare_port, 4, 1.0)
            load(daemon.smtp_port, 4, 1.0)
            for count in connections:
                ceiling = load(bare_port, count, seconds)
                ours = load(daemon.smtp_port, count, seconds)
                rows.append(
                    {
                        "connections": count,
                        "ceiling": ceiling,
                        "ingestd": ours,
                        "throughput_ratio": ours["per_second"] / ceiling["per_second"],
                        "p99_ratio": ours["p99_ms"] / ceiling["p99_ms"]
                        if ceiling["p99_ms"]
                        else None,
                    }
                )
        settle = daemon.wait_settled()
    finally:
        daemon.stop()
    at16 = next((r for r in rows if r["connections"] == 16), None)
    goals = {
        "throughput_at_16_at_least": GOAL_THROUGHPUT,
        "p99_at_16_at_most_x_ceiling": GOAL_P99,
    }
    verdict = None
    if at16 is not None:
        verdict = {
            "throughput": at16["throughput_ratio"] >= GOAL_THROUGHPUT,
            "p99": at16["p99_ratio"] is not None and at16["p99_ratio"] <= GOAL_P99,
        }
    return {
        "seconds_per_run": seconds,
        "message_bytes": 3072,
        "rows": rows,
        "backlog_drained_after_s": round(settle, 1),
        "goals": goals,
        "goals_pass": verdict,
    }


def table(result: dict[str, Any]) -> Table:
    t = Table(title="SMTP acceptance: end of DATA to 250, 3 KB messages")
    for column in (
        "conns",
        "ceiling msg/s",
        "ingestd msg/s",
        "ratio",
        "ceiling p50/p99 ms",
        "ingestd p50/p99 ms",
        "p99 ratio",
        "errors",
    ):
        t.add_column(column, justify="right")
    for r in result["rows"]:
        c, o = r["ceiling"], r["ingestd"]
        t.add_row(
            str(r["connections"]),
            f"{c['per_second']:,.0f}",
            f"{o['per_second']:,.0f}",
            f"{r['throughput_ratio']:.0%}",
            f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f}",
            f"{o['p50_ms']:.1f} / {o['p99_ms']:.1f}",
            f"{r['p99_ratio']:.1f}x" if r["p99_ratio"] is not None else "-",
            str(c["errors"] + o["errors"]),
        )
    return t


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, nargs="+", default=list(CONNECTIONS))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-smtp-") as tmp:
        started = time.monotonic()
        result = run(args.seconds, args.connections, Path(tmp))
    Console().print(table(result))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    print(f"elapsed {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
