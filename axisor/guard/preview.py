"""What the guard or a stop would do to a trade, computed before anything is sent.

The figures follow LN Markets' rules for isolated trades, as ``axisor.exchange.paper`` applies
them: prices move on the 0.5 USD tick, adding margin costs no fee, and a close pays the closing
fee at the fee tier's rate and never loses more than the margin. Prices are USD per BTC.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from axisor.errors import InvalidConfigError
from axisor.exchange import math as lnm
from axisor.exchange.models import Side, Trade, TradeStatus
from axisor.exchange.registry import capabilities_for
from axisor.guard.config import GuardAction, GuardConfig, check_supported
from axisor.guard.policy import plan_add_margin, trigger_price

_PERCENT_PLACES = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class GuardPreview:
    """The guard's action on one trade at ``action_price``: the trigger, or the given price.

    ``trigger_price`` and ``action_price`` are None for a trade without a liquidation price (a
    1x short), which the guard never acts on. Distances are from ``action_price`` to the
    liquidation price before and after the action, in USD and in percent of ``action_price``
    rounded down to 0.01. They are None without a liquidation price, and the distance after is
    None once the action closes the trade.
    """

    side: Side
    quantity_usd: int
    entry_price: Decimal
    margin_sats: int
    action: GuardAction
    liquidation_price: Decimal | None
    trigger_price: Decimal | None
    action_price: Decimal | None
    margin_added_sats: int
    needed_sats: int
    shortfall_sats: int
    limited_by: str | None
    fee_sats: int
    pnl_sats: int | None
    closes_trade: bool
    new_margin_sats: int | None
    new_liquidation_price: Decimal | None
    distance_before_usd: Decimal | None
    distance_before_percent: Decimal | None
    distance_after_usd: Decimal | None
    distance_after_percent: Decimal | None

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON values: Decimals as strings, enums as their values."""
        return _json_values(asdict(self))


