"""Database set-up, migrations and column types, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.fernet import Fernet

from axisor.db.crypto import CredentialCipher
from axisor.db.migrate import current_revision, head_revision, is_up_to_date, upgrade
from axisor.db.models import Base, ExchangeAccount, LedgerEntry, MarginGuardConfig, Position, User
from axisor.db.session import Database
from axisor.errors import InvalidConfigError


def _schema_differences(database: Database) -> list:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def _add_account(database: Database, email: str = "a@example.com") -> tuple[int, int]:
    with database.session() as session:
        user = User(email=email)
        account = ExchangeAccount(user=user, exchange="paper")
        session.add(account)
        session.flush()
        return user.id, account.id


def _add_position(database: Database, account_id: int, **values) -> int:
    fields = {
        "trade_id": "t-1",
        "side": "b",
        "quantity_usd": 100,
        "entry_price": Decimal("65000.50"),
        "margin_sats": 10_000,
        "leverage": Decimal("10"),
    }
    fields.update(values)
    with database.session() as session:
        position = Position(account_id=account_id, **fields)
        session.add(position)
        session.flush()
        return position.id


def test_migrate_twice_is_noop(database_url: str) -> None:
    """A second upgrade leaves the revision and the schema as they were."""
    database = Database(database_url)
    try:
        assert current_revision(database) is None
        assert not is_up_to_date(database)

        upgrade(database)
        upgrade(database)

        assert current_revision(database) == head_revision()
        assert is_up_to_date(database)
        assert _schema_differences(database) == []
    finally:
        database.dispose()


def test_schema_equals_metadata(db: Database) -> None:
    """The migrated schema matches the models: tables, columns, types, indexes, constraints."""
    assert _schema_differences(db) == []


def test_schema_comparison_detects_missing_index(db: Database) -> None:
    """The comparison above can fail: a dropped index shows up as a difference."""
    with db.engine.begin() as connection:
        connection.execute(sa.text("DROP INDEX ix_positions_account_id"))

    differences = _schema_differences(db)

    assert [entry[0] for entry in differences] == ["add_index"]


def test_migration_uses_url_schema(db: Database) -> None:
    """On PostgreSQL the tables land in the schema named by the URL's search_path."""
    if db.dialect != "postgresql":
        pytest.skip("search_path applies to PostgreSQL only")
    with db.engine.connect() as connection:
        schema = connection.execute(sa.text("SELECT current_schema()")).scalar_one()
        tables = sa.inspect(connection).get_table_names(schema=schema)

    assert schema.startswith("t_")
    assert "alembic_version" in tables
    assert "action_ledger" in tables


def test_ledger_idempotency_key_unique(db: Database) -> None:
    """A second ledger entry with the same idempotency key is rejected."""
    _, account_id = _add_account(db)
    with db.session() as session:
        session.add(LedgerEntry(idempotency_key="k1", account_id=account_id, action="add_margin"))

    with pytest.raises(sa.exc.IntegrityError), db.session() as session:
        session.add(LedgerEntry(idempotency_key="k1", account_id=account_id, action="add_margin"))

    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(LedgerEntry)) == 1


def test_credentials_column_round_trip(db: Database) -> None:
    """Encrypted credentials stored in exchange_accounts decrypt to the same values."""
    cipher = CredentialCipher([Fernet.generate_key()])
    token = cipher.encrypt({"key": "api-key-1", "secret": "s3cret", "passphrase": "pp"})
    _, account_id = _add_account(db)
    with db.session() as session:
        session.get(ExchangeAccount, account_id).credentials_encrypted = token

    with db.session() as session:
        stored = session.get(ExchangeAccount, account_id).credentials_encrypted
    credentials = cipher.decrypt(stored)

    assert stored == token
    assert credentials.key == "api-key-1"
    assert credentials.secret == "s3cret"
    assert credentials.passphrase == "pp"
    assert b"s3cret" not in stored


def test_account_repr_hides_credentials(db: Database) -> None:
    """The account repr shows [secure] instead of the token."""
    _, account_id = _add_account(db)
    with db.session() as session:
        account = session.get(ExchangeAccount, account_id)
        account.credentials_encrypted = b"token-bytes"
        text = repr(account)

    assert "[secure]" in text
    assert "token-bytes" not in text


@pytest.mark.parametrize(
    ("entry_price", "leverage", "liquidation_price"),
    [
        (Decimal("65000.50"), Decimal("10"), Decimal("59091.37")),
        (Decimal("0.01"), Decimal("1.000001"), None),
        (Decimal("9999999999999999.99"), Decimal("100.123456"), Decimal("1234567890123456.78")),
    ],
)
def test_position_decimals_exact(
    db: Database, entry_price: Decimal, leverage: Decimal, liquidation_price: Decimal | None
) -> None:
    """Prices and leverage come back as the same Decimal, with no float rounding."""
    _, account_id = _add_account(db)
    position_id = _add_position(
        db,
        account_id,
        entry_price=entry_price,
        leverage=leverage,
        liquidation_price=liquidation_price,
    )

    with db.session() as session:
        position = session.get(Position, position_id)

    assert isinstance(position.entry_price, Decimal)
    assert position.entry_price == entry_price
    assert str(position.entry_price) == str(entry_price.quantize(Decimal("0.01")))
    assert position.leverage == leverage
    assert position.liquidation_price == liquidation_price


def test_numeric_rejects_float(db: Database) -> None:
    """A float price is rejected before it reaches the database."""
    _, account_id = _add_account(db)

    with pytest.raises(sa.exc.StatementError, match="expected Decimal"):
        _add_position(db, account_id, entry_price=65000.5)


