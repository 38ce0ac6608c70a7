"""Create the initial tables.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Column types as axisor.db.models declares them at this revision. On SQLite a NUMERIC value
# is stored as an integer scaled by 10**scale, so it is exact there too.
TIMESTAMP = sa.DateTime(timezone=True)


def _numeric(precision: int, scale: int) -> sa.types.TypeEngine:
    return sa.Numeric(precision, scale).with_variant(sa.BigInteger(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _foreign_key(table: str, column: str, referred_table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{referred_table}.id"],
        name=op.f(f"fk_{table}_{column}_{referred_table}"),
        ondelete="CASCADE",
    )


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}"))


def _index(table: str, column: str) -> None:
    op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def upgrade() -> None:
    _create_users_and_accounts()
    _create_positions()
    _create_guard_configs_and_automations()
    _create_logs()
    _create_action_ledger()


def _create_users_and_accounts() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("plan", sa.String(16), nullable=False),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        sa.Column("webhook_secret_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _pk("users"),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "exchange_accounts",
        _id(),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("exchange", sa.String(32), nullable=False),
        sa.Column("network", sa.String(16), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("credentials_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _foreign_key("exchange_accounts", "user_id", "users"),
        _pk("exchange_accounts"),
    )
    _index("exchange_accounts", "user_id")


def _create_positions() -> None:
    op.create_table(
        "positions",
        _id(),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("trade_id", sa.String(64), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("quantity_usd", sa.BigInteger(), nullable=False),
        sa.Column("entry_price", _numeric(18, 2), nullable=False),
        sa.Column("margin_sats", sa.BigInteger(), nullable=False),
        sa.Column("leverage", _numeric(12, 6), nullable=False),
        sa.Column("liquidation_price", _numeric(18, 2), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("guard_version", sa.Integer(), nullable=False),
        sa.Column("guard_actions", sa.Integer(), nullable=False),
        sa.Column("sats_added", sa.BigInteger(), nullable=False),
        sa.Column("invalid_reason", sa.Text(), nullable=True),
        sa.Column("guard_paused_reason", sa.Text(), nullable=True),
        sa.Column("opened_at", TIMESTAMP, nullable=False),
        sa.Column("closed_at", TIMESTAMP, nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        _foreign_key("positions", "account_id", "exchange_accounts"),
        _pk("positions"),
        sa.UniqueConstraint(
            "account_id", "trade_id", name=op.f("uq_positions_account_id_trade_id")
        ),
    )
    _index("positions", "account_id")


def _create_guard_configs_and_automations() -> None:
    op.create_table(
        "margin_guard_configs",
        _id(),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("position_id", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        _foreign_key("margin_guard_configs", "account_id", "exchange_accounts"),
        _foreign_key("margin_guard_configs", "position_id", "positions"),
        _foreign_key("margin_guard_configs", "user_id", "users"),
        _pk("margin_guard_configs"),
        sa.UniqueConstraint(
            "account_id",
            "position_id",
            name=op.f("uq_margin_guard_configs_account_id_position_id"),
        ),
    )
    _index("margin_guard_configs", "account_id")
    _index("margin_guard_configs", "user_id")
    op.create_index(
        "ux_margin_guard_configs_account_wide",
        "margin_guard_configs",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text("position_id IS NULL"),
        sqlite_where=sa.text("position_id IS NULL"),
    )
    op.create_table(
        "automations",
        _id(),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("last_executed_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _foreign_key("automations", "account_id", "exchange_accounts"),
        _foreign_key("automations", "user_id", "users"),
        _pk("automations"),
    )
    _index("automations", "account_id")
    _index("automations", "user_id")


def _create_logs() -> None:
    op.create_table(
        "trade_log",
        _id(),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("trade_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("quantity_usd", sa.BigInteger(), nullable=False),
        sa.Column("price", _numeric(18, 2), nullable=True),
        sa.Column("amount_sats", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _foreign_key("trade_log", "account_id", "exchange_accounts"),
        _foreign_key("trade_log", "user_id", "users"),
        _pk("trade_log"),
    )
    _index("trade_log", "created_at")
    _index("trade_log", "user_id")
    op.create_table(
        "notifications",
        _id(),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("read", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _foreign_key("notifications", "user_id", "users"),
        _pk("notifications"),
    )
    _index("notifications", "user_id")


def _create_action_ledger() -> None:
    op.create_table(
        "action_ledger",
        _id(),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("position_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("amount_sats", sa.BigInteger(), nullable=False),
        sa.Column("shortfall_sats", sa.BigInteger(), nullable=False),
        sa.Column("margin_before_sats", sa.BigInteger(), nullable=True),
        sa.Column("margin_after_sats", sa.BigInteger(), nullable=True),
        sa.Column("trigger_price", _numeric(18, 2), nullable=True),
        sa.Column("tick_price", _numeric(18, 2), nullable=True),
        sa.Column("tick_received_ns", sa.BigInteger(), nullable=True),
        sa.Column("sent_at_ns", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        _foreign_key("action_ledger", "account_id", "exchange_accounts"),
        _foreign_key("action_ledger", "position_id", "positions"),
        _pk("action_ledger"),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_action_ledger_idempotency_key")),
    )
    op.create_index(
        "ix_action_ledger_position_state", "action_ledger", ["position_id", "state"], unique=False
    )


def downgrade() -> None:
    for table in (
        "action_ledger",
        "notifications",
        "trade_log",
        "automations",
        "margin_guard_configs",
        "positions",
        "exchange_accounts",
        "users",
    ):
        op.drop_table(table)
