"""Alembic migrations run from code, on the engine of a Database.

The script directory ships inside the package, so this works from an installed wheel and
from any working directory.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from axisor.db.session import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Key of the PostgreSQL advisory lock that serializes concurrent upgrades ("axisor" in ASCII).
_UPGRADE_LOCK_KEY = 0x617869736F72


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    # ConfigParser treats "%" as interpolation, so a literal "%" in the path must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest revision id of the migrations shipped with the package."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration scripts found in {MIGRATIONS_DIR}")
    return head


def current_revision(database: Database) -> str | None:
    """Return the revision the database is at, or None when it was never migrated."""
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_up_to_date(database: Database) -> bool:
    """Return whether the database is at the head revision."""
    return current_revision(database) == head_revision()


def upgrade(database: Database, revision: str = "head") -> None:
    """Migrate the database to ``revision``; a database already there is left unchanged.

    On PostgreSQL a transaction-scoped advisory lock makes concurrent callers run one after
    the other, and the second finds nothing to do.
    """
    with database.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY}
            )
        command.upgrade(_alembic_config(connection), revision)
