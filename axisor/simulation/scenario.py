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


# Automations, drawn from their own stream of the seed so the guard's positions stay the same.

# Each variant: (automation type, name). Variants are dealt in turn, so every one appears.
AUTOMATION_VARIANTS = (
    ("take_profit", "price_close"),
    ("take_profit", "pnl_cash_in"),
    ("stop_loss", "fixed_exchange"),
    ("stop_loss", "fixed_engine"),
    ("stop_loss", "trailing_exchange"),
    ("stop_loss", "trailing_engine"),
    ("auto_entry", "above"),
    ("auto_entry", "below"),
)
AUTOMATION_SHARE = Decimal("0.5")  # about this share of accounts gets one automation


@dataclass(frozen=True, slots=True)
class PlannedAutomation:
    """An automation created at ``open_tick`` on a second linked account of the user.

    A take profit or stop loss acts on a trade opened for it at that tick (``side``,
    ``quantity_usd``, ``leverage``); ``opening_cost_sats`` is deposited just before.
    An auto entry opens its own trade, and ``deposit_sats`` covers it.
    """

    index: int
    account_index: int
    type: str
    variant: str
    open_tick: int
    config: dict
    side: Side = Side.BUY
    quantity_usd: int = 0
    leverage: int = 1
    opening_cost_sats: int = 0
    deposit_sats: int = 0


def generate_automations(
    seed: int, scenario: Scenario, tick_count: int, prices: list[Decimal]
) -> list[PlannedAutomation]:
    """Draw automations over about half of the scenario's accounts, one variant each in turn."""
    rng = random.Random(f"{seed}:automations")
    last_open = max(1, int(tick_count * OPEN_WINDOW))
    planned: list[PlannedAutomation] = []
    for account in scenario.accounts:
        if Decimal(str(rng.random())) >= AUTOMATION_SHARE:
            continue
        kind, variant = AUTOMATION_VARIANTS[len(planned) % len(AUTOMATION_VARIANTS)]
        open_tick = rng.randrange(last_open)
        planned.append(
            _automation(rng, len(planned), account.index, kind, variant, open_tick, prices)
        )
    return planned


def _automation(
    rng: random.Random,
    index: int,
    account: int,
    kind: str,
    variant: str,
    open_tick: int,
    prices: list[Decimal],
) -> PlannedAutomation:
    price = prices[open_tick]
    percent = Decimal(rng.randint(10, 40)) / 10  # 1.0 % to 4.0 % from the price
    common = {"index": index, "account_index": account, "type": kind, "variant": variant}
    if kind == "auto_entry":
        config = _entry_config(rng, variant, price, percent)
        cost = _opening_cost_sats(Side.BUY, config["quantity_usd"], 5, price)
        return PlannedAutomation(
            **common, open_tick=open_tick, config=config, deposit_sats=cost * 4
        )
    side = Side.BUY if rng.random() < 0.7 else Side.SELL
    quantity = rng.choice((50, 100, 250, 500, 1_000))
    leverage = rng.randint(2, 5)
    return PlannedAutomation(
        **common,
        open_tick=open_tick,
        config=_exit_config(variant, side, price, percent),
        side=side,
        quantity_usd=quantity,
        leverage=leverage,
        opening_cost_sats=_opening_cost_sats(side, quantity, leverage, price),
    )


def _exit_config(variant: str, side: Side, price: Decimal, percent: Decimal) -> dict:
    """Return a take profit or stop loss ``percent`` away from ``price`` on the right side."""
    profit_sign = 1 if side is Side.BUY else -1
    take_profit = _cents(price * (1 + profit_sign * percent / 100))
    stop = _cents(price * (1 - profit_sign * percent / 100))
    configs = {
        "price_close": {"price_usd": take_profit},
        "pnl_cash_in": {"pnl_percent": str(percent * 5), "action": "cash_in"},
        "fixed_exchange": {"price_usd": stop, "placement": "exchange"},
        "fixed_engine": {"price_usd": stop, "placement": "engine"},
        "trailing_exchange": {"trailing_distance_usd": _cents(price * percent / 100)},
        "trailing_engine": {"trailing_percent": str(percent), "placement": "engine"},
    }
    return configs[variant]


def _entry_config(rng: random.Random, variant: str, price: Decimal, percent: Decimal) -> dict:
    sign = 1 if variant == "above" else -1
    return {
        "side": "buy" if rng.random() < 0.6 else "sell",
        "quantity_usd": rng.choice((50, 100, 250)),
        "leverage": "5",
        "trigger": variant,
        "price_usd": _cents(price * (1 + sign * percent / 100)),
        "cooldown_s": rng.choice((600, 3_600)),
    }


def _cents(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))
