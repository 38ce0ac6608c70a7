"""The replay's summary: liquidations with and without the guard, and what explains each one."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from axisor.db.models import LedgerEntry, LedgerState, Position
from axisor.guard.config import GuardAction
from axisor.simulation.runner import GuardedRun
from axisor.simulation.scenario import Scenario

# Why a liquidation that happened without the guard also happened with it.
GAP = "gap"  # one tick jumped past both the trigger and the liquidation price
INSUFFICIENT_FUNDS = "insufficient_funds"  # free balance and budget could not cover the action
ACTION_LIMIT = "action_limit"  # the guard had used all of its max_actions
LEVERAGE_LIMIT = "leverage_limit"  # the trade already held the margin of leverage 1
MISSED = "missed"  # none of the above: the guard should have prevented it
EXCHANGE_ACTIONS = (GuardAction.ADD_MARGIN.value, GuardAction.CLOSE_POSITION.value)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    position_id: int | None
    action: str
    state: str
    amount_sats: int
    shortfall_sats: int
    tick_received_ns: int | None
    sent_at_ns: int | None
    tick_price: Decimal | None
    tick_time_ms: int | None
    limited_by: str | None


def load_ledger(run: GuardedRun) -> list[LedgerRow]:
    with run.database.session() as session:
        return [
            LedgerRow(
                row.position_id,
                row.action,
                row.state,
                row.amount_sats,
                row.shortfall_sats,
                row.tick_received_ns,
                row.sent_at_ns,
                row.tick_price,
                (row.details or {}).get("tick_time_ms"),
                (row.details or {}).get("limited_by"),
            )
            for row in session.scalars(select(LedgerEntry))
        ]


def load_guard_actions(run: GuardedRun) -> dict[int, int]:
    with run.database.session() as session:
        return dict(session.execute(select(Position.id, Position.guard_actions)).all())


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of an ascending list, or None when it is empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-int(fraction * 1000) * len(sorted_values) // 1000))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_ms(rows: list[LedgerRow]) -> dict:
    values = sorted(
        (row.sent_at_ns - row.tick_received_ns) / 1e6
        for row in rows
        if row.sent_at_ns and row.tick_received_ns and row.action in EXCHANGE_ACTIONS
    )
    rounded = {name: percentile(values, q) for name, q in (("p50", 0.5), ("p99", 0.99))}
    result = {k: None if v is None else round(v, 2) for k, v in rounded.items()}
    result["max"] = round(values[-1], 2) if values else None
    result["samples"] = len(values)
    return result


def duplicate_actions(run: GuardedRun, rows: list[LedgerRow]) -> int:
    """Count exchange changes beyond one per confirmed ledger row, per trade and action kind."""
    trade_by_position = {pid: trade for trade, pid in run.position_ids.items()}
    confirmed = Counter(
        (trade_by_position.get(row.position_id), row.action)
        for row in rows
        if row.state == LedgerState.CONFIRMED.value and row.action in EXCHANGE_ACTIONS
    )
    kinds = {"add_margin": "add_margin", "close": "close_position"}
    applied = Counter(
        (mutation.trade_id, kinds[mutation.kind])
        for mutation in run.venue.mutations
        if mutation.kind in kinds
    )
    return sum(max(0, count - confirmed[key]) for key, count in applied.items())


def classify(
    scenario: Scenario, baseline: dict, run: GuardedRun, rows: list[LedgerRow]
) -> dict[int, str]:
    """Return, for each liquidation without the guard, "prevented" or why it still happened."""
    short = {
        row.position_id
        for row in rows
        if row.shortfall_sats > 0 and row.limited_by in ("balance", "budget")
    }
    capped = {
        row.position_id for row in rows if row.shortfall_sats > 0 and row.limited_by == "leverage"
    }
    actions = load_guard_actions(run)
    position_by_index = {
        index: run.position_ids.get(trade) for trade, index in run.planned_by_trade.items()
    }
    max_actions = {
        p.index: scenario.accounts[p.account_index].guard.max_actions for p in scenario.positions
    }
    outcome: dict[int, str] = {}
    for index in baseline:
        liquidation = run.liquidations.get(index)
        position_id = position_by_index.get(index)
        if liquidation is None:
            outcome[index] = "prevented"
        elif position_id in short:
            outcome[index] = INSUFFICIENT_FUNDS
        elif position_id in capped:
            outcome[index] = LEVERAGE_LIMIT
        elif liquidation.context == GAP:
            outcome[index] = GAP
        elif actions.get(position_id, 0) >= max_actions[index]:
            outcome[index] = ACTION_LIMIT
        else:
            outcome[index] = MISSED
    return outcome


def summarize(scenario: Scenario, baseline: dict, run: GuardedRun, episode: dict) -> dict:
    rows = load_ledger(run)
    outcome = classify(scenario, baseline, run, rows)
    counts = Counter(outcome.values())
    reasons = (GAP, INSUFFICIENT_FUNDS, LEVERAGE_LIMIT, ACTION_LIMIT)
    excluded = {reason: counts.get(reason, 0) for reason in reasons}
    confirmed = [row for row in rows if row.state == LedgerState.CONFIRMED.value]
    preventable = len(baseline) - sum(excluded.values())
    return {
        "episode": episode,
        "seed": scenario.seed,
        "positions": len(scenario.positions),
        "accounts": len(scenario.accounts),
        "triggered": len(run.fired_positions),
        "jobs_queued": run.jobs_queued,
        "actions": dict(sorted(Counter(row.action for row in confirmed).items())),
        "failed_actions": sum(1 for row in rows if row.state == LedgerState.FAILED.value),
        "liquidated_with_guard": len(run.liquidations),
        "liquidated_without_guard": len(baseline),
        "preventable_liquidations": preventable,
        "prevented": counts.get("prevented", 0),
        "excluded": excluded,
        "missed": counts.get(MISSED, 0),
        "sats_added": sum(row.amount_sats for row in confirmed if row.action == "add_margin"),
        "duplicate_actions": duplicate_actions(run, rows),
        "tick_to_action_ms": latency_ms(rows),
        "elapsed_s": round(run.elapsed_s, 1),
    }
