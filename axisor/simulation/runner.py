"""The guarded replay: paper venue → engine → BullMQ on Redis → workers → paper venue.

The replay runs in lockstep: after a tick's jobs are queued, the next tick waits until the
queue is empty, as if every worker finished before the market moved again. Latency is still
real: ``tick_to_action_ms`` is measured from the engine receiving the tick to the exchange call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from bullmq import Queue
from redis.asyncio import Redis
from sqlalchemy import select

from axisor.db.models import ExchangeAccount, MarginGuardConfig, Position, PositionStatus, User
from axisor.db.session import Database
from axisor.engine.scheduler import Engine
from axisor.errors import InvalidConfigError
from axisor.exchange import math as lnm
from axisor.exchange.models import CloseReason, TradeEvent
from axisor.exchange.paper import PaperVenue
from axisor.exchange.registry import PaperResolver
from axisor.guard.policy import is_crossed
from axisor.guard.positions import PositionStore
from axisor.market.replay import Tick
from axisor.mockexchange.server import MockExchange, run_mock_exchange
from axisor.queue.jobs import GuardCheckJob, guard_check_job_id, job_options
from axisor.queue.names import GUARD_CHECK_JOB, MARGIN_GUARD_QUEUE
from axisor.simulation.automations import AutomationLane, AutomationOutcome
from axisor.simulation.baseline import open_request
from axisor.simulation.queues import wait_until_idle
from axisor.simulation.resolvers import MockAccountsResolver
from axisor.simulation.scenario import PlannedAutomation, Scenario
from axisor.workers.context import WorkerContext
from axisor.workers.runner import start_worker, worker_name

ProgressCallback = Callable[[int, int], None]
# "paper": workers call the paper venue in process. "mock": workers call it through the LN
# Markets REST client and a local mock of the LN Markets API, with signed requests.
EXCHANGES = ("paper", "mock")
# Replay time between re-checks of accounts whose guard paused for lack of funds, as a periodic
# margin-guard-check schedule would do in production.
PAUSED_CHECK_INTERVAL_MS = 5 * 60 * 1000


@dataclass
class Liquidation:
    position_index: int
    tick_index: int
    time_ms: int
    price: Decimal
    context: str  # "gap", "unarmed" or "armed"


@dataclass
class GuardedRun:
    """Output of the guarded replay, for the summary and the report."""

    venue: PaperVenue
    database: Database
    account_ids: dict[int, int]  # scenario account index → database id
    planned_by_trade: dict[str, int] = field(default_factory=dict)
    position_ids: dict[str, int] = field(default_factory=dict)  # trade id → position id
    liquidations: dict[int, Liquidation] = field(default_factory=dict)
    fired_positions: set[int] = field(default_factory=set)
    jobs_queued: int = 0
    elapsed_s: float = 0.0
    automations: AutomationOutcome | None = None


class GuardedReplay:
    """Runs one scenario over the ticks with the guard on."""

    def __init__(
        self,
        scenario: Scenario,
        ticks: list[Tick],
        prices: list[Decimal],
        database: Database,
        redis_url: str,
        *,
        concurrency: int = 5,
        timeout_ms: int = 30_000,
        progress: ProgressCallback | None = None,
        exchange: str = "paper",
        automations: list[PlannedAutomation] | None = None,
    ) -> None:
        if exchange not in EXCHANGES:
            raise InvalidConfigError(
                "exchange", f"unknown exchange {exchange!r}; use one of: {', '.join(EXCHANGES)}"
            )
        self.exchange = exchange
        self.scenario = scenario
        self.ticks = ticks
        self.prices = prices
        self.database = database
        self.redis_url = redis_url
        self.concurrency = concurrency
        self.timeout_ms = timeout_ms
        self.progress = progress or (lambda done, total: None)
        # A prefix of its own keeps a replay's queues apart from any live ones on the same Redis.
        self.prefix = f"axisor-sim-{uuid.uuid4().hex[:8]}"
        self.venue = PaperVenue()
        self.positions = PositionStore(database)
        self.planned_automations = automations or []
        self.lane: AutomationLane | None = None

    async def run(self) -> GuardedRun:
        started = time.perf_counter()
        account_ids = await asyncio.to_thread(self._create_accounts)
        async with contextlib.AsyncExitStack() as stack:
            resolver = await self._resolver(stack, account_ids)
            result = await self._run_pipeline(resolver, account_ids)
        result.elapsed_s = time.perf_counter() - started
        return result

    async def _resolver(self, stack: contextlib.AsyncExitStack, account_ids: dict[int, int]):
        """Return the exchange resolver: the venue itself, or LN Markets clients over HTTP to a
        local mock of the LN Markets API backed by the same venue."""
        if self.exchange == "paper":
            return PaperResolver(self.venue)
        mock = MockExchange(self.venue)
        base_url = await stack.enter_async_context(run_mock_exchange(mock))
        resolver = MockAccountsResolver(base_url)
        stack.push_async_callback(resolver.aclose)
        for account_id in account_ids.values():
            credentials = resolver.add(account_id)
            mock.register(
                str(account_id), credentials.key, credentials.secret, credentials.passphrase
            )
        return resolver

    async def _run_pipeline(self, resolver, account_ids: dict[int, int]) -> GuardedRun:
        result = GuardedRun(self.venue, self.database, account_ids)
        redis = Redis.from_url(self.redis_url)
        queue = Queue(MARGIN_GUARD_QUEUE, {"connection": self.redis_url, "prefix": self.prefix})
        stream = f"{self.prefix}:position-events"
        ctx = WorkerContext(self.database, resolver, redis, worker_name(), stream)
        worker = start_worker(
            ctx,
            self.redis_url,
            concurrency=self.concurrency,
            timeout_ms=self.timeout_ms,
            prefix=self.prefix,
        )
        engine = Engine(self.database, redis, queue, stream)

        if self.planned_automations:
            self.lane = AutomationLane(self, ctx, redis, stream, self._automation_accounts)
            result.automations = self.lane.outcome

        try:
            await engine.rebuild()
            if self.lane is not None:
                await self.lane.start()
            await self._replay(engine, queue, result)
        finally:
            if self.lane is not None:
                await self.lane.close()
            await worker.close()
            await queue.obliterate(force=True)
            await queue.close()
            await _delete_keys(redis, f"{self.prefix}:*")
            await redis.aclose()
        result.fired_positions = engine.fired_positions
        result.jobs_queued = engine.jobs_queued
        return result

    def _create_accounts(self) -> dict[int, int]:
        ids: dict[int, int] = {}
        run = self.prefix.removeprefix("axisor-sim-")
        with self.database.session() as session:
            for planned in self.scenario.accounts:
                user = User(
                    email=planned.email.replace("example.test", f"{run}.sim.test"),
                    plan=planned.plan.value,
                )
                account = ExchangeAccount(user=user, exchange="paper", label="simulation")
                session.add(account)
                session.flush()
                session.add(
                    MarginGuardConfig(
                        user_id=user.id,
                        account_id=account.id,
                        config=planned.guard.model_dump(mode="json"),
                    )
                )
                ids[planned.index] = account.id
                self.venue.create_account(str(account.id), planned.balance_sats)
            self._automation_accounts = self._create_automation_accounts(session, ids)
        return ids

    def _create_automation_accounts(self, session, ids: dict[int, int]) -> dict[int, int]:
        """Link a second paper account for each user that gets an automation.

        NOTE: the second account is linked whatever the plan's max_linked_accounts, so that
        automation trades never draw on the balance the guard protects.
        """
        linked: dict[int, int] = {}
        for index in sorted({planned.account_index for planned in self.planned_automations}):
            user_id = session.get(ExchangeAccount, ids[index]).user_id
            account = ExchangeAccount(
                user_id=user_id, exchange="paper", label="simulation automations"
            )
            session.add(account)
            session.flush()
            linked[index] = account.id
            self.venue.create_account(str(account.id), 0)
        return linked

    async def _replay(self, engine: Engine, queue: Queue, result: GuardedRun) -> None:
        opening = self.scenario.positions_by_tick()
        previous_price: Decimal | None = None
        next_check_ms = self.ticks[0].time_ms + PAUSED_CHECK_INTERVAL_MS if self.ticks else 0
        total = len(self.ticks)
        for i, tick in enumerate(self.ticks):
            price = self.prices[i]
            events = self.venue.set_price(price, tick.time_ms)
            await self._on_venue_events(events, engine, result, i, tick, previous_price)
            if i in opening:
                await self._open_positions(opening[i], queue, engine, result, tick)
            if self.lane is not None:
                await self.lane.open_due(i, queue, engine, tick)
            if tick.time_ms >= next_check_ms:
                await self._check_accounts(
                    await asyncio.to_thread(self._paused_accounts), queue, engine, tick
                )
                next_check_ms = tick.time_ms + PAUSED_CHECK_INTERVAL_MS
            await self._act_until_settled(engine, queue, price, tick.time_ms, time.time_ns())
            previous_price = price
            if i % 250 == 0 or i == total - 1:
                self.progress(i + 1, total)

    async def _act_until_settled(
        self, engine: Engine, queue: Queue, price: Decimal, time_ms: int, received_ns: int
    ) -> None:
        """Queue crossed triggers, wait for the workers, re-arm, and repeat until none cross."""
        while await engine.on_tick(price, time_ms, received_ns):
            await wait_until_idle(queue)
            await engine.apply_events()
        if self.lane is not None:
            await self.lane.settle(price, time_ms, received_ns)

    async def _open_positions(self, planned, queue, engine, result, tick: Tick) -> None:
        accounts = set()
        for position in planned:
            account_id = result.account_ids[position.account_index]
            self.venue.deposit(str(account_id), position.opening_cost_sats)
            trade = await self.venue.account(str(account_id)).open_trade(open_request(position))
            result.planned_by_trade[trade.id] = position.index
            accounts.add(account_id)
        await self._check_accounts(accounts, queue, engine, tick)
        result.position_ids.update(await asyncio.to_thread(self._position_ids, accounts))

    async def _check_accounts(self, accounts: set[int], queue, engine, tick: Tick) -> None:
        """Run margin-guard-check for the accounts and re-arm what the checks changed."""
        if not accounts:
            return
        jobs = [
            {
                "name": GUARD_CHECK_JOB,
                "data": GuardCheckJob(account_id=account_id).model_dump(mode="json"),
                "opts": job_options(guard_check_job_id(account_id, str(tick.time_ms))),
            }
            for account_id in sorted(accounts)
        ]
        await queue.addBulk(jobs)
        await wait_until_idle(queue)
        await engine.apply_events()

    def _paused_accounts(self) -> set[int]:
        with self.database.session() as session:
            rows = session.scalars(
                select(Position.account_id).where(
                    Position.status == PositionStatus.RUNNING.value,
                    Position.guard_paused_reason.is_not(None),
                )
            )
            return set(rows)

    def _position_ids(self, account_ids: set[int]) -> dict[str, int]:
        with self.database.session() as session:
            rows = session.execute(
                select(Position.trade_id, Position.id).where(Position.account_id.in_(account_ids))
            )
            return {trade_id: position_id for trade_id, position_id in rows}

    async def _on_venue_events(
        self,
        events: list[TradeEvent],
        engine: Engine,
        result: GuardedRun,
        tick_index: int,
        tick: Tick,
        previous_price: Decimal | None,
    ) -> None:
        """Apply what the venue did by itself, as the private trade stream would report it."""
        for event in events:
            if self.lane is not None and self.lane.owns(event.account_id):
                await self.lane.venue_event(event)
                continue
            position_id = result.position_ids[event.trade_id]
            armed = engine.index.disarm(position_id)
            await asyncio.to_thread(self.positions.mark_closed, position_id, event.reason)
            if event.reason is not CloseReason.LIQUIDATED:
                continue
            context = "unarmed"
            if armed is not None:
                seen = previous_price is not None and is_crossed(
                    armed.side, previous_price, armed.trigger_price
                )
                context = "armed" if seen else "gap"
            index = result.planned_by_trade[event.trade_id]
            result.liquidations[index] = Liquidation(
                index, tick_index, tick.time_ms, event.price, context
            )


async def _delete_keys(redis: Redis, pattern: str) -> None:
    async for key in redis.scan_iter(match=pattern, count=1000):
        await redis.delete(key)


def tick_prices(ticks: list[Tick]) -> list[Decimal]:
    """Return each tick's price on the venue's 0.5 USD tick."""
    return [lnm.quantize_price(tick.price) for tick in ticks]


__all__ = [
    "EXCHANGES",
    "PAUSED_CHECK_INTERVAL_MS",
    "AutomationLane",
    "AutomationOutcome",
    "GuardedReplay",
    "GuardedRun",
    "Liquidation",
    "MockAccountsResolver",
    "ProgressCallback",
    "tick_prices",
    "wait_until_idle",
]
