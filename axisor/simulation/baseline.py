"""The same replay with the guard off: which planned positions the venue liquidates."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from axisor.exchange.models import CloseReason, OpenTradeRequest
from axisor.exchange.paper import PaperVenue
from axisor.market.replay import Tick
from axisor.simulation.scenario import PlannedPosition, Scenario


def open_request(position: PlannedPosition) -> OpenTradeRequest:
    return OpenTradeRequest(
        side=position.side,
        leverage=Decimal(position.leverage),
        quantity_usd=position.quantity_usd,
    )


async def run_baseline(scenario: Scenario, ticks: list[Tick], prices: list[Decimal]) -> dict:
    """Return {position index: (tick index, time_ms, price)} of every liquidation without guard."""
    venue = PaperVenue()
    for account in scenario.accounts:
        venue.create_account(str(account.index), account.balance_sats)
    opening = scenario.positions_by_tick()
    planned_by_trade: dict[str, int] = {}
    liquidated: dict[int, tuple[int, int, Decimal]] = {}
    for i, tick in enumerate(ticks):
        for event in venue.set_price(prices[i], tick.time_ms):
            if event.reason is CloseReason.LIQUIDATED:
                liquidated[planned_by_trade[event.trade_id]] = (i, tick.time_ms, event.price)
        for position in opening.get(i, ()):
            venue.deposit(str(position.account_index), position.opening_cost_sats)
            trade = await venue.account(str(position.account_index)).open_trade(
                open_request(position)
            )
            planned_by_trade[trade.id] = position.index
        if i % 2_000 == 0:
            await asyncio.sleep(0)
    return liquidated
