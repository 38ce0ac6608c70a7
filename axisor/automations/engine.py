"""The automation engine: armed automation levels in sorted lists, crossings turned into jobs.

Each armed automation is one level that fires when a price rises to it (``above``) or falls to
it (``below``). Levels sit in sorted lists per price kind (last or index) and direction, so a
tick reads only the crossed end of each list: O(log n + k) for k crossings. A trailing stop the
engine enforces also sits in a list sorted by its best price, so that a tick visits only the
stops whose best price it beats.

What each type arms:

- take_profit: one level, from ``price_usd`` or from the price at which the P&L reaches
  ``pnl_percent`` of the margin. A long fires at or above it, a short at or below.
- stop_loss on the engine: a fixed level, or a trailing level that follows the best price (the
  highest for a long, the lowest for a short) and never moves back. A long fires at or below
  it. A stop already crossed when armed fires on the first tick, once.
- stop_loss on the exchange: no level. The engine queues one ``place_stoploss`` job per arming
  and the venue fills the stop.
- auto_entry: a crossing. The level is primed once the price is strictly on the other side of
  it, then fires when the price reaches it. Firing needs a crossing, so an entry armed while
  the price is already past its level waits for the price to come back and cross.

A fired level leaves the lists. The worker records the fire, and the automation is armed again
only with a new version (after ``arm``, or after an auto entry's cooldown).
"""

from __future__ import annotations

import asyncio
import heapq
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from math import ceil, floor

import structlog
from bullmq import Queue
from redis.asyncio import Redis
from sortedcontainers import SortedList

from axisor.automations.config import (
    AutoEntryConfig,
    AutomationType,
    Crossing,
    StopLossConfig,
    StopPlacement,
    TakeProfitConfig,
    TriggerOn,
)
from axisor.automations.store import StoredAutomation, load_active, record_best_prices
from axisor.db.models import Position, PositionStatus
from axisor.db.session import Database
from axisor.engine.events import STREAM_MAX_LEN, PositionEventReader, StreamIdReader
from axisor.exchange.math import SATS_PER_BTC
from axisor.exchange.models import Side
from axisor.queue.jobs import AutomationJob, job_options
from axisor.queue.names import AUTOMATION_EVENTS_STREAM, AUTOMATION_JOB, POSITION_EVENTS_STREAM

log = structlog.get_logger("axisor.automations.engine")

# Wall-clock seconds between writes of trailing stops' best prices; a restarted engine trails
# from the last stored best price, at most this old.
TRAIL_STORE_INTERVAL_S = 5.0

CENT = Decimal("0.01")
# Stops run before take profits, and both before entries.
PRIORITIES = {
    AutomationType.STOP_LOSS: 1,
    AutomationType.TAKE_PROFIT: 2,
    AutomationType.AUTO_ENTRY: 3,
}


@dataclass(frozen=True, slots=True)
class LevelTrigger:
    """One armed level. ``strict`` levels fire only strictly past the level (auto entry priming).

    ``action`` is the job's action, or ``prime`` for a level that arms the auto entry's fire.
    """

    automation_id: int
    account_id: int
    type: AutomationType
    version: int
    action: str
    crossing: Crossing
    level: Decimal
    trigger_on: TriggerOn
    strict: bool = False


@dataclass
class TrailingStop:
    """A trailing stop the engine enforces; ``best_price`` is None until the first tick."""

    trigger: LevelTrigger
    distance_usd: Decimal | None
    percent: Decimal | None
    best_price: Decimal | None = None

    @property
    def long(self) -> bool:
        return self.trigger.crossing is Crossing.BELOW

    def level_for(self, best_price: Decimal) -> Decimal:
        """Return the stop level at ``best_price``: below it for a long, above for a short."""
        if self.distance_usd is not None:
            offset = self.distance_usd
        else:
            offset = (best_price * self.percent / 100).quantize(CENT, ROUND_HALF_UP)
        return best_price - offset if self.long else best_price + offset

    def move_to(self, best_price: Decimal) -> None:
        """Follow a new best price: the level moves with it, but never back."""
        level = self.level_for(best_price)
        if self.best_price is not None:
            current = self.trigger.level
            level = max(current, level) if self.long else min(current, level)
        self.best_price = best_price
        self.trigger = replace(self.trigger, level=level)


