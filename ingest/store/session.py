"""Engines and sessions for SQLite (embedded, WAL) and PostgreSQL (scale-out)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ingest.config import DatabaseConfig

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The database cannot take a write right now; callers answer a temporary failure."""


def normalise_url(raw: str) -> URL:
    url = make_url(raw)
    # We ship psycopg 3; a plain postgresql:// URL would ask for psycopg2.
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def redacted(url: URL | str) -> str:
    url = make_url(url) if isinstance(url, str) else url
    return url.render_as_string(hide_password=True)


class Store:
    """Owns the engines. `write()` and `read()` hand out transactional sessions."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.url = normalise_url(config.url)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            self._prepare_sqlite_path()
            self.write_engine = self._sqlite_engine(immediate=True)
            # Readers use deferred transactions so that listing cases never
            # takes the write lock away from the journal.
            self.read_engine = self._sqlite_engine(immediate=False)
        elif self.dialect == "postgresql":
            self.write_engine = create_engine(
                self.url,
                pool_size=config.pool_size,
                max_overflow=config.pool_size,
                pool_pre_ping=True,
                pool_timeout=config.connect_timeout,
                connect_args={"connect_timeout": max(1, int(config.connect_timeout))},
            )
            self.read_engine = self.write_engine
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        self._writer = sessionmaker(self.write_engine, expire_on_commit=False)
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _prepare_sqlite_path(self) -> None:
        database = self.url.database
        if not database or database == ":memory:":
            raise ValueError(
                "SQLite needs a file (sqlite:///path/to/ingestd.db): several connections share it"
            )
        Path(database).parent.mkdir(parents=True, exist_ok=True)

    def _sqlite_engine(self, *, immediate: bool) -> Engine:
        engine = create_engine(
            self.url,
            pool_size=self.config.pool_size,
            max_overflow=self.config.pool_size,
            connect_args={"timeout": self.config.busy_timeout, "check_same_thread": False},
        )
        synchronous = self.config.sqlite_synchronous.upper()
        busy_ms = int(self.config.busy_timeout * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's
            # implicit transactions would begin too late and as DEFERRED).
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        return engine

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A read-write transaction, committed on exit; store failures become StoreUnavailable."""
        try:
            with self._writer.begin() as session:
                yield session
        except OperationalError as exc:
            raise StoreUnavailable(_short(exc)) from exc
        except DBAPIError as exc:
            if not _is_availability_error(exc):
                raise
            raise StoreUnavailable(_short(exc)) from exc

    @contextmanager
    def read(self) -> Iterator[Session]:
        try:
            with self._reader.begin() as session:
                yield session
        except OperationalError as exc:
            raise StoreUnavailable(_short(exc)) from exc

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        try:
            with self.read_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable(_short(exc)) from exc

    def migrate(self) -> None:
        from ingest.store.migrate import upgrade

        try:
            upgrade(self.write_engine)
        except OperationalError as exc:
            raise StoreUnavailable(_short(exc)) from exc

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def _is_availability_error(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    # psycopg: connection lost, admin shutdown, cannot connect now.
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    return sqlstate.startswith(("08", "57P", "53"))


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