def test_numeric_rounds_half_away_from_zero(db: Database) -> None:
    """Extra decimal places round as PostgreSQL NUMERIC rounds them."""
    _, account_id = _add_account(db)
    position_id = _add_position(db, account_id, entry_price=Decimal("100.005"))

    with db.session() as session:
        assert session.get(Position, position_id).entry_price == Decimal("100.01")


def test_numeric_comparison_in_sql(db: Database) -> None:
    """WHERE and ORDER BY on a price compare numbers, not text or scaled values."""
    _, account_id = _add_account(db)
    for trade_id, price in [("a", "9.50"), ("b", "10.25"), ("c", "100.00")]:
        _add_position(db, account_id, trade_id=trade_id, entry_price=Decimal(price))

    with db.session() as session:
        above = session.scalars(
            sa.select(Position.trade_id)
            .where(Position.entry_price > Decimal("10"))
            .order_by(Position.entry_price)
        ).all()

    assert above == ["b", "c"]


def test_datetimes_are_utc_aware(db: Database) -> None:
    """Timestamps come back timezone-aware in UTC on both backends."""
    opened = dt.datetime(2024, 3, 1, 14, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    _, account_id = _add_account(db)
    position_id = _add_position(db, account_id, opened_at=opened)

    with db.session() as session:
        position = session.get(Position, position_id)

    assert position.opened_at == opened
    assert position.opened_at.utcoffset() == dt.timedelta(0)
    assert position.updated_at.utcoffset() == dt.timedelta(0)


def test_naive_datetime_rejected(db: Database) -> None:
    """A naive datetime is rejected instead of being read in the server's time zone."""
    _, account_id = _add_account(db)

    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        _add_position(db, account_id, opened_at=dt.datetime(2024, 3, 1, 14, 30))


def test_user_delete_cascades(db: Database) -> None:
    """Deleting a user removes its accounts and their positions."""
    user_id, account_id = _add_account(db)
    _add_position(db, account_id)
    _add_account(db, email="other@example.com")

    with db.session() as session:
        session.execute(sa.delete(User).where(User.id == user_id))

    with db.session() as session:
        accounts = session.scalars(sa.select(ExchangeAccount.user_id)).all()
        positions = session.scalar(sa.select(sa.func.count()).select_from(Position))

    assert user_id not in accounts
    assert len(accounts) == 1
    assert positions == 0


def test_one_account_wide_guard_config(db: Database) -> None:
    """An account has at most one guard setting without a position."""
    user_id, account_id = _add_account(db)
    with db.session() as session:
        session.add(MarginGuardConfig(user_id=user_id, account_id=account_id, config={}))

    with pytest.raises(sa.exc.IntegrityError), db.session() as session:
        session.add(MarginGuardConfig(user_id=user_id, account_id=account_id, config={}))


def test_session_rolls_back_on_error(db: Database) -> None:
    """An exception inside session() discards the block's changes."""
    with pytest.raises(RuntimeError), db.session() as session:
        session.add(User(email="rollback@example.com"))
        session.flush()
        raise RuntimeError("abort")

    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_session_from_other_thread(db: Database) -> None:
    """A session works in a thread other than the one that created the engine."""
    errors: list[BaseException] = []

    def insert() -> None:
        try:
            with db.session() as session:
                session.add(User(email="thread@example.com"))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    thread = threading.Thread(target=insert)
    thread.start()
    thread.join()

    assert errors == []
    with db.session() as session:
        assert session.scalar(sa.select(User.email)) == "thread@example.com"


def test_sqlite_pragmas(tmp_path: Path) -> None:
    """SQLite runs in WAL mode with foreign keys and a 30 s busy timeout."""
    database = Database(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'axisor.db'}")
    try:
        with database.engine.connect() as connection:
            journal_mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
            busy_timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    finally:
        database.dispose()

    assert (tmp_path / "nested" / "dir" / "axisor.db").exists()
    assert journal_mode == "wal"
    assert foreign_keys == 1
    assert busy_timeout == 30_000


@pytest.mark.parametrize(
    "url",
    [
        "postgres://axisor:pw@127.0.0.1:5432/axisor",
        "postgresql://axisor:pw@127.0.0.1:5432/axisor",
        "postgresql+psycopg://axisor:pw@127.0.0.1:5432/axisor",
    ],
)
def test_postgres_url_uses_psycopg(url: str) -> None:
    """Every PostgreSQL spelling selects psycopg 3; no connection is opened."""
    database = Database(url)
    try:
        assert database.engine.url.drivername == "postgresql+psycopg"
        assert database.engine.dialect.driver == "psycopg"
    finally:
        database.dispose()


def test_url_password_masked() -> None:
    """repr, str and url of a Database hide the password."""
    database = Database("postgresql://axisor:hunter2@127.0.0.1:5432/axisor")
    try:
        texts = [repr(database), str(database), database.url]
    finally:
        database.dispose()

    for text in texts:
        assert "hunter2" not in text
        assert "***" in text


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not a url", "cannot parse"),
        ("", "cannot parse"),
        ("mysql://root:hunter2@localhost/axisor", "unsupported backend 'mysql'"),
        ("postgresql://root:hunter2@localhost", "database name is missing"),
        ("sqlite://", "must name a file"),
        ("sqlite:///:memory:", "must name a file"),
        ("postgresql://root:hunter2@localhost:notaport/axisor", "cannot parse"),
    ],
)
def test_bad_url_rejected(url: str, problem: str) -> None:
    """A bad DATABASE_URL raises InvalidConfigError with an example and no password."""
    with pytest.raises(InvalidConfigError) as caught:
        Database(url)

    assert caught.value.field == "DATABASE_URL"
    assert problem in caught.value.message
    assert "postgresql://" in caught.value.message
    assert "hunter2" not in str(caught.value)
