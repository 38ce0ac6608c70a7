"""LN Markets isolated inverse-futures math: quantities in USD contracts, money in int sats.

A quantity is a number of 1 USD contracts and a price is USD per BTC. Every function computes
in exact rational arithmetic (``fractions.Fraction``) and rounds once, at the end:

- Margin derived from quantity, leverage and price rounds up to whole sats.
- Trading fees round down to whole sats.
- P&L rounds down (toward minus infinity) to whole sats.
- A liquidation price rounds to the nearest whole USD, halves up, which reproduces the
  liquidation prices LN Markets publishes (54,545 and 99,010 in its examples).
- A traded price rounds to the nearest 0.5 USD tick (``quantize_price``).

The formulas are LN Markets' rules for isolated trades, with Q = quantity * 1e8 (the notional
in sats times the price). tests/test_exchange_math.py checks them against the figures of LN
Markets' published examples.

    margin            = Q / (price * leverage)
    long liquidation  = 1 / (1/entry + margin/Q)
    short liquidation = 1 / (1/entry - margin/Q)      no finite price when margin >= Q/entry
    fee               = Q / price * tier rate
    long P&L          = Q * (1/entry - 1/price)
    short P&L         = Q * (1/price - 1/entry)

Invalid inputs raise ``InvalidConfigError`` naming the argument.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction
from math import ceil, floor

from axisor.errors import InvalidConfigError
from axisor.exchange.models import Side

SATS_PER_BTC = 100_000_000
MIN_LEVERAGE = 1
MAX_LEVERAGE = 100
PRICE_TICK_USD = Decimal("0.5")

# Trading fee rate by LN Markets fee tier.
FEE_RATES: dict[int, Decimal] = {
    1: Decimal("0.001"),
    2: Decimal("0.0008"),
    3: Decimal("0.0007"),
    4: Decimal("0.0006"),
}

# Significant digits of an entry price moved by a cash-in. At 20 digits the P&L error that the
# rounding causes stays far below one sat for any quantity up to 500,000 USD.
_ENTRY_PRICE_DIGITS = 20
_LEVERAGE_PLACES = 6
_HALF = Fraction(1, 2)


def quantize_price(price: Decimal, tick: Decimal = PRICE_TICK_USD) -> Decimal:
    """Round ``price`` (USD per BTC) to the nearest multiple of ``tick``, halves up."""
    exact_price = _positive(price, "price")
    exact_tick = _positive(tick, "tick")
    return Decimal(_round_half_up(exact_price / exact_tick)) * tick


def margin_for(quantity_usd: int, leverage: Decimal, price: Decimal) -> int:
    """Return the margin in sats of ``quantity_usd`` contracts at ``leverage``, rounded up."""
    notional = _notional(quantity_usd)
    exact_leverage = _leverage(leverage)
    exact_price = _positive(price, "price")
    return ceil(notional / (exact_price * exact_leverage))


def leverage_for(quantity_usd: int, margin_sats: int, price: Decimal) -> Decimal:
    """Return the leverage of ``margin_sats`` behind ``quantity_usd``, to 6 places, halves up."""
    notional = _notional(quantity_usd)
    margin = _margin(margin_sats)
    exact_price = _positive(price, "price")
    return _to_places(notional / (exact_price * margin), _LEVERAGE_PLACES)


def max_margin_sats(quantity_usd: int, entry_price: Decimal) -> int:
    """Return the margin at leverage 1, the max margin of an isolated trade (rounded up)."""
    return margin_for(quantity_usd, Decimal(MIN_LEVERAGE), entry_price)


def liquidation_price(
    side: Side, quantity_usd: int, entry_price: Decimal, margin_sats: int
) -> Decimal | None:
    """Return the liquidation price in whole USD (nearest, halves up).

    Returns None for a short whose margin is at least Q/entry (leverage 1 or less), because its
    loss can never reach the margin.
    """
    exact = _exact_liquidation(
        Side(side),
        _notional(quantity_usd),
        _positive(entry_price, "entry_price"),
        _margin(margin_sats),
    )
    if exact is None:
        return None
    return Decimal(_round_half_up(exact))


def pnl_sats(side: Side, quantity_usd: int, entry_price: Decimal, price: Decimal) -> int:
    """Return the P&L in sats of a trade closed at ``price``, rounded toward minus infinity."""
    notional = _notional(quantity_usd)
    entry = _positive(entry_price, "entry_price")
    exit_price = _positive(price, "price")
    if Side(side) is Side.BUY:
        return floor(notional * (1 / entry - 1 / exit_price))
    return floor(notional * (1 / exit_price - 1 / entry))


def trading_fee_sats(quantity_usd: int, price: Decimal, tier: int = 1) -> int:
    """Return the fee in sats to open or close ``quantity_usd`` at ``price``, rounded down."""
    notional = _notional(quantity_usd)
    exact_price = _positive(price, "price")
    rate = Fraction(_fee_rate(tier))
    return floor(notional * rate / exact_price)


def maintenance_margin_sats(
    quantity_usd: int, entry_price: Decimal, liquidation_price: Decimal | None
) -> int:
    """Return the maintenance margin reserved at entry, in sats.

    It is the opening fee at ``entry_price`` plus the closing fee at ``liquidation_price``,
    both at the tier-1 rate and each rounded down. A trade without a liquidation price reserves
    no closing fee.
    """
    opening_fee = trading_fee_sats(quantity_usd, entry_price, 1)
    if liquidation_price is None:
        return opening_fee
    return opening_fee + trading_fee_sats(quantity_usd, liquidation_price, 1)


def margin_for_liquidation(
    side: Side, quantity_usd: int, entry_price: Decimal, target_liquidation: Decimal
) -> int:
    """Return the smallest margin in sats whose liquidation price is at or beyond the target.

    Beyond means at or below ``target_liquidation`` for a long and at or above it (or no
    liquidation price at all) for a short, with the liquidation price rounded as
    ``liquidation_price`` rounds it. Raises InvalidConfigError naming ``target_liquidation``
    when the target is on the wrong side of the entry price or needs more than the 1x margin.
    """
    notional = _notional(quantity_usd)
    _positive(entry_price, "entry_price")
    _to_fraction(target_liquidation, "target_liquidation")
    if Side(side) is Side.BUY:
        margin_sats = _long_margin_for_target(notional, entry_price, target_liquidation)
    else:
        margin_sats = _short_margin_for_target(notional, entry_price, target_liquidation)
    _require_within_max_margin(quantity_usd, entry_price, target_liquidation, margin_sats)
    return margin_sats


def cash_in_effect(
    side: Side,
    quantity_usd: int,
    entry_price: Decimal,
    margin_sats: int,
    price: Decimal,
    amount_sats: int,
) -> tuple[Decimal, int]:
    """Return ``(new_entry_price, new_margin_sats)`` after cashing in ``amount_sats`` at ``price``.

    The amount comes from the positive P&L first. Taking P&L moves the entry price so that
    ``pnl_sats`` at ``price`` falls by exactly the amount taken. Whatever the P&L cannot cover
    comes from the margin. Raises InvalidConfigError naming ``amount_sats`` when the result
    would leave a leverage above 100, a margin below 1 sat, or a liquidation price at or past
    ``price``. ``max_cash_in_sats`` returns the largest amount that passes.
    """
    side = Side(side)
    amount = _whole(amount_sats, "amount_sats", minimum=1)
    new_entry, new_margin = _apply_cash_in(
        side, quantity_usd, entry_price, _margin(margin_sats), price, amount
    )
    if not _cash_in_allowed(side, quantity_usd, new_entry, new_margin, price):
        limit_sats = max_cash_in_sats(side, quantity_usd, entry_price, margin_sats, price)
        raise InvalidConfigError(
            "amount_sats",
            f"cashing in {amount} sats at {price} USD exceeds the {limit_sats} sats that may be "
            "taken without passing 100x leverage or the liquidation price. "
            f"Request at most {limit_sats} sats",
        )
    return new_entry, new_margin


def max_cash_in_sats(
    side: Side, quantity_usd: int, entry_price: Decimal, margin_sats: int, price: Decimal
) -> int:
    """Return the largest amount in sats that ``cash_in_effect`` accepts at ``price``, or 0."""
    side = Side(side)
    margin = _margin(margin_sats)
    positive_pnl_sats = max(pnl_sats(side, quantity_usd, entry_price, price), 0)

    # Every larger amount is at least as constrained, so a binary search finds the boundary.
    allowed_sats, rejected_sats = 0, positive_pnl_sats + margin
    while rejected_sats - allowed_sats > 1:
        middle_sats = (allowed_sats + rejected_sats) // 2
        new_entry, new_margin = _apply_cash_in(
            side, quantity_usd, entry_price, margin, price, middle_sats
        )
        if _cash_in_allowed(side, quantity_usd, new_entry, new_margin, price):
            allowed_sats = middle_sats
        else:
            rejected_sats = middle_sats
    return allowed_sats


def _apply_cash_in(
    side: Side,
    quantity_usd: int,
    entry_price: Decimal,
    margin_sats: int,
    price: Decimal,
    amount_sats: int,
) -> tuple[Decimal, int]:
    pnl = pnl_sats(side, quantity_usd, entry_price, price)
    from_pnl_sats = min(amount_sats, max(pnl, 0))
    from_margin_sats = amount_sats - from_pnl_sats
    if from_pnl_sats == 0:
        return entry_price, margin_sats - from_margin_sats
    new_entry = _entry_for_pnl(side, quantity_usd, price, pnl - from_pnl_sats)
    return new_entry, margin_sats - from_margin_sats


def _entry_for_pnl(side: Side, quantity_usd: int, price: Decimal, pnl_after_sats: int) -> Decimal:
    """Return the entry price at which the P&L at ``price`` floors to ``pnl_after_sats``.

    The exact P&L lands in the middle of that sat, so rounding the entry price to 20
    significant digits cannot move it across a whole sat. No P&L left means entry = price.
    """
    if pnl_after_sats == 0:
        return price
    notional = _notional(quantity_usd)
    exact_pnl = pnl_after_sats + _HALF
    if side is Side.BUY:
        inverse_entry = 1 / Fraction(price) + exact_pnl / notional
    else:
        inverse_entry = 1 / Fraction(price) - exact_pnl / notional
    return _to_digits(1 / inverse_entry, _ENTRY_PRICE_DIGITS)


def _cash_in_allowed(
    side: Side, quantity_usd: int, entry_price: Decimal, margin_sats: int, price: Decimal
) -> bool:
    if margin_sats < 1:
        return False
    notional = _notional(quantity_usd)
    if margin_sats * Fraction(entry_price) * MAX_LEVERAGE < notional:
        return False
    liquidation = liquidation_price(side, quantity_usd, entry_price, margin_sats)
    if liquidation is None:
        return True
    return liquidation < price if side is Side.BUY else liquidation > price


def _exact_liquidation(
    side: Side, notional: int, entry: Fraction, margin_sats: int
) -> Fraction | None:
    if side is Side.BUY:
        inverse = 1 / entry + Fraction(margin_sats, notional)
    else:
        inverse = 1 / entry - Fraction(margin_sats, notional)
    if inverse <= 0:
        return None
    return 1 / inverse


def _long_margin_for_target(notional: int, entry_price: Decimal, target: Decimal) -> int:
    entry = Fraction(entry_price)
    if not 0 < target < entry_price:
        raise InvalidConfigError(
            "target_liquidation",
            f"{target} USD is not between 0 and the entry price {entry_price} of a long. "
            "Pass a lower positive target",
        )
    # The rounded liquidation is at most floor(target) while the exact one is below
    # floor(target) + 1/2, which needs a margin strictly above this bound.
    bound = floor(target) + _HALF
    return max(floor(notional * (1 / bound - 1 / entry)) + 1, 1)


def _short_margin_for_target(notional: int, entry_price: Decimal, target: Decimal) -> int:
    entry = Fraction(entry_price)
    if target <= entry_price:
        raise InvalidConfigError(
            "target_liquidation",
            f"{target} USD is not above the entry price {entry_price} of a short. "
            "Pass a target above the entry price",
        )
    # The rounded liquidation is at least ceil(target) while the exact one is at least
    # ceil(target) - 1/2, which needs at least this margin.
    bound = ceil(target) - _HALF
    return max(ceil(notional * (1 / entry - 1 / bound)), 1)


def _require_within_max_margin(
    quantity_usd: int, entry_price: Decimal, target: Decimal, margin_sats: int
) -> None:
    limit_sats = max_margin_sats(quantity_usd, entry_price)
    if margin_sats > limit_sats:
        raise InvalidConfigError(
            "target_liquidation",
            f"{target} USD needs {margin_sats} sats of margin, more than the {limit_sats} sats "
            "a trade holds at leverage 1. Pass a target closer to the entry price",
        )


def _fee_rate(tier: int) -> Decimal:
    if isinstance(tier, bool) or tier not in FEE_RATES:
        raise InvalidConfigError("tier", f"{tier!r} is not a fee tier. Pass 1, 2, 3 or 4")
    return FEE_RATES[tier]


def _notional(quantity_usd: int) -> int:
    return _whole(quantity_usd, "quantity_usd", minimum=1) * SATS_PER_BTC


def _margin(margin_sats: int) -> int:
    return _whole(margin_sats, "margin_sats", minimum=1)


def _leverage(leverage: Decimal) -> Fraction:
    exact = _to_fraction(leverage, "leverage")
    if not MIN_LEVERAGE <= exact <= MAX_LEVERAGE:
        raise InvalidConfigError(
            "leverage",
            f"{leverage} is outside {MIN_LEVERAGE}..{MAX_LEVERAGE}. Pass a leverage in that range",
        )
    return exact


def _whole(value: int, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidConfigError(field, f"{value!r} is not an int. Pass a whole number")
    if value < minimum:
        raise InvalidConfigError(field, f"{value} is below {minimum}. Pass at least {minimum}")
    return value


def _positive(value: Decimal, field: str) -> Fraction:
    exact = _to_fraction(value, field)
    if exact <= 0:
        raise InvalidConfigError(field, f"{value} is not positive. Pass a value above 0")
    return exact


def _to_fraction(value: Decimal, field: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise InvalidConfigError(
            field, f"{value!r} is a {type(value).__name__}. Pass a Decimal or an int, never a float"
        )
    if isinstance(value, Decimal) and not value.is_finite():
        raise InvalidConfigError(field, f"{value} is not finite. Pass a finite Decimal")
    return Fraction(value)


def _round_half_up(value: Fraction) -> int:
    return floor(value + _HALF)


def _to_places(value: Fraction, places: int) -> Decimal:
    return Decimal(_round_half_up(value * 10**places)).scaleb(-places)


def _to_digits(value: Fraction, digits: int) -> Decimal:
    with localcontext() as context:
        context.prec = digits
        return Decimal(value.numerator) / Decimal(value.denominator)