class LevelIndex:
    """Armed levels by automation id, in one sorted list per price kind, direction and
    strictness."""

    def __init__(self) -> None:
        self._by_id: dict[int, LevelTrigger] = {}
        self._lists: dict[tuple[TriggerOn, Crossing, bool], SortedList] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, automation_id: int) -> bool:
        return automation_id in self._by_id

    def get(self, automation_id: int) -> LevelTrigger | None:
        return self._by_id.get(automation_id)

    def arm(self, trigger: LevelTrigger) -> None:
        """Add the level, replacing any earlier one of the same automation."""
        self.disarm(trigger.automation_id)
        self._by_id[trigger.automation_id] = trigger
        self._list(trigger).add((trigger.level, trigger.automation_id))

    def disarm(self, automation_id: int) -> LevelTrigger | None:
        trigger = self._by_id.pop(automation_id, None)
        if trigger is not None:
            self._list(trigger).remove((trigger.level, automation_id))
        return trigger

    def pop_crossed(self, trigger_on: TriggerOn, price: Decimal) -> list[LevelTrigger]:
        """Remove and return every level of ``trigger_on`` that ``price`` reaches."""
        crossed: list[LevelTrigger] = []
        for (kind, crossing, strict), levels in self._lists.items():
            if kind is trigger_on:
                crossed += [self._by_id[i] for _, i in _crossed(levels, crossing, strict, price)]
        for trigger in crossed:
            self.disarm(trigger.automation_id)
        return crossed

    def _list(self, trigger: LevelTrigger) -> SortedList:
        key = (trigger.trigger_on, trigger.crossing, trigger.strict)
        return self._lists.setdefault(key, SortedList())


def _crossed(levels: SortedList, crossing: Crossing, strict: bool, price: Decimal) -> list:
    """Return the entries of ``levels`` that ``price`` reaches (passes, when ``strict``)."""
    low, high = (price, -1), (price, sys.maxsize)
    if crossing is Crossing.ABOVE:
        stop = levels.bisect_left(low) if strict else levels.bisect_right(high)
        return list(levels.islice(0, stop))
    start = levels.bisect_right(high) if strict else levels.bisect_left(low)
    return list(levels.islice(start))


class TrailingBook:
    """Trailing stops of one price kind, sorted by best price, so a tick finds new bests fast."""

    def __init__(self) -> None:
        self.stops: dict[int, TrailingStop] = {}
        self._longs: SortedList = SortedList()  # (best_price, id): a higher price moves them
        self._shorts: SortedList = SortedList()  # a lower price moves them
        self._unstarted: set[int] = set()

    def add(self, stop: TrailingStop) -> None:
        self.remove(stop.trigger.automation_id)
        self.stops[stop.trigger.automation_id] = stop
        self._place(stop)

    def remove(self, automation_id: int) -> TrailingStop | None:
        stop = self.stops.pop(automation_id, None)
        if stop is None:
            return None
        self._unstarted.discard(automation_id)
        if stop.best_price is not None:
            self._side(stop).remove((stop.best_price, automation_id))
        return stop

    def follow(self, price: Decimal) -> list[TrailingStop]:
        """Move the best price of every stop that ``price`` beats; return the moved stops."""
        moved = [self.stops[i] for _, i in self._longs.irange(maximum=(price, -1))]
        start = self._shorts.bisect_right((price, sys.maxsize))
        moved += [self.stops[i] for _, i in self._shorts.islice(start)]
        moved += [self.stops[i] for i in self._unstarted]
        for stop in moved:
            self.remove(stop.trigger.automation_id)
            stop.move_to(price)
            self.add(stop)
        return moved

    def _place(self, stop: TrailingStop) -> None:
        if stop.best_price is None:
            self._unstarted.add(stop.trigger.automation_id)
        else:
            self._side(stop).add((stop.best_price, stop.trigger.automation_id))

    def _side(self, stop: TrailingStop) -> SortedList:
        return self._longs if stop.long else self._shorts


