"""The automation lane of the guarded replay: the automation mix's accounts, engine, queue and
worker, and the outcome it records."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from bullmq import Queue
from redis.asyncio import Redis
from sqlalchemy import select

from axisor.automations.engine import AutomationEngine, automation_events_stream
from axisor.automations.store import create_automation, trade_closed
from axisor.db.models import Position
from axisor.exchange.models import OpenTradeRequest, TradeEvent
from axisor.plans import PlanLimitError
from axisor.queue.names import AUTOMATION_QUEUE
from axisor.simulation.queues import wait_until_idle
from axisor.simulation.scenario import PlannedAutomation
from axisor.workers.runner import start_worker

if TYPE_CHECKING:
    from axisor.simulation.runner import GuardedReplay


@dataclass
class AutomationOutcome:
    """Results of the automation mix. Its trades live on a second linked account per user, so
    they never share a balance with the guarded positions."""

    account_ids: dict[int, int] = field(default_factory=dict)  # scenario account → account id
    automation_ids: dict[int, int] = field(default_factory=dict)  # planned index → id
    rejected: dict[int, str] = field(default_factory=dict)  # planned index → plan limit
    venue_fills: Counter = field(default_factory=Counter)  # close reason → fills
    jobs_queued: Counter = field(default_factory=Counter)  # automation type → jobs


class AutomationLane:
    """The automation mix of a replay: its accounts, engine, queue and worker.

    Each tick, after the guard has settled, the automation engine queues its crossings on the
    automation-execute queue and the replay waits for the worker, as it does for the guard.
    """

    def __init__(self, replay: GuardedReplay, ctx, redis: Redis, stream: str, accounts) -> None:
        self.replay = replay
        self.ctx = ctx
        self.redis = redis
        self.events_stream = automation_events_stream(stream)
        self.outcome = AutomationOutcome(account_ids=dict(accounts))
        self._venue_accounts = {str(account_id) for account_id in accounts.values()}
        self._by_tick: dict[int, list[PlannedAutomation]] = {}
        for planned in replay.planned_automations:
            self._by_tick.setdefault(planned.open_tick, []).append(planned)
        options = {"connection": replay.redis_url, "prefix": replay.prefix}
        self.queue = Queue(AUTOMATION_QUEUE, options)
        self.engine = AutomationEngine(
            replay.database, redis, self.queue, self.events_stream, stream
        )
        self.worker = None

    async def start(self) -> None:
        self.worker = start_worker(
            self.ctx,
            self.replay.redis_url,
            queue=AUTOMATION_QUEUE,
            concurrency=self.replay.concurrency,
            timeout_ms=self.replay.timeout_ms,
            prefix=self.replay.prefix,
        )
        await self.engine.rebuild()

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.close()
        await self.queue.obliterate(force=True)
        await self.queue.close()
        self.outcome.jobs_queued = Counter(self.engine.jobs_queued)

    def owns(self, venue_account_id: str) -> bool:
        return venue_account_id in self._venue_accounts

    async def settle(self, price: Decimal, time_ms: int, received_ns: int) -> None:
        """Queue crossed automation levels, wait for the worker, re-arm, until none cross."""
        await self.engine.apply_events()
        while await self.engine.on_tick(price, time_ms, received_ns):
            await wait_until_idle(self.queue)
            await self.engine.apply_events()

    async def open_due(self, tick_index: int, guard_queue: Queue, guard_engine, tick) -> None:
        """Open the trades of the automations due at this tick and create the automations."""
        due = self._by_tick.get(tick_index)
        if not due:
            return
        trades = {planned.index: await self._fund(planned) for planned in due}
        accounts = {self.outcome.account_ids[planned.account_index] for planned in due}
        await self.replay._check_accounts(accounts, guard_queue, guard_engine, tick)
        created = [
            await asyncio.to_thread(self._create, planned, trades[planned.index]) for planned in due
        ]
        await self.engine.refresh({automation_id for automation_id in created if automation_id})
        await wait_until_idle(self.queue)
        await self.engine.apply_events()

    async def _fund(self, planned: PlannedAutomation) -> str | None:
        """Deposit what the automation needs and open its target trade; return the trade id."""
        account = str(self.outcome.account_ids[planned.account_index])
        venue = self.replay.venue
        if planned.type == "auto_entry":
            venue.deposit(account, planned.deposit_sats)
            return None
        venue.deposit(account, planned.opening_cost_sats)
        request = OpenTradeRequest(
            side=planned.side, leverage=Decimal(planned.leverage), quantity_usd=planned.quantity_usd
        )
        return (await venue.account(account).open_trade(request)).id

    def _create(self, planned: PlannedAutomation, trade_id: str | None) -> int | None:
        """Create the automation; return its id, or None when the user's plan rejects it."""
        account_id = self.outcome.account_ids[planned.account_index]
        position_id = None
        if trade_id is not None:
            with self.replay.database.session() as session:
                position_id = session.scalar(
                    select(Position.id).where(Position.trade_id == trade_id)
                )
        try:
            automation_id = create_automation(
                self.replay.database,
                account_id,
                planned.type,
                planned.config,
                position_id=position_id,
            )
        except PlanLimitError as exc:
            self.outcome.rejected[planned.index] = exc.limit
            return None
        self.outcome.automation_ids[planned.index] = automation_id
        return automation_id

    async def venue_event(self, event: TradeEvent) -> None:
        """Apply a fill on an automation account: close its position, disarm its automations."""
        self.outcome.venue_fills[event.reason.value] += 1
        account_id = int(event.account_id)
        await asyncio.to_thread(self._close_position, account_id, event)
        await asyncio.to_thread(
            trade_closed, self.replay.database, account_id, event.trade_id, event.reason
        )

    def _close_position(self, account_id: int, event: TradeEvent) -> None:
        with self.replay.database.session() as session:
            position_id = session.scalar(
                select(Position.id).where(
                    Position.account_id == account_id, Position.trade_id == event.trade_id
                )
            )
        if position_id is not None:
            self.replay.positions.mark_closed(position_id, event.reason)
