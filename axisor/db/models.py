"""Tables of the platform. Money is int sats (BigInteger); prices are Numeric USD per BTC.

Two column types make SQLite behave like PostgreSQL. ``ExactNumeric`` stores a Decimal as a
scaled integer on SQLite, whose NUMERIC affinity would otherwise keep it as an 8-byte float.
``UtcDateTime`` returns timezone-aware UTC datetimes on both backends, where SQLite would drop
the offset.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeEngine


class ExactNumeric(TypeDecorator[Decimal]):
    """NUMERIC(precision, scale) on PostgreSQL; on SQLite, an INTEGER holding value * 10**scale.

    Values are rounded half away from zero to ``scale`` places, as PostgreSQL rounds NUMERIC.
    Floats are rejected so that no binary rounding reaches storage.
    NOTE: on SQLite, SQL arithmetic between two such columns works on the scaled integers.
    Comparisons with bound values and ORDER BY are exact on both backends.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision = precision
        self.scale = scale

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Decimal | int | None:
        if value is None:
            return None
        if isinstance(value, float) or not isinstance(value, Decimal | int | str):
            raise TypeError(f"expected Decimal, int or str for a NUMERIC column, got {value!r}")
        number = Decimal(value)
        if not number.is_finite():
            raise ValueError(f"{value} is not a finite number")
        quantized = number.quantize(Decimal(1).scaleb(-self.scale), ROUND_HALF_UP)
        if abs(quantized) >= Decimal(10) ** (self.precision - self.scale):
            raise ValueError(f"{value} does not fit NUMERIC({self.precision}, {self.scale})")
        if dialect.name == "sqlite":
            return int(quantized.scaleb(self.scale))
        return quantized

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None or dialect.name != "sqlite":
            return value
        return Decimal(int(value)).scaleb(-self.scale).quantize(Decimal(1).scaleb(-self.scale))