@dataclass
class Armed:
    """The engine's part of one active automation: a level, a trailing stop, a cooldown end
    time, or a placement job."""

    level: LevelTrigger | None = None
    trailing: TrailingStop | None = None
    cooldown_until_ms: int | None = None
    placement: AutomationJob | None = None


def plan_arming(stored: StoredAutomation, position: Position | None) -> Armed | None:
    """Return what to arm for the automation, or None when it must stay idle."""
    if not stored.active:
        return None
    if stored.type is AutomationType.AUTO_ENTRY:
        return _arm_entry(stored)
    if position is None or position.status != PositionStatus.RUNNING.value:
        return None
    if stored.type is AutomationType.TAKE_PROFIT:
        level = _take_profit(stored, position)
        return None if level is None else Armed(level=level)
    return _arm_stop(stored, position)


def _base(stored: StoredAutomation, action: str, crossing: Crossing, level: Decimal):
    return LevelTrigger(
        automation_id=stored.id,
        account_id=stored.account_id,
        type=stored.type,
        version=stored.state.version,
        action=action,
        crossing=crossing,
        level=level,
        trigger_on=stored.config.trigger_on,
    )


def _take_profit(stored: StoredAutomation, position: Position) -> LevelTrigger | None:
    config: TakeProfitConfig = stored.config
    side = Side(position.side)
    level = config.price_usd
    if level is None:
        target_sats = ceil(Fraction(position.margin_sats) * Fraction(config.pnl_percent) / 100)
        level = pnl_target_price(side, position.quantity_usd, position.entry_price, target_sats)
    if level is None:
        return None
    crossing = Crossing.ABOVE if side is Side.BUY else Crossing.BELOW
    return _base(stored, config.action.value, crossing, level)


def _arm_stop(stored: StoredAutomation, position: Position) -> Armed | None:
    config: StopLossConfig = stored.config
    state = stored.state
    if state.placement == StopPlacement.EXCHANGE.value:
        if state.placed_version == state.version:
            return None  # the venue keeps this arming's stop
        return Armed(placement=_placement_job(stored))
    crossing = Crossing.BELOW if Side(position.side) is Side.BUY else Crossing.ABOVE
    if not config.trailing:
        return Armed(level=_base(stored, "close", crossing, config.price_usd))
    stop = TrailingStop(
        trigger=_base(stored, "close", crossing, Decimal(0)),
        distance_usd=config.trailing_distance_usd,
        percent=config.trailing_percent,
    )
    if state.best_price_usd is not None:
        stop.move_to(state.best_price_usd)
    return Armed(trailing=stop)


def _arm_entry(stored: StoredAutomation) -> Armed:
    config: AutoEntryConfig = stored.config
    opposite = Crossing.BELOW if config.trigger is Crossing.ABOVE else Crossing.ABOVE
    prime = replace(_base(stored, "prime", opposite, config.price_usd), strict=True)
    return Armed(level=prime, cooldown_until_ms=stored.state.cooldown_until_ms)


def _placement_job(stored: StoredAutomation) -> AutomationJob:
    return AutomationJob(
        automation_id=stored.id,
        account_id=stored.account_id,
        version=stored.state.version,
        action="place_stoploss",
    )


def pnl_target_price(
    side: Side, quantity_usd: int, entry_price: Decimal, target_sats: int
) -> Decimal | None:
    """Return the price in USD per BTC, to the cent, at which the trade's P&L reaches
    ``target_sats``; None when a long can never reach it.

    The P&L formulas are those of ``axisor.exchange.math.pnl_sats``. The price is rounded away
    from the entry, so the P&L at it is at least the target.
    """
    notional = Fraction(quantity_usd * SATS_PER_BTC)
    if side is Side.BUY:
        inverse = 1 / Fraction(entry_price) - Fraction(target_sats) / notional
    else:
        inverse = 1 / Fraction(entry_price) + Fraction(target_sats) / notional
    if inverse <= 0:
        return None
    cents = (1 / inverse) * 100
    rounded = ceil(cents) if side is Side.BUY else floor(cents)
    return Decimal(rounded).scaleb(-2)


@dataclass
class TickPrices:
    """The prices of one tick by kind; a feed without an index price leaves it None."""

    last: Decimal
    index: Decimal | None = None

    def by_kind(self) -> dict[TriggerOn, Decimal]:
        prices = {TriggerOn.LAST: self.last}
        if self.index is not None:
            prices[TriggerOn.INDEX] = self.index
        return prices


