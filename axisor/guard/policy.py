"""The guard's decisions, as pure functions of a trade, a configuration and a price."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from axisor.errors import InvalidExchangeDataError
from axisor.exchange import math as lnm
from axisor.exchange.models import Side, Trade
from axisor.guard.config import AddMarginMode, GuardConfig

PRICE_TICK_USD = Decimal("0.5")


def trigger_price(
    side: Side, entry_price: Decimal, liquidation_price: Decimal | None, threshold: Decimal
) -> Decimal | None:
    """Return the price at which the guard acts, on the 0.5 USD tick, or None without liquidation.

    The tick is rounded towards the entry price, so the guard never acts later than the exact
    threshold: up for a long, down for a short.
    """
    if liquidation_price is None:
        return None
    exact = entry_price + threshold * (liquidation_price - entry_price)
    rounding = ROUND_CEILING if side is Side.BUY else ROUND_FLOOR
    ticks = (exact / PRICE_TICK_USD).to_integral_value(rounding=rounding)
    return ticks * PRICE_TICK_USD


def is_crossed(side: Side, price: Decimal, trigger: Decimal | None) -> bool:
    """Return whether ``price`` is at or beyond the trigger, on the side of the liquidation."""
    if trigger is None:
        return False
    return price <= trigger if side is Side.BUY else price >= trigger


def validate_trade(trade: Trade) -> None:
    """Raise InvalidExchangeDataError for a trade whose reported values cannot be true."""
    if trade.quantity_usd <= 0 or trade.margin_sats <= 0 or trade.entry_price <= 0:
        raise InvalidExchangeDataError(
            f"trade {trade.id}: quantity {trade.quantity_usd} USD, margin {trade.margin_sats} "
            f"sats and entry price {trade.entry_price} must all be positive"
        )
    liquidation = trade.liquidation_price
    if liquidation is None:
        if trade.side is Side.BUY:
            raise InvalidExchangeDataError(
                f"trade {trade.id}: a long must have a liquidation price"
            )
        return
    if liquidation <= 0:
        raise InvalidExchangeDataError(
            f"trade {trade.id}: liquidation price {liquidation} is not positive"
        )
    wrong_side = (
        liquidation >= trade.entry_price
        if trade.side is Side.BUY
        else (liquidation <= trade.entry_price)
    )
    if wrong_side:
        where = "below" if trade.side is Side.BUY else "above"
        raise InvalidExchangeDataError(
            f"trade {trade.id}: liquidation price {liquidation} of a {trade.side.value} trade "
            f"must be {where} its entry price {trade.entry_price}"
        )


def distance_bps(price: Decimal, liquidation_price: Decimal | None) -> int:
    """Return the distance from the price to the liquidation price in basis points of the price."""
    if liquidation_price is None:
        return 10_000
    return int(abs(price - liquidation_price) * 10_000 / price)


@dataclass(frozen=True, slots=True)
class MarginPlan:
    """Margin to add now. ``shortfall_sats`` is the part of the need that the limits kept back."""

    amount_sats: int
    needed_sats: int
    shortfall_sats: int
    limited_by: str | None  # "balance", "budget" or "leverage", when the amount was capped


def plan_add_margin(
    config: GuardConfig,
    trade: Trade,
    price: Decimal,
    free_balance_sats: int,
    sats_added: int,
) -> MarginPlan:
    """Return the sats to add to ``trade`` at ``price``, within balance, budget and leverage 1."""
    needed = _needed_sats(config, trade, price)
    room = lnm.max_margin_sats(trade.quantity_usd, trade.entry_price) - trade.margin_sats
    budget = None if config.budget_sats is None else config.budget_sats - sats_added
    caps = {"balance": free_balance_sats, "leverage": room}
    if budget is not None:
        caps["budget"] = budget
    limited_by = min(caps, key=lambda name: caps[name])
    amount = max(0, min(needed, caps[limited_by]))
    if amount == needed:
        return MarginPlan(amount, needed, 0, None)
    return MarginPlan(amount, needed, needed - amount, limited_by)


def _needed_sats(config: GuardConfig, trade: Trade, price: Decimal) -> int:
    if config.add_margin_mode is AddMarginMode.PERCENT:
        percent_sats = trade.margin_sats * config.add_margin_percent / 100
        return max(1, int(percent_sats.to_integral_value(rounding=ROUND_CEILING)))
    return _restore_sats(config, trade, price)


def _restore_sats(config: GuardConfig, trade: Trade, price: Decimal) -> int:
    """Return the sats after which the price has used only ``restore_fraction`` of the distance
    from entry to liquidation."""
    used_usd = (
        (trade.entry_price - price) if trade.side is Side.BUY else (price - trade.entry_price)
    )
    if used_usd <= 0:
        return 1
    sign = -1 if trade.side is Side.BUY else 1
    target = trade.entry_price + sign * used_usd / config.restore_fraction
    max_margin = lnm.max_margin_sats(trade.quantity_usd, trade.entry_price)
    if _beyond_leverage_one(trade, target, max_margin):
        # One sat more than leverage 1 allows, so the plan reports the leverage limit.
        return max(1, max_margin - trade.margin_sats + 1)
    margin = lnm.margin_for_liquidation(trade.side, trade.quantity_usd, trade.entry_price, target)
    return max(1, margin - trade.margin_sats)


def _beyond_leverage_one(trade: Trade, target: Decimal, max_margin_sats: int) -> bool:
    """Return whether even leverage 1 leaves the liquidation price short of ``target``."""
    floor = lnm.liquidation_price(
        trade.side, trade.quantity_usd, trade.entry_price, max_margin_sats
    )
    if floor is None:
        return False  # a short at leverage 1 cannot be liquidated
    return target <= floor if trade.side is Side.BUY else target >= floor