class UtcDateTime(TypeDecorator[dt.datetime]):
    """TIMESTAMP WITH TIME ZONE that accepts only aware datetimes and returns them in UTC.

    SQLite has no time zone type, so the value is stored there as naive UTC text.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass an aware datetime (UTC)")
        utc_value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return utc_value.replace(tzinfo=None)
        return utc_value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


PRICE = ExactNumeric(18, 2)
FRACTION = ExactNumeric(9, 6)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    # Named constraints let later migrations drop or alter them, including SQLite batch copies.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Plan(enum.StrEnum):
    FREE = "free"
    BASIC = "basic"
    ADVANCED = "advanced"
    PRO = "pro"
    LIFETIME = "lifetime"


class PositionStatus(enum.StrEnum):
    RUNNING = "running"
    CLOSED = "closed"  # closed by the user, the guard or a stop
    LIQUIDATED = "liquidated"
    INVALID = "invalid"  # the exchange reported values that cannot be true


class LedgerState(enum.StrEnum):
    PENDING = "pending"  # recorded, not yet sent
    SENT = "sent"  # the request is about to go or went out; the outcome is not yet known
    CONFIRMED = "confirmed"  # the exchange applied it
    FAILED = "failed"  # the exchange rejected it, or it was abandoned before sending
    UNKNOWN = "unknown"  # sent, no reply: the next attempt re-reads the exchange first


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    plan: Mapped[str] = mapped_column(String(16), default=Plan.FREE.value)
    # Outgoing webhook for notifications; the secret is a Fernet token like the credentials.
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)

    accounts: Mapped[list[ExchangeAccount]] = relationship(back_populates="user")


class ExchangeAccount(Base):
    __tablename__ = "exchange_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    exchange: Mapped[str] = mapped_column(String(32))  # "paper" or "lnmarkets"
    network: Mapped[str] = mapped_column(String(16), default="mainnet")
    label: Mapped[str] = mapped_column(String(100), default="")
    # Fernet token of the JSON credentials; never decrypted outside the exchange factory.
    credentials_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="accounts")

    def __repr__(self) -> str:
        secret = "[secure]" if self.credentials_encrypted else "None"
        return (
            f"ExchangeAccount(id={self.id}, user_id={self.user_id}, exchange={self.exchange!r}, "
            f"network={self.network!r}, credentials={secret})"
        )


class Position(Base):
    """An isolated trade the platform watches, mirrored from the exchange."""

    __tablename__ = "positions"
    __table_args__ = (UniqueConstraint("account_id", "trade_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_accounts.id", ondelete="CASCADE"), index=True
    )
    trade_id: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(4))
    quantity_usd: Mapped[int] = mapped_column(BigInteger)
    entry_price: Mapped[Decimal] = mapped_column(PRICE)
    margin_sats: Mapped[int] = mapped_column(BigInteger)
    leverage: Mapped[Decimal] = mapped_column(ExactNumeric(12, 6))
    liquidation_price: Mapped[Decimal | None] = mapped_column(PRICE, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=PositionStatus.RUNNING.value)
    # Raised on every change that moves the trigger; job ids carry it, so stale jobs are ignored.
    guard_version: Mapped[int] = mapped_column(Integer, default=1)
    guard_actions: Mapped[int] = mapped_column(Integer, default=0)
    sats_added: Mapped[int] = mapped_column(BigInteger, default=0)
    invalid_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Set when the guard could not fund an action; the next account check clears it and re-arms.
    guard_paused_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    opened_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class MarginGuardConfig(Base):
    """One Margin Guard setting: for an account (all positions) or one position."""

    __tablename__ = "margin_guard_configs"
    __table_args__ = (
        UniqueConstraint("account_id", "position_id"),
        # The constraint above treats NULLs as distinct, so this index allows only one
        # account-wide setting (position_id IS NULL) per account.
        Index(
            "ux_margin_guard_configs_account_wide",
            "account_id",
            unique=True,
            postgresql_where=text("position_id IS NULL"),
            sqlite_where=text("position_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_accounts.id", ondelete="CASCADE"), index=True
    )
    position_id: Mapped[int | None] = mapped_column(
        ForeignKey("positions.id", ondelete="CASCADE"), nullable=True
    )
    # "global" (every position of the account), "selected" or "individual" (one position).
    mode: Mapped[str] = mapped_column(String(16), default="global")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The validated configuration (axisor.guard.config.GuardConfig) as JSON.
    config: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class Automation(Base):
    __tablename__ = "automations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_accounts.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_executed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class TradeLogEntry(Base):
    """Record of an action the platform took, or tried, on an exchange, for the user to read."""

    __tablename__ = "trade_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("exchange_accounts.id", ondelete="CASCADE"))
    trade_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    quantity_usd: Mapped[int] = mapped_column(BigInteger)
    price: Mapped[Decimal | None] = mapped_column(PRICE, nullable=True)
    amount_sats: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)


class LedgerEntry(Base):
    """One intended exchange action. ``idempotency_key`` makes a second attempt find the first."""

    __tablename__ = "action_ledger"
    __table_args__ = (Index("ix_action_ledger_position_state", "position_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("exchange_accounts.id", ondelete="CASCADE"))
    position_id: Mapped[int | None] = mapped_column(
        ForeignKey("positions.id", ondelete="CASCADE"), nullable=True
    )
    action: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default=LedgerState.PENDING.value)
    # Bumped by every claim to send; a claim succeeds only from the attempt it read.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    amount_sats: Mapped[int] = mapped_column(BigInteger, default=0)
    shortfall_sats: Mapped[int] = mapped_column(BigInteger, default=0)
    margin_before_sats: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    margin_after_sats: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    trigger_price: Mapped[Decimal | None] = mapped_column(PRICE, nullable=True)
    tick_price: Mapped[Decimal | None] = mapped_column(PRICE, nullable=True)
    # Wall-clock epoch nanoseconds: the engine received the tick, the exchange call started.
    tick_received_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sent_at_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime(), default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class Notification(Base):
    """An in-app message about an action or a failure."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    read: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
