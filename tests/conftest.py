from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import POSTGRES_URL, Daemon, Database, PostgresServer, missing

pytest_plugins = ["tests.dovecot"]


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    server = PostgresServer(POSTGRES_URL)
    try:
        with server.admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        missing("PostgreSQL", f"{POSTGRES_URL}: {exc}")
    return server


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh, empty database of each kind the store supports."""
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite:///{tmp_path / 'ingestd.db'}")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    try:
        yield Database("postgresql", url, server)
    finally:
        server.drop_database(url)


@pytest.fixture
def daemon(tmp_path: Path, database: Database) -> Iterator[Daemon]:
    """A running daemon on a fresh database; stopped (and checked to stop cleanly) after."""
    running = Daemon(tmp_path, database).start()
    try:
        yield running
    finally:
        if running.process and running.process.poll() is None:
            running.stop()