@dataclass(frozen=True, slots=True)
class StopPreview:
    """A stop loss or take profit filled at ``price``, on the tick.

    ``pnl_sats`` is the P&L at that price, never below minus the margin, and
    ``net_pnl_sats`` subtracts the closing fee. ``net_pnl_percent`` is the net P&L in percent
    of the margin, rounded toward zero to 0.01.
    """

    kind: str  # "stop_loss" or "take_profit"
    side: Side
    quantity_usd: int
    entry_price: Decimal
    margin_sats: int
    price: Decimal
    liquidation_price: Decimal | None
    pnl_sats: int
    closing_fee_sats: int
    net_pnl_sats: int
    net_pnl_percent: Decimal

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON values: Decimals as strings, enums as their values."""
        return _json_values(asdict(self))


@dataclass(frozen=True, slots=True)
class _Outcome:
    margin_added_sats: int = 0
    needed_sats: int = 0
    shortfall_sats: int = 0
    limited_by: str | None = None
    fee_sats: int = 0
    pnl_sats: int | None = None
    closes_trade: bool = False


def preview_guard(
    side: Side | str,
    quantity_usd: int,
    entry_price: Decimal,
    margin_sats: int,
    config: GuardConfig,
    free_balance_sats: int,
    price: Decimal | None = None,
    fee_tier: int = 1,
    sats_added: int = 0,
) -> GuardPreview:
    """Return what the guard would do to the trade when it acts.

    ``price`` is where it acts, rounded to the tick. None means the trigger price.
    ``sats_added`` is what the guard already added to this trade, which counts against
    ``config.budget_sats``. Raises InvalidConfigError naming the argument for an invalid input,
    an action LN Markets cannot carry out, or a price at or beyond the liquidation price.
    """
    check_supported(config, capabilities_for("lnmarkets"))
    trade = _trade(Side(side), quantity_usd, entry_price, margin_sats)
    trigger = trigger_price(
        trade.side, entry_price, trade.liquidation_price, config.margin_threshold
    )
    action_price = _action_price(trade, price, trigger)
    outcome = _Outcome()
    if action_price is not None:
        outcome = _outcome(trade, config, action_price, free_balance_sats, fee_tier, sats_added)
    return _guard_preview(trade, config.action, trigger, action_price, outcome)


def preview_stop(
    side: Side | str,
    quantity_usd: int,
    entry_price: Decimal,
    margin_sats: int,
    price: Decimal,
    fee_tier: int = 1,
) -> StopPreview:
    """Return the P&L of closing the trade by a stop loss or take profit at ``price``.

    ``price`` is rounded to the tick, as the venue rounds a stop level. Raises
    InvalidConfigError naming ``price`` when it is at or beyond the liquidation price, because
    the trade would be liquidated first.
    """
    trade = _trade(Side(side), quantity_usd, entry_price, margin_sats)
    level = lnm.quantize_price(price)
    _require_before_liquidation(trade, level)
    pnl = max(lnm.pnl_sats(trade.side, quantity_usd, entry_price, level), -margin_sats)
    fee_sats = lnm.trading_fee_sats(quantity_usd, level, fee_tier)
    gaining = level > entry_price if trade.side is Side.BUY else level < entry_price
    return StopPreview(
        kind="take_profit" if gaining else "stop_loss",
        side=trade.side,
        quantity_usd=quantity_usd,
        entry_price=entry_price,
        margin_sats=margin_sats,
        price=level,
        liquidation_price=trade.liquidation_price,
        pnl_sats=pnl,
        closing_fee_sats=fee_sats,
        net_pnl_sats=pnl - fee_sats,
        net_pnl_percent=_percent(Decimal(pnl - fee_sats), Decimal(margin_sats)),
    )


def _trade(side: Side, quantity_usd: int, entry_price: Decimal, margin_sats: int) -> Trade:
    """Return the trade as the venue would hold it; lnm raises for invalid inputs."""
    return Trade(
        id="preview",
        side=side,
        quantity_usd=quantity_usd,
        entry_price=entry_price,
        margin_sats=margin_sats,
        leverage=lnm.leverage_for(quantity_usd, margin_sats, entry_price),
        liquidation_price=lnm.liquidation_price(side, quantity_usd, entry_price, margin_sats),
        maintenance_margin_sats=0,
        status=TradeStatus.RUNNING,
    )


def _action_price(trade: Trade, price: Decimal | None, trigger: Decimal | None) -> Decimal | None:
    if trigger is None:
        return None
    if price is None:
        return trigger
    level = lnm.quantize_price(price)
    _require_before_liquidation(trade, level)
    return level


def _require_before_liquidation(trade: Trade, price: Decimal) -> None:
    liquidation = trade.liquidation_price
    if liquidation is None:
        return
    beyond = price <= liquidation if trade.side is Side.BUY else price >= liquidation
    if beyond:
        where = "above" if trade.side is Side.BUY else "below"
        raise InvalidConfigError(
            "price",
            f"{price} USD is at or beyond the liquidation price {liquidation} USD, so the "
            f"trade would be liquidated first; use a price {where} {liquidation} USD",
        )


def _outcome(
    trade: Trade,
    config: GuardConfig,
    price: Decimal,
    free_balance_sats: int,
    fee_tier: int,
    sats_added: int,
) -> _Outcome:
    if config.action is GuardAction.ADD_MARGIN:
        plan = plan_add_margin(config, trade, price, free_balance_sats, sats_added)
        return _Outcome(plan.amount_sats, plan.needed_sats, plan.shortfall_sats, plan.limited_by)
    if config.action is GuardAction.CLOSE_POSITION:
        pnl = lnm.pnl_sats(trade.side, trade.quantity_usd, trade.entry_price, price)
        fee_sats = lnm.trading_fee_sats(trade.quantity_usd, price, fee_tier)
        return _Outcome(fee_sats=fee_sats, pnl_sats=max(pnl, -trade.margin_sats), closes_trade=True)
    return _Outcome()


def _guard_preview(
    trade: Trade,
    action: GuardAction,
    trigger: Decimal | None,
    action_price: Decimal | None,
    outcome: _Outcome,
) -> GuardPreview:
    new_margin = None if outcome.closes_trade else trade.margin_sats + outcome.margin_added_sats
    new_liquidation = None
    if new_margin is not None:
        new_liquidation = lnm.liquidation_price(
            trade.side, trade.quantity_usd, trade.entry_price, new_margin
        )
    before_usd, before_percent = _distance(action_price, trade.liquidation_price)
    after_usd, after_percent = _distance(action_price, new_liquidation)
    return GuardPreview(
        side=trade.side,
        quantity_usd=trade.quantity_usd,
        entry_price=trade.entry_price,
        margin_sats=trade.margin_sats,
        action=action,
        liquidation_price=trade.liquidation_price,
        trigger_price=trigger,
        action_price=action_price,
        margin_added_sats=outcome.margin_added_sats,
        needed_sats=outcome.needed_sats,
        shortfall_sats=outcome.shortfall_sats,
        limited_by=outcome.limited_by,
        fee_sats=outcome.fee_sats,
        pnl_sats=outcome.pnl_sats,
        closes_trade=outcome.closes_trade,
        new_margin_sats=new_margin,
        new_liquidation_price=new_liquidation,
        distance_before_usd=before_usd,
        distance_before_percent=before_percent,
        distance_after_usd=after_usd,
        distance_after_percent=after_percent,
    )


def _distance(
    price: Decimal | None, liquidation: Decimal | None
) -> tuple[Decimal | None, Decimal | None]:
    if price is None or liquidation is None:
        return None, None
    distance_usd = abs(price - liquidation)
    return distance_usd, _percent(distance_usd, price)


def _percent(part: Decimal, whole: Decimal) -> Decimal:
    return (part * 100 / whole).quantize(_PERCENT_PLACES, rounding=ROUND_DOWN)


def _json_values(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: _json_value(value) for name, value in fields.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    return value
