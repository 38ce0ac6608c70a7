"""Configurations of trading automations, validated field by field.

Prices are USD per BTC with at most 2 decimal places, percentages are Decimal, margins are int
sats and quantities are int USD contracts. Decimal fields take a string or an int, never a
float, so the stored value is exactly the one the user typed. ``parse_automation_config``
raises InvalidConfigError naming the first invalid field.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from axisor.errors import InvalidConfigError
from axisor.exchange.models import Capabilities, Side

MAX_PRICE_USD = Decimal(10) ** 16
MAX_COOLDOWN_S = 30 * 24 * 3600


class AutomationType(enum.StrEnum):
    TAKE_PROFIT = "take_profit"
    STOP_LOSS = "stop_loss"
    AUTO_ENTRY = "auto_entry"


class TriggerOn(enum.StrEnum):
    """The venue price that a trigger compares with its level."""

    LAST = "last"  # last traded price
    INDEX = "index"  # index price of the underlying
    MARK = "mark"  # mark price, on venues that publish one


class TakeProfitAction(enum.StrEnum):
    CLOSE = "close"  # close the whole trade
    CASH_IN = "cash_in"  # take the positive P&L and keep the trade running


class StopPlacement(enum.StrEnum):
    EXCHANGE = "exchange"  # the venue keeps the stop and fills it
    ENGINE = "engine"  # the platform watches the price and closes the trade


class Crossing(enum.StrEnum):
    ABOVE = "above"  # the price rises to or through the level
    BELOW = "below"  # the price falls to or through the level


# Every Ticker carries the last and the index price, so the engine can trigger on them on any
# venue. A mark price needs a venue that publishes one.
ENGINE_TRIGGER_PRICES = frozenset({TriggerOn.LAST, TriggerOn.INDEX})


def _reject_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("a float is not exact; pass the number as a string such as '60000.5'")
    return value


def _parse_side(value: Any) -> Any:
    return Side.parse(value) if isinstance(value, str) else value


PriceUsd = Annotated[
    Decimal, BeforeValidator(_reject_float), Field(gt=0, lt=MAX_PRICE_USD, decimal_places=2)
]
PnlPercent = Annotated[
    Decimal, BeforeValidator(_reject_float), Field(gt=0, le=1_000_000, decimal_places=6)
]
TrailingPercent = Annotated[
    Decimal, BeforeValidator(_reject_float), Field(gt=0, lt=100, decimal_places=6)
]
Leverage = Annotated[Decimal, BeforeValidator(_reject_float), Field(ge=1, le=100, decimal_places=6)]
QuantityUsd = Annotated[int, Field(strict=True, ge=1)]
MarginSats = Annotated[int, Field(strict=True, ge=1)]
CooldownS = Annotated[int, Field(strict=True, ge=0, le=MAX_COOLDOWN_S)]


class _AutomationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trigger_on: TriggerOn = TriggerOn.LAST


class TakeProfitConfig(_AutomationConfig):
    """Close the trade, or cash in its P&L, at a price or at a P&L in percent of the margin."""

    action: TakeProfitAction = TakeProfitAction.CLOSE
    price_usd: PriceUsd | None = None
    pnl_percent: PnlPercent | None = None

    @model_validator(mode="after")
    def _one_trigger(self) -> TakeProfitConfig:
        _require_exactly_one(self, ("price_usd", "pnl_percent"))
        return self


class StopLossConfig(_AutomationConfig):
    """Close the trade at a fixed price, or at a distance that trails the best price.

    ``placement`` None lets ``stop_placement`` choose: the venue when it can keep this stop,
    else the engine.
    """

    price_usd: PriceUsd | None = None
    trailing_distance_usd: PriceUsd | None = None
    trailing_percent: TrailingPercent | None = None
    placement: StopPlacement | None = None

    @model_validator(mode="after")
    def _one_level(self) -> StopLossConfig:
        _require_exactly_one(self, ("price_usd", "trailing_distance_usd", "trailing_percent"))
        return self

    @property
    def trailing(self) -> bool:
        return self.price_usd is None


class AutoEntryConfig(_AutomationConfig):
    """Open a market trade when the price crosses ``price_usd`` in the ``trigger`` direction.

    ``stoploss_price`` and ``takeprofit_price`` are checked against ``price_usd``, the expected
    entry: below and above it for a long, the other way round for a short.
    """

    side: Annotated[Side, BeforeValidator(_parse_side)]
    quantity_usd: QuantityUsd | None = None
    margin_sats: MarginSats | None = None
    leverage: Leverage
    trigger: Crossing
    price_usd: PriceUsd
    stoploss_price: PriceUsd | None = None
    takeprofit_price: PriceUsd | None = None
    cooldown_s: CooldownS | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AutoEntryConfig:
        _require_exactly_one(self, ("quantity_usd", "margin_sats"))
        _require_level_side(self, "stoploss_price", below=self.side is Side.BUY)
        _require_level_side(self, "takeprofit_price", below=self.side is Side.SELL)
        return self


AutomationConfig = TakeProfitConfig | StopLossConfig | AutoEntryConfig

CONFIG_MODELS: dict[AutomationType, type[_AutomationConfig]] = {
    AutomationType.TAKE_PROFIT: TakeProfitConfig,
    AutomationType.STOP_LOSS: StopLossConfig,
    AutomationType.AUTO_ENTRY: AutoEntryConfig,
}

_PRICE_HINT = "use a positive price in USD per BTC with at most 2 decimals, as a string"
_HINTS = {
    "trigger_on": "use one of: last, index, mark",
    "action": "use 'close' or 'cash_in'",
    "price_usd": _PRICE_HINT,
    "pnl_percent": "use a percentage of the margin above 0 and at most 1000000, as a string",
    "trailing_distance_usd": "use a positive distance in USD with at most 2 decimals",
    "trailing_percent": "use a percentage above 0 and below 100, as a string such as '2.5'",
    "placement": "use 'exchange' or 'engine', or leave it out to let the platform choose",
    "side": "use 'buy' (long) or 'sell' (short)",
    "quantity_usd": "use a whole number of USD contracts, 1 or more",
    "margin_sats": "use a whole number of sats, 1 or more",
    "leverage": "use a leverage from 1 to 100, as a string such as '10'",
    "trigger": "use 'above' or 'below'",
    "stoploss_price": _PRICE_HINT,
    "takeprofit_price": _PRICE_HINT,
    "cooldown_s": f"use a whole number of seconds from 0 to {MAX_COOLDOWN_S}, or leave it out",
}


def parse_automation_type(value: Any) -> AutomationType:
    """Return the AutomationType named by ``value``; InvalidConfigError names ``type``."""
    try:
        return AutomationType(value)
    except ValueError:
        known = ", ".join(kind.value for kind in AutomationType)
        raise InvalidConfigError(
            "type", f"unknown automation type {value!r}; use one of: {known}"
        ) from None


def parse_automation_config(automation_type: AutomationType | str, raw: Any) -> AutomationConfig:
    """Validate ``raw`` as the configuration of ``automation_type``.

    Raises InvalidConfigError naming ``type`` for an unknown type, else the first invalid field.
    """
    model = CONFIG_MODELS[parse_automation_type(automation_type)]
    if not isinstance(raw, dict):
        raise InvalidConfigError("config", f"expected an object of settings, got {raw!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _to_config_error(exc, raw, model) from exc


def stop_placement(config: StopLossConfig, capabilities: Capabilities) -> StopPlacement:
    """Return where the stop runs: the configured placement, else the venue when it can."""
    if config.placement is not None:
        return config.placement
    if _venue_can_hold(config, capabilities):
        return StopPlacement.EXCHANGE
    return StopPlacement.ENGINE


def check_supported(
    config: AutomationConfig,
    capabilities: Capabilities,
    trigger_prices: frozenset[TriggerOn] = ENGINE_TRIGGER_PRICES,
) -> None:
    """Raise InvalidConfigError when the venue cannot carry out ``config``.

    ``trigger_prices`` are the prices the engine receives from this venue.
    """
    if config.trigger_on not in trigger_prices:
        known = ", ".join(sorted(price.value for price in trigger_prices))
        raise InvalidConfigError(
            "trigger_on",
            f"{config.trigger_on.value!r} prices are not available on {capabilities.name}; "
            f"use one of: {known}",
        )
    if isinstance(config, StopLossConfig):
        _check_stop_placement(config, capabilities)
    if isinstance(config, AutoEntryConfig):
        _check_entry_size(config, capabilities)


def _venue_can_hold(config: StopLossConfig, capabilities: Capabilities) -> bool:
    """Return whether the venue can keep this stop itself.

    A venue-held stop fills on the venue's own price, so only a stop on the last price goes to
    the venue. A percentage trail exists only in the engine, and a USD trail needs a venue with
    trailing stops.
    """
    if not capabilities.exchange_stoploss or config.trigger_on is not TriggerOn.LAST:
        return False
    if config.trailing_percent is not None:
        return False
    return config.trailing_distance_usd is None or capabilities.trailing_stoploss


def _check_stop_placement(config: StopLossConfig, capabilities: Capabilities) -> None:
    if config.placement is StopPlacement.EXCHANGE and not _venue_can_hold(config, capabilities):
        raise InvalidConfigError(
            "placement",
            f"'exchange' is not possible on {capabilities.name} for this stop: the venue holds "
            "only stops on the last price, with a fixed level or a USD trail it supports. "
            "Use placement 'engine' or leave it out",
        )


def _check_entry_size(config: AutoEntryConfig, capabilities: Capabilities) -> None:
    low, high = capabilities.min_leverage, capabilities.max_leverage
    if not low <= config.leverage <= high:
        raise InvalidConfigError(
            "leverage",
            f"{config.leverage} is outside {low}..{high} on {capabilities.name}; "
            "use a leverage in that range",
        )
    limit = capabilities.max_quantity_usd
    if config.quantity_usd is not None and config.quantity_usd > limit:
        raise InvalidConfigError(
            "quantity_usd",
            f"{config.quantity_usd} USD is above the {limit} USD a trade may hold on "
            f"{capabilities.name}; use a smaller quantity",
        )


def _require_exactly_one(config: BaseModel, fields: tuple[str, ...]) -> None:
    set_fields = [name for name in fields if getattr(config, name) is not None]
    if len(set_fields) == 1:
        return
    choices = " or ".join(fields)
    if not set_fields:
        raise InvalidConfigError(fields[0], f"missing; set exactly one of {choices}")
    raise InvalidConfigError(
        set_fields[1], f"set exactly one of {choices}, but {' and '.join(set_fields)} are set"
    )


def _require_level_side(config: AutoEntryConfig, field: str, below: bool) -> None:
    level = getattr(config, field)
    if level is None:
        return
    on_its_side = level < config.price_usd if below else level > config.price_usd
    if on_its_side:
        return
    side_name = "long" if config.side is Side.BUY else "short"
    where = "below" if below else "above"
    raise InvalidConfigError(
        field,
        f"{level} USD must be {where} the entry price_usd {config.price_usd} USD of a "
        f"{side_name}; move it {where} the entry or leave it out",
    )


def _to_config_error(
    exc: ValidationError, raw: dict[str, Any], model: type[BaseModel]
) -> InvalidConfigError:
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, InvalidConfigError):
        return cause

    field = ".".join(str(part) for part in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        known = ", ".join(model.model_fields)
        return InvalidConfigError(field, f"unknown setting; known settings: {known}")
    hint = _HINTS.get(field, "check the value")
    if error["type"] == "missing":
        return InvalidConfigError(field, f"missing; {hint}")
    message = error["msg"].removeprefix("Value error, ")
    return InvalidConfigError(field, f"invalid value {raw.get(field)!r} ({message}); {hint}")
