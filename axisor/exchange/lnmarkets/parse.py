"""Lenient parsing of LN Markets JSON, and JSON encoding that keeps Decimals exact.

Field names may be camelCase (v3) or snake_case (v2), sides ``buy``/``b``/``sell``/``s``,
numbers JSON numbers or strings, and timestamps epoch milliseconds or ISO 8601. A field that is
missing or cannot be true raises ``InvalidExchangeDataError`` naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from axisor.errors import InvalidExchangeDataError
from axisor.exchange.math import quantize_price
from axisor.exchange.models import CloseReason, Side, Ticker, Trade, TradeStatus

_MISSING = object()
_HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLC candle with prices in USD per BTC, opening at ``time_ms`` epoch milliseconds."""

    time_ms: int
    open_price: Decimal
    high_price: Decimal
    low_price: Decimal
    close_price: Decimal
    volume: Decimal


@dataclass(frozen=True, slots=True)
class CrossPosition:
    """The cross margin position of an account, with a signed ``quantity_usd`` (short below 0)."""

    id: str
    quantity_usd: int
    entry_price: Decimal | None
    leverage: Decimal
    margin_sats: int
    maintenance_margin_sats: int
    liquidation_price: Decimal | None
    total_pl_sats: int


# JSON


def decode_json(content: bytes | str) -> Any:
    """Decode JSON with every non-integer number as a Decimal, never a float."""
    try:
        return json.loads(content, parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidExchangeDataError(f"the response is not valid JSON: {exc}") from exc


def encode_json(value: Any) -> bytes:
    """Encode ``value`` as compact JSON, writing Decimals as exact JSON numbers."""
    return _encode(value).encode("utf-8")


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, float):
        raise TypeError("floats are not sent to the exchange. Pass an int or a Decimal")
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(key))}:{_encode(item)}" for key, item in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    return json.dumps(value)


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number and cannot be sent as JSON")
    return format(value, "f")


# Fields


def field_value(data: Mapping[str, Any], name: str, default: Any = _MISSING) -> Any:
    """Return the field ``name`` (snake_case) under its snake_case or camelCase spelling."""
    if not isinstance(data, Mapping):
        raise InvalidExchangeDataError(f"expected a JSON object with {name!r}, got {data!r}")
    for spelling in (name, _camel(name)):
        if spelling in data and data[spelling] is not None:
            return data[spelling]
    if default is _MISSING:
        raise InvalidExchangeDataError(f"the field {name!r} is missing from the exchange data")
    return default


def decimal_field(data: Mapping[str, Any], name: str, default: Any = _MISSING) -> Decimal:
    value = field_value(data, name, default)
    if value is default and default is not _MISSING:
        return value
    return to_decimal(value, name)


def sats_field(data: Mapping[str, Any], name: str, default: Any = _MISSING) -> int:
    """Return a whole number of sats, raising for a fraction of a sat."""
    value = decimal_field(data, name, default)
    if value is default and default is not _MISSING:
        return value
    if value != value.to_integral_value():
        raise InvalidExchangeDataError(f"the field {name!r} is {value}, not a whole number")
    return int(value)


