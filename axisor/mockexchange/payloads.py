"""JSON shaping of the mock LN Markets server: v3 trades, cross margin positions and orders,
candles and times, as the LN Markets v3 API writes them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.responses import Response

from axisor.exchange.lnmarkets.parse import encode_json
from axisor.exchange.models import CrossOrder, CrossPosition, Side, Trade, TradeStatus

_HUNDRED = Decimal(100)


def trade_json(trade: Trade) -> dict[str, Any]:
    """Serialise a trade as LN Markets v3 does (camelCase, 0 for an unset level).

    ``closeReason`` is an addition of the mock: the lnmarkets-sdk v3 trade models have no such
    field.
    """
    closed_at = iso_time(trade.closed_ms) if trade.closed_ms is not None else None
    return {
        "id": trade.id,
        "type": "market",
        "side": trade.side.value,
        "quantity": trade.quantity_usd,
        "margin": trade.margin_sats,
        "leverage": trade.leverage,
        "price": trade.entry_price,
        "entryPrice": trade.entry_price,
        "liquidation": trade.liquidation_price or 0,
        "maintenanceMargin": trade.maintenance_margin_sats,
        "openingFee": trade.opening_fee_sats,
        "closingFee": trade.closing_fee_sats,
        "stoploss": trade.stoploss_price or 0,
        "stoplossTrailingDistance": _trailing_percent(trade),
        "takeprofit": trade.takeprofit_price or 0,
        "exitPrice": trade.exit_price,
        "pl": trade.pnl_sats,
        "sumFundingFees": 0,
        "open": trade.status is TradeStatus.OPEN,
        "running": trade.status is TradeStatus.RUNNING,
        "closed": trade.status is TradeStatus.CLOSED,
        "canceled": trade.status is TradeStatus.CANCELED,
        "createdAt": iso_time(trade.created_ms),
        "filledAt": iso_time(trade.created_ms),
        "closedAt": closed_at,
        "closeReason": trade.close_reason.value if trade.close_reason else None,
    }


def cross_position_json(position: CrossPosition) -> dict[str, Any]:
    """Serialise a cross margin position with the v3 field names, ``quantity`` signed.

    The fields are those of the FuturesCrossPosition model of lnmarkets-sdk 0.0.19 that the paper
    venue tracks. ``margin`` is the cross balance and ``totalPl`` the realised P&L.
    ``runningMargin`` and ``deltaPl`` are left out because that model names them without saying
    what they contain.
    """
    return {
        "id": position.id,
        "quantity": position.quantity_usd,
        "entryPrice": position.entry_price,
        "leverage": position.leverage,
        "margin": position.margin_sats,
        "initialMargin": position.initial_margin_sats,
        "maintenanceMargin": position.maintenance_margin_sats,
        "liquidation": position.liquidation_price,
        "totalPl": position.total_pl_sats,
        "tradingFees": position.trading_fees_sats,
        "fundingFees": 0,
        "updatedAt": iso_time(position.updated_ms),
    }


def cross_order_json(fill: CrossOrder, client_id: str | None = None) -> dict[str, Any]:
    """Serialise a filled cross margin market order as the v3 filled-order model does."""
    filled_at = iso_time(fill.filled_ms)
    return {
        "id": fill.id,
        "type": "market",
        "side": fill.side.value,
        "quantity": fill.quantity_usd,
        "price": fill.price,
        "tradingFee": fill.trading_fee_sats,
        "open": False,
        "filled": True,
        "canceled": False,
        "createdAt": filled_at,
        "filledAt": filled_at,
        "clientId": client_id,
    }


def _trailing_percent(trade: Trade) -> Decimal:
    """Return the trailing distance as a percentage of the best price since it was set.

    The stop of a long sits the distance below the best price, and of a short above it.
    """
    distance = trade.trailing_stoploss_usd
    if distance is None or trade.stoploss_price is None:
        return Decimal(0)
    best_price = trade.stoploss_price + (distance if trade.side is Side.BUY else -distance)
    return (distance * _HUNDRED / best_price).quantize(Decimal("0.00000001"))


def _candle_json(start_ms: int, prices: list[Decimal]) -> dict[str, Any]:
    return {
        "time": iso_time(start_ms),
        "open": prices[0],
        "high": max(prices),
        "low": min(prices),
        "close": prices[-1],
        "volume": 0,
    }


def iso_time(time_ms: int) -> str:
    """Return epoch milliseconds as an ISO 8601 UTC time with milliseconds."""
    moment = datetime.fromtimestamp(time_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Return ``data`` as JSON, Decimals written as exact numbers."""
    return Response(
        encode_json(data), status_code=status, headers=headers, media_type="application/json"
    )