@dataclass
class _Fire:
    trigger: LevelTrigger
    price: Decimal


class AutomationEvents(StreamIdReader):
    """Reads automation-changed events from their stream, from where it was at ``start``."""

    def __init__(self, redis: Redis, stream: str = AUTOMATION_EVENTS_STREAM) -> None:
        super().__init__(redis, stream, "automation_id")


def automation_events_stream(position_stream: str) -> str:
    """Return the automation events stream that goes with a position events stream: the default
    one for the default, else ``<position_stream>:automations`` (a replay's own prefix)."""
    if position_stream == POSITION_EVENTS_STREAM:
        return AUTOMATION_EVENTS_STREAM
    return f"{position_stream}:automations"


async def publish_automation_changed(
    redis: Redis, automation_id: int, stream: str = AUTOMATION_EVENTS_STREAM
) -> None:
    """Announce that an automation was written, armed, disarmed or fired."""
    await redis.xadd(
        stream, {"automation_id": str(automation_id)}, maxlen=STREAM_MAX_LEN, approximate=True
    )


class AutomationEngine:
    """Owns the armed levels; ``on_tick`` queues one automation-execute job per crossed level.

    It re-reads the automations that workers announce on ``events_stream``, and those acting
    on positions announced on ``position_stream``.
    """

    def __init__(
        self,
        database: Database,
        redis: Redis,
        queue: Queue,
        events_stream: str = AUTOMATION_EVENTS_STREAM,
        position_stream: str = POSITION_EVENTS_STREAM,
    ) -> None:
        self.database = database
        self.queue = queue
        self.levels = LevelIndex()
        self.trailing = {kind: TrailingBook() for kind in TriggerOn}
        # Trailing stops whose best price moved since it was last stored: id -> (version, price).
        self._moved_trails: dict[int, tuple[int, Decimal]] = {}
        self._trails_stored_s = time.monotonic()
        self.events = AutomationEvents(redis, events_stream)
        self.position_events = PositionEventReader(redis, position_stream)
        self.jobs_queued: Counter[str] = Counter()
        self.last_tick_ms: int | None = None
        self._cooling: list[tuple[int, int]] = []  # heap of (until_ms, automation id)
        self._cooling_armed: dict[int, Armed] = {}
        self._by_position: dict[int, set[int]] = {}

    async def rebuild(self) -> int:
        """Arm every active automation from the database; return how many were loaded."""
        await self.events.start()
        await self.position_events.start()
        loaded = await asyncio.to_thread(self._load, None)
        self.levels = LevelIndex()
        self.trailing = {kind: TrailingBook() for kind in TriggerOn}
        self._cooling, self._cooling_armed, self._by_position = [], {}, {}
        await self._arm_all(loaded)
        log.info("automation index rebuilt", armed=len(self.levels), loaded=len(loaded))
        return len(loaded)

    async def apply_events(self, block_ms: int | None = None) -> int:
        """Re-read the automations changed since the last read, and re-arm or disarm them."""
        changed = await self.events.read(block_ms)
        positions = await self.position_events.read()
        changed |= {i for p in positions for i in self._by_position.get(p, ())}
        if changed:
            await self.refresh(changed)
        return len(changed)

    async def refresh(self, automation_ids: set[int]) -> None:
        loaded = await asyncio.to_thread(self._load, sorted(automation_ids))
        for automation_id in automation_ids:
            self._forget(automation_id)
        await self._arm_all(loaded)

    async def on_tick(
        self,
        price: Decimal,
        time_ms: int,
        received_ns: int,
        index_price: Decimal | None = None,
    ) -> list[AutomationJob]:
        """Queue a job for every level the tick crosses and return the jobs."""
        self.last_tick_ms = time_ms
        self._end_cooldowns(time_ms)
        fires: list[_Fire] = []
        for kind, kind_price in TickPrices(price, index_price).by_kind().items():
            fires += self._cross(kind, kind_price)
        jobs = [_fire_job(fire, time_ms, received_ns) for fire in fires]
        await self._queue(jobs, [fire.trigger.type for fire in fires])
        if time.monotonic() - self._trails_stored_s >= TRAIL_STORE_INTERVAL_S:
            await self.store_trails()
        return jobs

    async def store_trails(self) -> int:
        """Write the moved best prices of trailing stops; return how many rows were written."""
        moved, self._moved_trails = self._moved_trails, {}
        self._trails_stored_s = time.monotonic()
        if not moved:
            return 0
        return await asyncio.to_thread(record_best_prices, self.database, moved)

    def _cross(self, kind: TriggerOn, price: Decimal) -> list[_Fire]:
        fires = []
        for trigger in self.levels.pop_crossed(kind, price):
            if trigger.action == "prime":
                self.levels.arm(_fire_level(trigger))
                continue
            self.trailing[kind].remove(trigger.automation_id)
            fires.append(_Fire(trigger, price))
        for stop in self.trailing[kind].follow(price):
            self.levels.arm(stop.trigger)
            self._moved_trails[stop.trigger.automation_id] = (stop.trigger.version, price)
        return fires

    def _end_cooldowns(self, time_ms: int) -> None:
        while self._cooling and self._cooling[0][0] <= time_ms:
            _, automation_id = heapq.heappop(self._cooling)
            armed = self._cooling_armed.pop(automation_id, None)
            if armed is not None:
                self.levels.arm(armed.level)

    async def _arm_all(self, loaded: list[tuple[StoredAutomation, Position | None]]) -> None:
        placements = []
        for stored, position in loaded:
            armed = plan_arming(stored, position)
            if stored.state.position_id is not None:
                self._by_position.setdefault(stored.state.position_id, set()).add(stored.id)
            if armed is not None and armed.placement is not None:
                placements.append(armed.placement)
            elif armed is not None:
                self._arm(stored.id, armed)
        await self._queue(placements, [AutomationType.STOP_LOSS] * len(placements))

    def _arm(self, automation_id: int, armed: Armed) -> None:
        if self._cooling_down(armed):
            self._cooling_armed[automation_id] = armed
            heapq.heappush(self._cooling, (armed.cooldown_until_ms, automation_id))
            return
        if armed.trailing is not None:
            stop = armed.trailing
            self.trailing[stop.trigger.trigger_on].add(stop)
            if stop.best_price is not None:
                self.levels.arm(stop.trigger)
            return
        self.levels.arm(armed.level)

    def _cooling_down(self, armed: Armed) -> bool:
        until_ms = armed.cooldown_until_ms
        if until_ms is None:
            return False
        return self.last_tick_ms is None or self.last_tick_ms < until_ms

    def _forget(self, automation_id: int) -> None:
        self.levels.disarm(automation_id)
        self._cooling_armed.pop(automation_id, None)
        for book in self.trailing.values():
            book.remove(automation_id)

    async def _queue(self, jobs: list[AutomationJob], types: list[AutomationType]) -> None:
        if not jobs:
            return
        entries = [
            {
                "name": AUTOMATION_JOB,
                "data": job.model_dump(mode="json"),
                "opts": job_options(job.job_id, PRIORITIES[kind]),
            }
            for job, kind in zip(jobs, types, strict=True)
        ]
        await self.queue.addBulk(entries)
        self.jobs_queued.update(kind.value for kind in types)

    def _load(self, ids: list[int] | None) -> list[tuple[StoredAutomation, Position | None]]:
        with self.database.session() as session:
            loaded = load_active(session, ids)
            session.expunge_all()
            return loaded


def _fire_level(prime: LevelTrigger) -> LevelTrigger:
    """Return the auto entry's firing level once its priming level was passed."""
    crossing = Crossing.ABOVE if prime.crossing is Crossing.BELOW else Crossing.BELOW
    return replace(prime, action="open", crossing=crossing, strict=False)


def _fire_job(fire: _Fire, time_ms: int, received_ns: int) -> AutomationJob:
    trigger = fire.trigger
    return AutomationJob(
        automation_id=trigger.automation_id,
        account_id=trigger.account_id,
        version=trigger.version,
        action=trigger.action,
        trigger_price=trigger.level,
        tick_price=fire.price,
        tick_time_ms=time_ms,
        tick_received_ns=received_ns,
    )
