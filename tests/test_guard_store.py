"""Writing guard configurations: validation first, nothing stored lost on a bad write."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from axisor.db.models import ExchangeAccount, MarginGuardConfig, Position, User
from axisor.errors import InvalidConfigError
from axisor.guard.store import configure_guard
from axisor.plans import PlanLimitError


@pytest.fixture
def account_id(db) -> int:
    with db.session() as session:
        user = User(email="guard@example.test", plan="pro")
        account = ExchangeAccount(user=user, exchange="paper")
        session.add(account)
        session.flush()
        session.add(
            Position(
                account_id=account.id,
                trade_id="t-1",
                side="buy",
                quantity_usd=100,
                entry_price=Decimal("60000"),
                margin_sats=10_000,
                leverage=Decimal(10),
                liquidation_price=Decimal("54545"),
            )
        )
        return account.id


def stored_configs(db) -> list[dict]:
    with db.session() as session:
        return [row.config for row in session.scalars(select(MarginGuardConfig))]


def test_valid_config_stored(db, account_id):
    """A valid configuration is stored as JSON with exact decimal strings."""
    config, affected = configure_guard(db, account_id, {"margin_threshold": "0.8"})
    assert config.margin_threshold == Decimal("0.8")
    assert stored_configs(db) == [config.model_dump(mode="json")]
    assert stored_configs(db)[0]["margin_threshold"] == "0.8"
    assert len(affected) == 1


def test_rewrite_bumps_position_version(db, account_id):
    """A new configuration moves the version of the account's running positions."""
    configure_guard(db, account_id, {"margin_threshold": "0.8"})
    with db.session() as session:
        before = session.scalar(select(Position.guard_version))
    configure_guard(db, account_id, {"margin_threshold": "0.6"})
    with db.session() as session:
        after = session.scalar(select(Position.guard_version))
    assert after == before + 1
    assert len(stored_configs(db)) == 1


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"margin_threshold": "1.2"}, "margin_threshold"),
        ({"margin_threshold": "0.8", "action": "reduce_position"}, "action"),
        ({"margin_threshold": "0.8", "max_actions": 0}, "max_actions"),
        ({"margin_threshold": "0.8", "budget_sats": -5}, "budget_sats"),
        ({"margin_threshold": "0.8", "colour": "red"}, "colour"),
    ],
)
def test_invalid_write_keeps_stored(db, account_id, raw, field):
    """A rejected configuration names its field and leaves the stored one unchanged."""
    configure_guard(db, account_id, {"margin_threshold": "0.7"})
    before = stored_configs(db)
    with pytest.raises(InvalidConfigError) as error:
        configure_guard(db, account_id, raw)
    assert error.value.field == field
    assert field in str(error.value)
    assert stored_configs(db) == before


def test_reduce_rejected_with_reason(db, account_id):
    """reduce_position on an LN Markets isolated venue is rejected with the reason."""
    with pytest.raises(InvalidConfigError) as error:
        configure_guard(db, account_id, {"margin_threshold": "0.8", "action": "reduce_position"})
    assert "cannot partially reduce an isolated trade" in str(error.value)


def test_unknown_account_rejected(db):
    """A configuration for an account that does not exist names account_id."""
    with pytest.raises(InvalidConfigError) as error:
        configure_guard(db, 999, {"margin_threshold": "0.8"})
    assert error.value.field == "account_id"


def test_plan_limit_names_plan(db, account_id):
    """A free plan rejects add_margin, naming the plan that allows it; nothing is stored."""
    with db.session() as session:
        session.scalar(select(User)).plan = "free"
    with pytest.raises(PlanLimitError) as error:
        configure_guard(db, account_id, {"margin_threshold": "0.8", "action": "add_margin"})
    assert "free" in str(error.value)
    assert "basic" in str(error.value)
    assert stored_configs(db) == []


def test_mode_needs_position(db, account_id):
    """An individual setting without a position names the mode field."""
    with pytest.raises(InvalidConfigError) as error:
        configure_guard(db, account_id, {"margin_threshold": "0.8"}, mode="individual")
    assert error.value.field == "mode"
