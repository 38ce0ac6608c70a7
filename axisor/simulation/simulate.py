"""``axisor simulate``: generate positions, replay an episode with and without the guard."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from axisor.db.migrate import upgrade
from axisor.db.session import Database
from axisor.errors import InvalidConfigError
from axisor.market.replay import Replay
from axisor.report import ReportEvent
from axisor.simulation.baseline import run_baseline
from axisor.simulation.runner import GuardedReplay, GuardedRun, ProgressCallback, tick_prices
from axisor.simulation.scenario import generate, generate_automations
from axisor.simulation.summary import load_ledger, summarize, summarize_automations

MAX_POSITIONS = 100_000


@dataclass
class SimulationResult:
    summary: dict
    prices: list[tuple[int, Decimal]]
    events: list[ReportEvent]


def episode_facts(replay: Replay, name: str) -> dict:
    return {
        "name": name,
        "bars": len(replay.bars),
        "ticks": len(replay),
        "resolution_s": replay.resolution_ms // 1000,
        "first_price": str(replay.first_price),
        "min_low": str(replay.min_low),
        "max_high": str(replay.max_high),
    }


async def simulate(
    replay: Replay,
    name: str,
    *,
    positions: int,
    seed: int,
    database_url: str,
    redis_url: str,
    concurrency: int = 5,
    timeout_ms: int = 30_000,
    progress: ProgressCallback | None = None,
    exchange: str = "paper",
    automations: bool = False,
) -> SimulationResult:
    """Run the replay with the guard off, then through the whole pipeline with it on.

    With ``automations`` the guarded run also carries a mix of automations drawn from the seed,
    on a second linked account per chosen user, and the summary gains ``automations``.
    """
    if not 1 <= positions <= MAX_POSITIONS:
        raise InvalidConfigError(
            "positions", f"{positions} is out of range; use 1 to {MAX_POSITIONS}"
        )
    ticks = list(replay.ticks())
    prices = tick_prices(ticks)
    scenario = generate(seed, positions, len(ticks), prices)
    baseline = await run_baseline(scenario, ticks, prices)
    planned = generate_automations(seed, scenario, len(ticks), prices) if automations else []

    database = Database(database_url)
    try:
        upgrade(database)
        guarded = GuardedReplay(
            scenario,
            ticks,
            prices,
            database,
            redis_url,
            concurrency=concurrency,
            timeout_ms=timeout_ms,
            progress=progress,
            exchange=exchange,
            automations=planned,
        )
        run = await guarded.run()
        summary = summarize(scenario, baseline, run, episode_facts(replay, name))
        summary["exchange"] = exchange
        if automations:
            summary["automations"] = summarize_automations(run, planned)
        events = report_events(run, baseline, ticks)
    finally:
        database.dispose()
    series = [(tick.time_ms, price) for tick, price in zip(ticks, prices, strict=True)]
    return SimulationResult(summary, series, events)


def report_events(run: GuardedRun, baseline: dict, ticks) -> list[ReportEvent]:
    events = [
        ReportEvent(
            row.tick_time_ms,
            row.tick_price,
            row.action,
            f"position {row.position_id}: {row.action} {row.amount_sats} sats",
        )
        for row in load_ledger(run)
        if row.state == "confirmed" and row.tick_time_ms is not None and row.tick_price
    ]
    events += [
        ReportEvent(
            liq.time_ms,
            liq.price,
            "liquidation_with_guard",
            f"planned position {index} liquidated ({liq.context})",
        )
        for index, liq in run.liquidations.items()
    ]
    events += [
        ReportEvent(
            time_ms,
            price,
            "liquidation_without_guard",
            f"planned position {index} liquidated without the guard",
        )
        for index, (_, time_ms, price) in baseline.items()
    ]
    return sorted(events, key=lambda event: event.time_ms)
