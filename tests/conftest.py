"""Shared fixtures: a real Redis and both databases (SQLite file and PostgreSQL), clean per test.

TEST_REDIS_URL and TEST_POSTGRES_URL override where the services are; the defaults are the
local services on 127.0.0.1.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
TEST_POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database emptied before and after the test."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(
            f"Redis is not reachable at {TEST_REDIS_URL}: {exc}; start it or set TEST_REDIS_URL"
        )
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


def _postgres_schema_url(schema: str) -> str:
    separator = "&" if "?" in TEST_POSTGRES_URL else "?"
    return f"{TEST_POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'axisor.db'}"
        return

    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(TEST_POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {TEST_POSTGRES_URL}: {exc}")
    yield _postgres_schema_url(schema)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def db(database_url: str):
    """A migrated database on each backend."""
    from axisor.db.migrate import upgrade
    from axisor.db.session import Database

    database = Database(database_url)
    upgrade(database)
    yield database
    database.dispose()
