"""Real components for tests: throwaway databases, and the daemon as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from sqlalchemy.engine import make_url

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_URL = os.environ.get(
    "INGESTD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REPO = Path(__file__).resolve().parent.parent


def _corpus() -> Path:
    """The shared real-world mail corpus: $INGESTD_CORPUS, else `shared/corpus` beside the
    checkout (or beside the folder of worktrees, for a checkout under /work/wt/)."""
    if os.environ.get("INGESTD_CORPUS"):
        return Path(os.environ["INGESTD_CORPUS"])
    for base in (REPO.parent, REPO.parent.parent):
        if (base / "shared" / "corpus").is_dir():
            return base / "shared" / "corpus"
    return REPO.parent / "shared" / "corpus"


CORPUS = _corpus()


def missing(component: str, why: str) -> None:
    """A component a test needs is absent: fatal in CI, a skip on a laptop."""
    message = f"{component} is not available: {why}"
    if IN_CI:
        pytest.fail(message + " (CI=true: tests never skip for a missing component)")
    pytest.skip(message)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """The PostgreSQL server the suite creates its own databases on."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)

    def _dsn(self, database: str) -> str:
        u = self.url
        parts = [f"host={u.host or '127.0.0.1'}", f"port={u.port or 5432}", f"dbname={database}"]
        if u.username:
            parts.append(f"user={u.username}")
        if u.password:
            parts.append(f"password={u.password}")
        return " ".join(parts)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self._dsn(self.url.database or "postgres"), autocommit=True, connect_timeout=3
        )

    def create_database(self) -> str:
        name = f"ingestd_t_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def block(self, url: str) -> None:
        """Make one database refuse connections and drop the ones it has: a store outage."""
        name = make_url(url).database
        with self.admin() as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )

    def unblock(self, url: str) -> None:
        name = make_url(url).database
        with self.admin() as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


class Database:
    """One throwaway database of either kind, and a way to take it away for a while."""

    def __init__(self, kind: str, url: str, server: PostgresServer | None = None) -> None:
        self.kind = kind
        self.url = url
        self.server = server

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        if self.kind == "sqlite":
            # An exclusive lock held elsewhere: every write times out as "database is locked".
            conn = sqlite3.connect(
                make_url(self.url).database or "", isolation_level=None, timeout=5
            )
            conn.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
                conn.close()
        else:
            assert self.server is not None
            self.server.block(self.url)
            try:
                yield
            finally:
                self.server.unblock(self.url)


class Daemon:
    """`ingestd run` in a subprocess with its own config, ports and database."""

    def __init__(
        self,
        workdir: Path,
        database: Database,
        overrides: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.workdir = workdir
        # Extra environment for the daemon and its CLI (INGESTD_TEST_CLOCK_FILE, failpoints).
        self.env = dict(env or {})
        self.database = database
        self.smtp_port = free_port()
        self.http_port = free_port()
        self.config_path = workdir / "ingestd.yaml"
        self.log_path = workdir / "daemon.log"
        config: dict[str, Any] = {
            "database": {"url": database.url, "busy_timeout": 0.5, "connect_timeout": 2},
            "smtp": {"host": "127.0.0.1", "port": self.smtp_port},
            "http": {"host": "127.0.0.1", "port": self.http_port},
            "pipeline": {"poll_interval": 0.2, "retry_base_seconds": 0.2},
            "logging": {"format": "json", "level": "INFO"},
        }
        for section, values in (overrides or {}).items():
            if isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(
        self,
        timeout: float = 30.0,
        wait_healthy: bool = True,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        """`env`: extra environment, e.g. INGESTD_FAILPOINTS for a crash test."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ingest", "--config", str(self.config_path), "run"],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env, **(env or {})},
        )
        if not wait_healthy:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            status, _ = self.http_get("/healthz")
            if status == 200:
                return self
            time.sleep(0.1)
        raise AssertionError(f"daemon not healthy within {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"daemon ignored signal {sig}:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def http_get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}{path}", timeout=10
            ) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def health(self) -> dict[str, Any]:
        status, body = self.http_get("/healthz")
        return {"http_status": status, **(json.loads(body) if body else {})}

    def settled(self) -> bool:
        backlog: int | None = self.health().get("journal", {}).get("backlog")
        return backlog == 0

    def wait_settled(self, timeout: float = 15.0) -> None:
        wait_until(self.settled, timeout)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ingest", "--config", str(self.config_path), *args],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **self.env},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"ingestd {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def cases(self) -> list[dict[str, Any]]:
        return list(json.loads(self.cli("cases", "list", "--json").stdout))

    def cases_all(self) -> list[dict[str, Any]]:
        return list(json.loads(self.cli("cases", "list", "--json", "--limit", "100000").stdout))

    def case(self, number: str) -> dict[str, Any]:
        return dict(json.loads(self.cli("cases", "show", number, "--json").stdout))


class DaemonClock:
    """A time the daemon reads from a file (INGESTD_TEST_CLOCK_FILE): tests move it by days."""

    def __init__(self, path: Path, start: datetime) -> None:
        self.path = path
        self.now = start
        self.set(start)

    @property
    def env(self) -> dict[str, str]:
        return {"INGESTD_TEST_CLOCK_FILE": str(self.path)}

    def set(self, instant: datetime) -> None:
        self.now = instant
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(instant.isoformat())
        os.replace(temporary, self.path)  # readers see the old time or the new, never half

    def advance(self, delta: timedelta) -> None:
        self.set(self.now + delta)
