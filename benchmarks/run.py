"""Speed and memory benchmarks; prints a Markdown table for docs/benchmarks.md.

Run with ``make bench`` (or ``python -m benchmarks.run``). The guard burst needs Redis (REDIS_URL,
else the private Redis in AXISOR_DATA_DIR); it also runs on PostgreSQL when BENCH_POSTGRES_URL
names an empty database or schema.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
import tracemalloc
from decimal import Decimal

from axisor.config import Settings
from axisor.db.migrate import upgrade
from axisor.db.models import Plan
from axisor.db.session import Database
from axisor.engine.index import ArmedTrigger, TriggerIndex
from axisor.exchange import math as lnm
from axisor.exchange.models import OpenTradeRequest, Side
from axisor.exchange.paper import PaperVenue
from axisor.guard.config import GuardConfig
from axisor.logs import configure_logging
from axisor.market.replay import Tick
from axisor.redis_server import ensure_redis
from axisor.simulation.runner import GuardedReplay, tick_prices
from axisor.simulation.scenario import PlannedAccount, PlannedPosition, Scenario
from axisor.simulation.summary import duplicate_actions, latency_ms, load_ledger

ARMED = 100_000
TICKS = 20_000


def random_walk(start: Decimal, steps: int, seed: int) -> list[Decimal]:
    rng = random.Random(seed)
    prices, price = [], start
    for _ in range(steps):
        price += Decimal(rng.randint(-40, 40)) / 2
        prices.append(price)
    return prices


def bench_trigger_index() -> list[tuple[str, str]]:
    rng = random.Random(1)
    tracemalloc.start()
    index = TriggerIndex()
    for i in range(ARMED):
        side = Side.BUY if i % 2 else Side.SELL
        offset = Decimal(rng.randint(200, 20_000)) / 2
        trigger = Decimal(40_000) - offset if side is Side.BUY else Decimal(40_000) + offset
        index.arm(ArmedTrigger(i, i // 3, side, trigger, None, 1, "add_margin"))
    memory_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()

    prices = random_walk(Decimal(40_000), TICKS, seed=2)
    started = time.perf_counter()
    fired = sum(len(index.pop_crossed(price)) for price in prices)
    elapsed = time.perf_counter() - started
    return [
        ("trigger index: armed positions", f"{ARMED:,}"),
        ("trigger index: memory per armed position", f"{memory_bytes / ARMED:,.0f} bytes"),
        ("trigger index: time per tick", f"{elapsed / TICKS * 1e6:.1f} µs ({fired:,} fired)"),
    ]


async def bench_paper_venue() -> list[tuple[str, str]]:
    venue = PaperVenue()
    venue.set_price(Decimal(40_000), 0)
    venue.create_account("a", 10**15)
    account = venue.account("a")
    rng = random.Random(3)
    trades = 20_000
    for _ in range(trades):
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        await account.open_trade(
            OpenTradeRequest(side=side, leverage=Decimal(rng.randint(2, 100)), quantity_usd=100)
        )
    prices = random_walk(Decimal(40_000), TICKS, seed=4)
    started = time.perf_counter()
    filled = sum(len(venue.set_price(price, i)) for i, price in enumerate(prices, 1))
    elapsed = time.perf_counter() - started
    return [
        ("paper venue: running trades", f"{trades:,}"),
        (
            "paper venue: time per price update",
            f"{elapsed / TICKS * 1e6:.1f} µs ({filled:,} fills)",
        ),
    ]


def burst_scenario(positions: int, prices: list[Decimal]) -> Scenario:
    """Return one 10x long per account, opened at the first tick and armed at half the distance."""
    guard = GuardConfig(margin_threshold=Decimal("0.5"), add_margin_percent=Decimal(50))
    accounts = [
        PlannedAccount(i, f"bench{i}@example.test", Plan.PRO, 10_000_000, guard)
        for i in range(positions)
    ]
    planned = [
        PlannedPosition(i, i, Side.BUY, 1_000, 10, 0, _opening_cost(prices[0]))
        for i in range(positions)
    ]
    return Scenario(seed=0, accounts=accounts, positions=planned)


def _opening_cost(price: Decimal) -> int:
    margin = lnm.margin_for(1_000, Decimal(10), price)
    liquidation = lnm.liquidation_price(Side.BUY, 1_000, price, margin)
    return margin + lnm.maintenance_margin_sats(1_000, price, liquidation)


def burst_ticks() -> list[Tick]:
    """40,000 for a few ticks, then one tick 5 % lower: every trigger crosses, no liquidation."""
    prices = [Decimal(40_000)] * 4 + [Decimal(38_000)] * 4
    return [Tick(i * 15_000, price, i // 4, "close") for i, price in enumerate(prices)]


async def bench_pipeline(redis_url: str, database_url: str, positions: int, concurrency: int):
    ticks = burst_ticks()
    prices = tick_prices(ticks)
    scenario = burst_scenario(positions, prices)
    database = Database(database_url)
    upgrade(database)
    replay = GuardedReplay(scenario, ticks, prices, database, redis_url, concurrency=concurrency)
    run = await replay.run()
    rows = load_ledger(run)
    database.dispose()
    sent = sorted(r.sent_at_ns for r in rows if r.sent_at_ns)
    latency = latency_ms(rows)
    span_s = (sent[-1] - sent[0]) / 1e9 if len(sent) > 1 else 0.0
    backend = database_url.split(":", 1)[0].split("+", 1)[0]
    name = (
        f"guard burst: {positions:,} positions cross at once, concurrency {concurrency}, {backend}"
    )
    value = (
        f"{len(sent):,} actions, {len(sent) / span_s:,.0f} actions/s; tick to action "
        f"p50 {latency['p50']} ms, p99 {latency['p99']} ms; duplicates "
        f"{duplicate_actions(run, rows)}"
    )
    return name, value


def print_table(rows: list[tuple[str, str]]) -> None:
    print("| benchmark | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


async def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_format, "WARNING")
    rows = bench_trigger_index()
    rows += await bench_paper_venue()
    redis_url = ensure_redis(settings)
    postgres_url = os.environ.get("BENCH_POSTGRES_URL")
    for concurrency in (5, 20):
        with tempfile.TemporaryDirectory() as folder:
            sqlite_url = f"sqlite:///{folder}/bench.db"
            rows.append(await bench_pipeline(redis_url, sqlite_url, 1_000, concurrency))
        if postgres_url:
            rows.append(await bench_pipeline(redis_url, postgres_url, 1_000, concurrency))
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
