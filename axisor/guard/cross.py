"""The Margin Guard on a cross margin position: its trigger, its version and its stored setting.

A cross margin account holds one net position, backed by the whole cross balance. Its
liquidation price follows the venue's cross rule (``axisor.exchange.paper_cross`` on the paper
venue, the ``liquidation`` field of the position on LN Markets) and moves with every order,
deposit and withdrawal, so the trigger is computed from a fresh read of the position. The guard
acts when the price has used up ``margin_threshold`` of the distance from the average entry
price to that liquidation price: a 600 USD long entered at 60,000 with its liquidation at
54,545 and a threshold of 0.8 acts at or below 55,636.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from axisor.db.models import (
    ExchangeAccount,
    LedgerEntry,
    LedgerState,
    MarginGuardConfig,
)
from axisor.db.session import Database
from axisor.exchange.models import CrossPosition, Side
from axisor.guard.config import GuardConfig, GuardScope, parse_guard_config
from axisor.guard.policy import is_crossed, trigger_price
from axisor.queue.jobs import guard_cross_ledger_prefix

# Hex digits of the SHA-256 digest kept as the version of a cross position and its setting.
VERSION_DIGITS = 16


@dataclass(frozen=True, slots=True)
class CrossTrigger:
    """The price, USD per BTC, at which the guard acts on one state of a cross position."""

    side: Side
    trigger_price: Decimal
    liquidation_price: Decimal
    version: str


def cross_side(position: CrossPosition) -> Side | None:
    """Return the side of the signed net quantity, or None when the position is flat."""
    if position.quantity_usd == 0:
        return None
    return Side.BUY if position.quantity_usd > 0 else Side.SELL


def cross_trigger(position: CrossPosition, config: GuardConfig) -> CrossTrigger | None:
    """Return the trigger of ``position`` under ``config``, or None when nothing can trigger.

    A flat position, or one without an entry or liquidation price, has no trigger. The price is
    on the 0.5 USD tick, rounded towards the entry as for isolated trades.
    """
    side = cross_side(position)
    if side is None or position.entry_price is None or position.liquidation_price is None:
        return None
    price = trigger_price(
        side, position.entry_price, position.liquidation_price, config.margin_threshold
    )
    return CrossTrigger(side, price, position.liquidation_price, cross_version(position, config))


def is_cross_crossed(trigger: CrossTrigger | None, price: Decimal) -> bool:
    """Return whether ``price`` (USD per BTC) is at or beyond the trigger, towards liquidation."""
    if trigger is None:
        return False
    return is_crossed(trigger.side, price, trigger.trigger_price)


def cross_version(position: CrossPosition, config: GuardConfig) -> str:
    """Return a digest of the position's state and the setting, the same for the same inputs.

    An order, a deposit, a withdrawal, a leverage change or a new setting gives a new version,
    so one crossing of one state queues one job, and a job queued for an older state is stale.
    The digest uses only fields of ``axisor.exchange.lnmarkets.parse.CrossPosition``, which has
    no update time.
    """
    state = {
        "id": position.id,
        "quantity_usd": position.quantity_usd,
        "entry_price": str(position.entry_price),
        "leverage": str(position.leverage),
        "margin_sats": position.margin_sats,
        "liquidation_price": str(position.liquidation_price),
        "config": config.model_dump(mode="json"),
    }
    text = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:VERSION_DIGITS]


# Reading the stored cross guard settings


@dataclass(frozen=True, slots=True)
class CrossGuardSetting:
    """An account's cross guard setting; ``enabled`` is False for an inactive account too."""

    account_id: int
    config: GuardConfig
    enabled: bool


def load_cross_setting(database: Database, account_id: int) -> CrossGuardSetting | None:
    """Return the account's cross guard setting, or None when its account-wide setting is
    missing or has scope isolated."""
    with database.session() as session:
        row = session.scalar(
            select(MarginGuardConfig).where(
                MarginGuardConfig.account_id == account_id,
                MarginGuardConfig.position_id.is_(None),
            )
        )
        return None if row is None else _setting(session, row)


def cross_guarded_accounts(database: Database) -> list[int]:
    """Return the ids of the accounts whose enabled account-wide setting has scope cross."""
    with database.session() as session:
        rows = session.scalars(
            select(MarginGuardConfig).where(
                MarginGuardConfig.position_id.is_(None), MarginGuardConfig.enabled.is_(True)
            )
        ).all()
        settings = [_setting(session, row) for row in rows]
    return sorted(s.account_id for s in settings if s is not None and s.enabled)


def count_cross_actions(database: Database, account_id: int, position_id: str) -> int:
    """Return how many actions the guard confirmed on this cross position of the account."""
    prefix = guard_cross_ledger_prefix(account_id, position_id)
    with database.session() as session:
        statement = select(func.count(LedgerEntry.id)).where(
            LedgerEntry.idempotency_key.startswith(prefix, autoescape=True),
            LedgerEntry.state == LedgerState.CONFIRMED.value,
        )
        return session.scalar(statement) or 0


def _setting(session: Session, row: MarginGuardConfig) -> CrossGuardSetting | None:
    if row.config.get("scope") != GuardScope.CROSS.value:
        return None
    account = session.get(ExchangeAccount, row.account_id)
    return CrossGuardSetting(
        account_id=row.account_id,
        config=parse_guard_config(row.config),
        enabled=row.enabled and account.active,
    )
