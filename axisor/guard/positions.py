"""Positions as the platform tracks them, kept in step with what the exchange reports."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from axisor.db.models import (
    ExchangeAccount,
    MarginGuardConfig,
    Position,
    PositionStatus,
    TradeLogEntry,
    utcnow,
)
from axisor.db.session import Database
from axisor.errors import InvalidExchangeDataError
from axisor.exchange.models import CloseReason, Side, Trade
from axisor.guard.config import GuardConfig, parse_guard_config
from axisor.guard.policy import trigger_price, validate_trade
from axisor.ledger import confirm_in_session


@dataclass(frozen=True, slots=True)
class PositionSnapshot:
    """A position's fields as plain values, safe to use after its session has closed."""

    id: int
    account_id: int
    user_id: int
    trade_id: str
    side: Side
    quantity_usd: int
    entry_price: Decimal
    margin_sats: int
    liquidation_price: Decimal | None
    status: str
    guard_version: int
    guard_actions: int
    sats_added: int
    guard_paused_reason: str | None = None


@dataclass(frozen=True, slots=True)
class GuardedPosition:
    """A running position with the guard configuration that applies to it."""

    position: PositionSnapshot
    config: GuardConfig
    enabled: bool

    @property
    def trigger(self) -> Decimal | None:
        p = self.position
        return trigger_price(
            p.side, p.entry_price, p.liquidation_price, self.config.margin_threshold
        )


def snapshot(position: Position, user_id: int) -> PositionSnapshot:
    return PositionSnapshot(
        id=position.id,
        account_id=position.account_id,
        user_id=user_id,
        trade_id=position.trade_id,
        side=Side(position.side),
        quantity_usd=position.quantity_usd,
        entry_price=position.entry_price,
        margin_sats=position.margin_sats,
        liquidation_price=position.liquidation_price,
        status=position.status,
        guard_version=position.guard_version,
        guard_actions=position.guard_actions,
        sats_added=position.sats_added,
        guard_paused_reason=position.guard_paused_reason,
    )


def guard_config_for(session: Session, position: Position) -> MarginGuardConfig | None:
    """Return the position's own configuration, else its account's, else None."""
    rows = session.scalars(
        select(MarginGuardConfig).where(MarginGuardConfig.account_id == position.account_id)
    ).all()
    own = [row for row in rows if row.position_id == position.id]
    # An account-wide setting for the cross position does not guard isolated trades.
    shared = [row for row in rows if row.position_id is None and row.config.get("scope") != "cross"]
    return (own or shared or [None])[0]


def load_guarded(session: Session, position_id: int) -> GuardedPosition | None:
    """Return the running position and its configuration, or None when nothing guards it."""
    position = session.get(Position, position_id)
    if position is None or position.status != PositionStatus.RUNNING.value:
        return None
    row = guard_config_for(session, position)
    if row is None:
        return None
    account = session.get(ExchangeAccount, position.account_id)
    return GuardedPosition(
        position=snapshot(position, account.user_id),
        config=parse_guard_config(row.config),
        enabled=row.enabled and account.active,
    )


def increment(position: Position, column: str, amount: int) -> None:
    """Add ``amount`` to a counter of the position.

    On a stored position the addition runs in SQL (``SET x = x + n``), so concurrent
    transactions do not overwrite each other's increments. A new position is updated in Python.
    """
    if inspect(position).persistent:
        setattr(position, column, getattr(Position, column) + amount)
    else:
        setattr(position, column, (getattr(position, column) or 0) + amount)


def apply_trade(position: Position, trade: Trade) -> bool:
    """Copy the exchange's view of the trade; return whether the trigger inputs changed."""
    changed = (
        position.margin_sats != trade.margin_sats
        or position.liquidation_price != trade.liquidation_price
        or position.entry_price != trade.entry_price
    )
    position.quantity_usd = trade.quantity_usd
    position.entry_price = trade.entry_price
    position.margin_sats = trade.margin_sats
    position.leverage = trade.leverage
    position.liquidation_price = trade.liquidation_price
    if changed:
        increment(position, "guard_version", 1)
    return changed


def close_position(position: Position, reason: CloseReason | str, time: dt.datetime | None) -> None:
    """Mark the position as no longer running, and move its version so old jobs are stale."""
    liquidated = str(reason) == CloseReason.LIQUIDATED.value
    position.status = (PositionStatus.LIQUIDATED if liquidated else PositionStatus.CLOSED).value
    position.closed_at = time or utcnow()
    increment(position, "guard_version", 1)


def mark_invalid(position: Position, error: InvalidExchangeDataError) -> None:
    position.status = PositionStatus.INVALID.value
    position.invalid_reason = str(error)
    increment(position, "guard_version", 1)


def new_position(account_id: int, trade: Trade) -> Position:
    return Position(
        account_id=account_id,
        trade_id=trade.id,
        side=trade.side.value,
        quantity_usd=trade.quantity_usd,
        entry_price=trade.entry_price,
        margin_sats=trade.margin_sats,
        leverage=trade.leverage,
        liquidation_price=trade.liquidation_price,
        status=PositionStatus.RUNNING.value,
        guard_version=1,
    )


@dataclass
class SyncResult:
    """Ids of the positions one reconciliation added, updated, closed or marked invalid."""

    added: list[int]
    updated: list[int]
    closed: list[int]
    invalid: list[int]

    @property
    def changed_ids(self) -> list[int]:
        return self.added + self.updated + self.closed + self.invalid