def to_decimal(value: Any, name: str) -> Decimal:
    """Convert a JSON number or numeric string to a Decimal."""
    if isinstance(value, bool | float):
        raise InvalidExchangeDataError(f"the field {name!r} is {value!r}, not an exact number")
    try:
        number = Decimal(value) if isinstance(value, int | Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise InvalidExchangeDataError(f"the field {name!r} is {value!r}, not a number") from exc
    if not number.is_finite():
        raise InvalidExchangeDataError(f"the field {name!r} is {value!r}, not a finite number")
    return number


def time_ms_field(data: Mapping[str, Any], name: str, default: Any = _MISSING) -> int:
    value = field_value(data, name, default)
    if value is default and default is not _MISSING:
        return value
    return to_time_ms(value, name)


def to_time_ms(value: Any, name: str) -> int:
    """Convert epoch milliseconds (number or digits) or an ISO 8601 time to epoch milliseconds."""
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidExchangeDataError(
            f"the field {name!r} is {value!r}, neither epoch milliseconds nor an ISO 8601 time"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def side_field(data: Mapping[str, Any]) -> Side:
    value = field_value(data, "side")
    try:
        return Side.parse(value)
    except ValueError as exc:
        raise InvalidExchangeDataError(f"the field 'side' is {value!r}: {exc}") from exc


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _price_or_none(data: Mapping[str, Any], name: str) -> Decimal | None:
    """Return a price level, or None when it is absent or 0 (LN Markets' way to say unset)."""
    value = decimal_field(data, name, None)
    if value is None or value == 0:
        return None
    if value < 0:
        raise InvalidExchangeDataError(f"the field {name!r} is {value}, a negative price")
    return value


def _positive(value: Decimal, name: str) -> Decimal:
    if value <= 0:
        raise InvalidExchangeDataError(f"the field {name!r} is {value}, but must be above 0")
    return value


# Objects


def parse_ticker(data: Mapping[str, Any], now_ms: int) -> Ticker:
    """Parse a ticker, taking bid and ask from the first price bucket when v3 lists them.

    ``now_ms`` is used when the ticker carries no time, which is the case in v3.
    """
    last_price = _positive(decimal_field(data, "last_price"), "last_price")
    index_price = _positive(decimal_field(data, "index"), "index")
    quotes = data
    buckets = field_value(data, "prices", None)
    if buckets:
        quotes = buckets[0]
    bid_price = decimal_field(quotes, "bid_price", last_price)
    ask_price = decimal_field(quotes, "ask_price", last_price)
    time_ms = time_ms_field(data, "time", now_ms)
    return Ticker(last_price, bid_price, ask_price, index_price, time_ms)


def parse_trade(data: Mapping[str, Any]) -> Trade:
    """Parse an isolated trade in any of the spellings LN Markets has used."""
    side = side_field(data)
    leverage = _positive(decimal_field(data, "leverage"), "leverage")
    stoploss_price = _price_or_none(data, "stoploss")
    return Trade(
        id=str(field_value(data, "id")),
        side=side,
        quantity_usd=_positive_int(sats_field(data, "quantity"), "quantity"),
        entry_price=_positive(_entry_price(data), "entry_price"),
        margin_sats=_positive_int(sats_field(data, "margin"), "margin"),
        leverage=leverage,
        liquidation_price=_liquidation_price(data, side, leverage),
        maintenance_margin_sats=_non_negative_sats(data, "maintenance_margin", 0),
        status=_trade_status(data),
        opening_fee_sats=_non_negative_sats(data, "opening_fee", 0),
        closing_fee_sats=_non_negative_sats(data, "closing_fee", 0),
        stoploss_price=stoploss_price,
        takeprofit_price=_price_or_none(data, "takeprofit"),
        trailing_stoploss_usd=_trailing_usd(data, side, stoploss_price),
        exit_price=_price_or_none(data, "exit_price"),
        pnl_sats=sats_field(data, "pl", 0),
        close_reason=_close_reason(data),
        created_ms=_first_time_ms(data, ("created_at", "creation_ts"), 0),
        closed_ms=_first_time_ms(data, ("closed_at", "closed_ts"), None),
    )


def parse_trades(data: Any) -> list[Trade]:
    """Parse a list of trades, bare or wrapped as ``{"data": [...]}`` (paginated v3 lists)."""
    return [parse_trade(item) for item in _items(data)]


def parse_candles(data: Any) -> list[Candle]:
    candles = []
    for item in _items(data):
        candles.append(
            Candle(
                time_ms=time_ms_field(item, "time"),
                open_price=decimal_field(item, "open"),
                high_price=decimal_field(item, "high"),
                low_price=decimal_field(item, "low"),
                close_price=decimal_field(item, "close"),
                volume=decimal_field(item, "volume", Decimal(0)),
            )
        )
    return candles


def parse_cross_position(data: Mapping[str, Any]) -> CrossPosition:
    return CrossPosition(
        id=str(field_value(data, "id")),
        quantity_usd=sats_field(data, "quantity"),
        entry_price=_price_or_none(data, "entry_price"),
        leverage=_positive(decimal_field(data, "leverage"), "leverage"),
        margin_sats=_non_negative_sats(data, "margin"),
        maintenance_margin_sats=_non_negative_sats(data, "maintenance_margin", 0),
        liquidation_price=_price_or_none(data, "liquidation"),
        total_pl_sats=sats_field(data, "total_pl", 0),
    )


def parse_server_time_ms(data: Any) -> int:
    """Parse the reply of GET /time: ``{"time": ...}``, a bare number or an ISO string."""
    if isinstance(data, Mapping):
        data = field_value(data, "time")
    return to_time_ms(data, "time")


def trailing_percent(distance_usd: Decimal, price: Decimal) -> Decimal:
    """Return a trailing stop distance in USD as a percentage of ``price``, to 8 places."""
    return (distance_usd * _HUNDRED / price).quantize(Decimal("0.00000001"))


def _items(data: Any) -> list:
    if isinstance(data, Mapping):
        data = field_value(data, "data")
    if not isinstance(data, list):
        raise InvalidExchangeDataError(f"expected a JSON list, got {type(data).__name__}")
    return data


def _entry_price(data: Mapping[str, Any]) -> Decimal:
    entry = decimal_field(data, "entry_price", None)
    return entry if entry is not None else decimal_field(data, "price")


def _liquidation_price(data: Mapping[str, Any], side: Side, leverage: Decimal) -> Decimal | None:
    """Return the liquidation price; only a short at leverage 1 or less may have none."""
    level = _price_or_none(data, "liquidation")
    if level is None and not (side is Side.SELL and leverage <= 1):
        raise InvalidExchangeDataError(
            f"the field 'liquidation' is missing or 0 for a {side} trade at leverage {leverage}"
        )
    return level


def _trailing_usd(
    data: Mapping[str, Any], side: Side, stoploss_price: Decimal | None
) -> Decimal | None:
    """Convert the trailing distance, a percentage of the best price, to USD.

    The stop of a long sits at ``best * (1 - p/100)``, so the distance is
    ``stop * p / (100 - p)``. For a short the stop is ``best * (1 + p/100)`` and the distance
    ``stop * p / (100 + p)``.
    """
    percent = decimal_field(data, "stoploss_trailing_distance", Decimal(0))
    if percent == 0:
        return None
    if stoploss_price is None or not 0 < percent < _HUNDRED:
        raise InvalidExchangeDataError(
            f"the field 'stoploss_trailing_distance' is {percent} with stoploss {stoploss_price}"
        )
    divisor = _HUNDRED - percent if side is Side.BUY else _HUNDRED + percent
    return quantize_price(stoploss_price * percent / divisor)


def _trade_status(data: Mapping[str, Any]) -> TradeStatus:
    flags = {name: bool(field_value(data, name, False)) for name in ("canceled", "closed")}
    if flags["canceled"]:
        return TradeStatus.CANCELED
    if flags["closed"]:
        return TradeStatus.CLOSED
    if field_value(data, "running", False):
        return TradeStatus.RUNNING
    if field_value(data, "open", False):
        return TradeStatus.OPEN
    raise InvalidExchangeDataError(
        "the trade has none of the flags 'running', 'open', 'closed' or 'canceled' set"
    )


def _close_reason(data: Mapping[str, Any]) -> CloseReason | None:
    value = field_value(data, "close_reason", None)
    if value is None:
        return None
    try:
        return CloseReason(str(value).lower())
    except ValueError as exc:
        raise InvalidExchangeDataError(f"the field 'close_reason' is {value!r}") from exc


def _first_time_ms(data: Mapping[str, Any], names: tuple[str, ...], default: Any) -> Any:
    for name in names:
        value = field_value(data, name, None)
        if value is not None:
            return to_time_ms(value, name)
    return default


def _positive_int(value: int, name: str) -> int:
    if value <= 0:
        raise InvalidExchangeDataError(f"the field {name!r} is {value}, but must be above 0")
    return value


def _non_negative_sats(data: Mapping[str, Any], name: str, default: Any = _MISSING) -> int:
    value = sats_field(data, name, default)
    if value < 0:
        raise InvalidExchangeDataError(f"the field {name!r} is {value}, a negative amount")
    return value
