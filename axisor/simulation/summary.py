"""The replay's summary: liquidations with and without the guard, and what explains each one."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from axisor.db.models import Automation, LedgerEntry, LedgerState, Position
from axisor.guard.config import GuardAction
from axisor.simulation.runner import GuardedRun
from axisor.simulation.scenario import AUTOMATION_VARIANTS, PlannedAutomation, Scenario

# Reasons why a liquidation that happened without the guard also happened with it.
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


GUARD_KEYS = "guard:%"  # ledger keys of guard actions; automations use "auto:..."


def load_ledger(run: GuardedRun) -> list[LedgerRow]:
    """Return the guard's ledger rows."""
    statement = select(LedgerEntry).where(LedgerEntry.idempotency_key.like(GUARD_KEYS))
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
            for row in session.scalars(statement)
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
    guard_accounts = {str(account_id) for account_id in run.account_ids.values()}
    applied = Counter(
        (mutation.trade_id, kinds[mutation.kind])
        for mutation in run.venue.mutations
        if mutation.kind in kinds and mutation.account_id in guard_accounts
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


# Automations

# Venue mutation kind → ledger action of the automation worker that causes it.
AUTOMATION_CALLS = {
    "close": "close",
    "cash_in": "cash_in",
    "stoploss": "set_stoploss",
    "open": "open_trade",
}


@dataclass(frozen=True, slots=True)
class _AutomationRow:
    automation_id: int
    action: str
    state: str


def _automation_ledger(run: GuardedRun) -> list[_AutomationRow]:
    statement = select(LedgerEntry).where(LedgerEntry.idempotency_key.like("auto:%"))
    with run.database.session() as session:
        return [
            _AutomationRow(int(row.idempotency_key.split(":")[1]), row.action, row.state)
            for row in session.scalars(statement)
        ]


def _executed(run: GuardedRun) -> set[int]:
    with run.database.session() as session:
        rows = session.scalars(
            select(Automation.id).where(Automation.last_executed_at.is_not(None))
        )
        return set(rows)


def summarize_automations(run: GuardedRun, planned: list[PlannedAutomation]) -> dict:
    """Count per automation type: planned, armed, rejected by the plan, fired, and more.

    ``fired`` counts each confirmed close, cash-in or open, and each stop the venue filled
    after the worker placed it. ``placed_on_exchange`` counts confirmed stop placements.
    """
    outcome = run.automations
    rows = _automation_ledger(run)
    executed = _executed(run)
    confirmed = [row for row in rows if row.state == LedgerState.CONFIRMED.value]
    fires = Counter(row.automation_id for row in confirmed if row.action != "set_stoploss")
    types: dict[str, Counter] = {kind: Counter() for kind, _ in AUTOMATION_VARIANTS}
    variants: Counter = Counter()
    for automation in planned:
        counts = types[automation.type]
        counts["planned"] += 1
        automation_id = outcome.automation_ids.get(automation.index)
        if automation_id is None:
            counts["rejected_by_plan"] += 1
            continue
        counts["armed"] += 1
        fired = fires[automation_id] or int(automation_id in executed)
        counts["fired"] += fired
        variants[f"{automation.type}.{automation.variant}"] += fired
    _add_ledger_counts(types, rows, outcome)
    result = {kind: _ordered(counts) for kind, counts in types.items()}
    result["fired_by_variant"] = dict(sorted(variants.items()))
    result["venue_fills"] = dict(sorted(outcome.venue_fills.items()))
    result["duplicate_actions"] = _automation_duplicates(run, confirmed, planned)
    return result


def _add_ledger_counts(types: dict[str, Counter], rows: list[_AutomationRow], outcome) -> None:
    for kind, counts in types.items():
        counts["jobs"] = outcome.jobs_queued.get(kind, 0)
    for row in rows:
        if row.state == LedgerState.FAILED.value:
            types[_type_of(row.action)]["failed"] += 1
        if row.action == "set_stoploss" and row.state == LedgerState.CONFIRMED.value:
            types["stop_loss"]["placed_on_exchange"] += 1


def _type_of(action: str) -> str:
    return {"open_trade": "auto_entry", "set_stoploss": "stop_loss"}.get(action, "take_profit")


AUTOMATION_FIGURES = (
    "planned",
    "rejected_by_plan",
    "armed",
    "jobs",
    "fired",
    "placed_on_exchange",
    "failed",
)


def _ordered(counts: Counter) -> dict:
    return {name: counts[name] for name in AUTOMATION_FIGURES}


def _automation_duplicates(
    run: GuardedRun, confirmed: list[_AutomationRow], planned: list[PlannedAutomation]
) -> int:
    """Count venue changes on automation accounts beyond one per confirmed ledger row.

    The replay itself opens one target trade per take profit or stop loss, so those opens are
    not the worker's.
    """
    accounts = {str(account_id) for account_id in run.automations.account_ids.values()}
    applied = Counter(
        AUTOMATION_CALLS[mutation.kind]
        for mutation in run.venue.mutations
        if mutation.account_id in accounts and mutation.kind in AUTOMATION_CALLS
    )
    applied["open_trade"] -= sum(1 for automation in planned if automation.type != "auto_entry")
    done = Counter(row.action for row in confirmed)
    return sum(max(0, count - done[action]) for action, count in applied.items())