def sync_account(
    database: Database,
    account_id: int,
    running: list[Trade],
    closed_reasons: dict[str, CloseReason],
) -> SyncResult:
    """Reconcile the account's positions with its running trades, in one transaction.

    A trade that no longer runs closes its position, as liquidated when the exchange reports so.
    A trade reported with impossible values marks its position invalid. Neither sends an action.
    """
    result = SyncResult([], [], [], [])
    by_trade = {trade.id: trade for trade in running}
    with database.session() as session:
        tracked = session.scalars(
            select(Position).where(
                Position.account_id == account_id,
                Position.status == PositionStatus.RUNNING.value,
            )
        ).all()
        for position in tracked:
            _sync_one(position, by_trade.pop(position.trade_id, None), closed_reasons, result)
        for trade in by_trade.values():
            _import_trade(session, account_id, trade, result)
    return result


def _sync_one(position, trade, closed_reasons, result: SyncResult) -> None:
    if trade is None:
        reason = closed_reasons.get(position.trade_id, CloseReason.CLOSED)
        close_position(position, reason, None)
        result.closed.append(position.id)
        return
    try:
        validate_trade(trade)
    except InvalidExchangeDataError as exc:
        mark_invalid(position, exc)
        result.invalid.append(position.id)
        return
    resumed = position.guard_paused_reason is not None
    if resumed:
        position.guard_paused_reason = None
        increment(position, "guard_version", 1)
    if apply_trade(position, trade) or resumed:
        result.updated.append(position.id)


def _import_trade(session: Session, account_id: int, trade: Trade, result: SyncResult) -> None:
    known = session.scalar(
        select(Position).where(Position.account_id == account_id, Position.trade_id == trade.id)
    )
    if known is not None:
        return  # a closed or invalid position whose trade id the exchange still lists
    position = new_position(account_id, trade)
    try:
        validate_trade(trade)
    except InvalidExchangeDataError as exc:
        mark_invalid(position, exc)
    session.add(position)
    session.flush()
    target = result.invalid if position.status == PositionStatus.INVALID.value else result.added
    target.append(position.id)


def log_trade_action(
    session: Session,
    *,
    user_id: int,
    position: Position,
    action: str,
    status: str,
    price=None,
    amount_sats: int = 0,
    error: str | None = None,
) -> None:
    session.add(
        TradeLogEntry(
            user_id=user_id,
            account_id=position.account_id,
            trade_id=position.trade_id,
            action=action,
            side=position.side,
            quantity_usd=position.quantity_usd,
            price=price,
            amount_sats=amount_sats,
            status=status,
            error=error,
        )
    )


class PositionStore:
    """Each method is one transaction on one position; all return plain values."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def load(self, position_id: int) -> GuardedPosition | None:
        with self.database.session() as session:
            return load_guarded(session, position_id)

    def refresh_from_trade(self, position_id: int, trade: Trade) -> bool:
        """Store the exchange's current values of the trade; return whether the trigger moved."""
        with self.database.session() as session:
            return apply_trade(session.get(Position, position_id), trade)

    def mark_closed(self, position_id: int, reason: CloseReason | str) -> None:
        with self.database.session() as session:
            position = session.get(Position, position_id)
            if position.status == PositionStatus.RUNNING.value:
                close_position(position, reason, None)

    def mark_invalid(self, position_id: int, error: InvalidExchangeDataError) -> None:
        with self.database.session() as session:
            mark_invalid(session.get(Position, position_id), error)

    def rearm(self, position_id: int, *, count_action: bool) -> None:
        """Move the version so the engine arms a fresh trigger; count the attempt if asked."""
        with self.database.session() as session:
            position = session.get(Position, position_id)
            increment(position, "guard_version", 1)
            if count_action:
                increment(position, "guard_actions", 1)

    def record_margin_added(
        self,
        position_id: int,
        user_id: int,
        trade: Trade,
        amount_sats: int,
        price,
        ledger_key: str | None = None,
        ledger_details: dict | None = None,
    ) -> None:
        """Store the added margin; with ``ledger_key``, confirm that ledger row in the same
        transaction."""
        with self.database.session() as session:
            if ledger_key is not None:
                confirm_in_session(session, ledger_key, ledger_details)
            position = session.get(Position, position_id)
            apply_trade(position, trade)
            increment(position, "guard_version", 1)
            increment(position, "guard_actions", 1)
            increment(position, "sats_added", amount_sats)
            log_trade_action(
                session,
                user_id=user_id,
                position=position,
                action="add_margin",
                status="confirmed",
                price=price,
                amount_sats=amount_sats,
            )

    def record_closed_by_guard(
        self,
        position_id: int,
        user_id: int,
        price,
        ledger_key: str | None = None,
        ledger_details: dict | None = None,
    ) -> None:
        """Store the close; with ``ledger_key``, confirm that ledger row in the same transaction."""
        with self.database.session() as session:
            if ledger_key is not None:
                confirm_in_session(session, ledger_key, ledger_details)
            position = session.get(Position, position_id)
            close_position(position, CloseReason.CLOSED, None)
            increment(position, "guard_actions", 1)
            log_trade_action(
                session,
                user_id=user_id,
                position=position,
                action="close_position",
                status="confirmed",
                price=price,
            )

    def record_failure(
        self, position_id: int, action: str, error: str, pause: bool = False
    ) -> None:
        """Count a failed attempt, re-arm with a new version, and log it for the user.

        With ``pause`` the guard stays idle on this position until the next account check,
        because acting again at once could not succeed (no sats to add). Such an attempt sent
        nothing, so it does not count toward ``max_actions``.
        """
        with self.database.session() as session:
            position = session.get(Position, position_id)
            increment(position, "guard_version", 1)
            if pause:
                position.guard_paused_reason = error
            else:
                increment(position, "guard_actions", 1)
            log_trade_action(
                session,
                user_id=session.get(ExchangeAccount, position.account_id).user_id,
                position=position,
                action=action,
                status="failed",
                error=error,
            )
