"""Engine and session set-up for SQLite files and PostgreSQL (psycopg 3)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from axisor.errors import InvalidConfigError

SQLITE_BUSY_TIMEOUT_MS = 30_000
URL_EXAMPLES = (
    "sqlite:////var/lib/axisor/axisor.db or postgresql://user:password@localhost:5432/axisor"
)
_POSTGRES_DRIVERS = {"postgres", "postgresql", "postgresql+psycopg"}


def parse_database_url(url: str) -> URL:
    """Parse ``url`` and select the psycopg 3 driver for PostgreSQL.

    Raises InvalidConfigError for DATABASE_URL when the URL is malformed or names an
    unsupported backend. The message never contains the password.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise InvalidConfigError(
            "DATABASE_URL", f"cannot parse the URL; use a URL like {URL_EXAMPLES}"
        ) from exc

    if parsed.drivername in _POSTGRES_DRIVERS:
        if not parsed.database:
            raise _invalid(parsed, "the database name is missing")
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in {"sqlite", "sqlite+pysqlite"}:
        if not parsed.database or parsed.database == ":memory:":
            raise _invalid(parsed, "an SQLite URL must name a file, as sqlite:///path/axisor.db")
        return parsed
    raise _invalid(parsed, f"unsupported backend {parsed.drivername!r}")


def _invalid(parsed: URL, problem: str) -> InvalidConfigError:
    masked = parsed.render_as_string(hide_password=True)
    return InvalidConfigError(
        "DATABASE_URL", f"{problem} in {masked}; use a URL like {URL_EXAMPLES}"
    )


def mask_url(url: URL | str) -> str:
    """Return ``url`` with its password replaced by ``***``."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except (ArgumentError, ValueError):
            return "<unparseable URL>"
    return url.render_as_string(hide_password=True)


class Database:
    """One engine and its session factory for a DATABASE_URL.

    Workers call ``session()`` from several threads (through asyncio.to_thread), so the
    SQLite connection is not bound to the thread that opened it.
    """

    def __init__(self, url: str) -> None:
        self._url = parse_database_url(url)
        self.engine: Engine = _create_engine(self._url)
        self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        """The URL with the password masked; ``engine.url`` contains the real one."""
        return mask_url(self._url)

    @property
    def dialect(self) -> str:
        """The backend name: "sqlite" or "postgresql"."""
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a session that commits when the block ends and rolls back if it raises."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    __str__ = __repr__


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url)
    return sa.create_engine(url, pool_pre_ping=True)


def _create_sqlite_engine(url: URL) -> Engine:
    path = Path(url.database or "").expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url.set(database=str(path)),
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )
    event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()
