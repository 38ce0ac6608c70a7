"""Generated users, accounts, positions and guard settings, all drawn from one seed."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from axisor.db.models import Plan
from axisor.exchange import math as lnm
from axisor.exchange.models import Side
from axisor.guard.config import AddMarginMode, GuardAction, GuardConfig

POSITIONS_PER_ACCOUNT = 3
MAX_GUARD_ACTIONS = 25
# Positions open during the first 85 % of the ticks, so that each still meets some of the moves.
OPEN_WINDOW = Decimal("0.85")


@dataclass(frozen=True, slots=True)
class PlannedPosition:
    """A trade to open at ``open_tick`` (an index into the replay's ticks).

    ``opening_cost_sats`` (margin plus the fee reserve) is deposited just before the trade
    opens, so the account's free balance is what the guard can draw on.
    """

    index: int
    account_index: int
    side: Side
    quantity_usd: int
    leverage: int
    open_tick: int
    opening_cost_sats: int


@dataclass(frozen=True, slots=True)
class PlannedAccount:
    index: int
    email: str
    plan: Plan
    balance_sats: int  # free balance at the start, for the guard to draw on
    guard: GuardConfig


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    accounts: list[PlannedAccount]
    positions: list[PlannedPosition]

    def positions_by_tick(self) -> dict[int, list[PlannedPosition]]:
        opening: dict[int, list[PlannedPosition]] = {}
        for position in self.positions:
            opening.setdefault(position.open_tick, []).append(position)
        return opening


def generate(seed: int, positions: int, tick_count: int, prices: list[Decimal]) -> Scenario:
    """Draw ``positions`` positions spread over accounts of about three positions each.

    ``prices`` gives the price at each tick; each account's free balance is drawn from the seed
    as a multiple of its positions' margin.
    """
    rng = random.Random(seed)
    account_count = max(1, -(-positions // POSITIONS_PER_ACCOUNT))
    last_open = max(1, int(tick_count * OPEN_WINDOW))
    planned = [
        _position(rng, i, rng.randrange(account_count), rng.randrange(last_open), prices)
        for i in range(positions)
    ]
    accounts = [
        _account(rng, a, [p for p in planned if p.account_index == a], prices)
        for a in range(account_count)
    ]
    return Scenario(seed=seed, accounts=accounts, positions=planned)


def _position(
    rng: random.Random, index: int, account: int, open_tick: int, prices: list[Decimal]
) -> PlannedPosition:
    band = rng.random()
    if band < 0.4:
        leverage = rng.randint(2, 10)
    elif band < 0.75:
        leverage = rng.randint(11, 50)
    else:
        leverage = rng.randint(51, 100)
    side = Side.BUY if rng.random() < 0.65 else Side.SELL
    quantity = rng.choice((10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000))
    return PlannedPosition(
        index=index,
        account_index=account,
        side=side,
        quantity_usd=quantity,
        leverage=leverage,
        open_tick=open_tick,
        opening_cost_sats=_opening_cost_sats(side, quantity, leverage, prices[open_tick]),
    )


def _account(
    rng: random.Random, index: int, positions: list[PlannedPosition], prices: list[Decimal]
) -> PlannedAccount:
    margins = sum(
        lnm.margin_for(p.quantity_usd, Decimal(p.leverage), prices[p.open_tick]) for p in positions
    )
    # Most accounts keep several times their margin free; one in ten keeps almost nothing.
    factor = Decimal(rng.choice((0, 0, 1, 2, 3, 5, 8, 12, 20, 40))) / 2
    free_sats = int(margins * factor) + rng.randint(0, 5_000)
    return PlannedAccount(
        index=index,
        email=f"trader{index:05d}@example.test",
        plan=rng.choice(list(Plan)),
        balance_sats=free_sats,
        guard=_guard(rng, margins),
    )


def _opening_cost_sats(side: Side, quantity_usd: int, leverage: int, price: Decimal) -> int:
    """Return the margin plus fee reserve that opening the trade at ``price`` takes."""
    margin = lnm.margin_for(quantity_usd, Decimal(leverage), price)
    liquidation = lnm.liquidation_price(side, quantity_usd, price, margin)
    return margin + lnm.maintenance_margin_sats(quantity_usd, price, liquidation)


def _guard(rng: random.Random, margins_sats: int) -> GuardConfig:
    threshold = Decimal(rng.randint(10, 18)) / 20  # 0.50 to 0.90
    action = GuardAction.ADD_MARGIN if rng.random() < 0.8 else GuardAction.CLOSE_POSITION
    restore = rng.random() < 0.5
    budget = None if rng.random() < 0.4 else margins_sats * rng.randint(2, 20)
    return GuardConfig(
        margin_threshold=threshold,
        action=action,
        add_margin_mode=AddMarginMode.RESTORE if restore else AddMarginMode.PERCENT,
        add_margin_percent=Decimal(rng.choice((25, 50, 75, 100))),
        restore_fraction=(threshold * Decimal(rng.randint(4, 7)) / 10).quantize(Decimal("0.01")),
        budget_sats=budget,
        max_actions=MAX_GUARD_ACTIONS,
    )
