"""Guard workers against real Redis and both databases: each action reaches the exchange once.

Every test asserts on the ledger rows the worker left and on the paper venue's ``mutations``,
the list of changes the venue applied on request.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import pytest

from axisor.db.models import LedgerState, PositionStatus
from axisor.errors import RetryLaterError, StateUnknownError
from axisor.exchange.models import Balance, Side, Trade
from axisor.guard.config import GuardAction, GuardConfig
from axisor.workers.context import WorkerContext
from axisor.workers.guard_action import ClaimLostError, run_guard_action

from .guard_fixtures import CROSSING_PRICE, GuardWorld, guard_world

D = Decimal
ADDED_SATS = 50_000  # 50% of the 100,000 sats of margin of the default trade


@pytest.fixture
async def world(db, redis_url):
    async with guard_world(db, redis_url) as guarded_world:
        yield guarded_world


@pytest.fixture
async def armed(world: GuardWorld) -> tuple[Trade, int]:
    """A guarded 10x long, imported as a position, with the price now past its trigger."""
    trade, position_id = await world.open_position()
    world.venue.set_price(CROSSING_PRICE, 2_000)
    return trade, position_id


def only_ledger_row(world: GuardWorld):
    rows = world.ledger_rows()
    assert len(rows) == 1
    return rows[0]


# Add margin, once.


async def test_add_margin_once(world, armed):
    """A crossed position gets the planned margin once, confirmed in the ledger."""
    trade, position_id = armed
    job = world.action_job(position_id)

    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "margin_added"
    assert result["amount_sats"] == ADDED_SATS
    assert [m.amount_sats for m in world.mutations("add_margin", trade.id)] == [ADDED_SATS]
    row = only_ledger_row(world)
    assert row.state == LedgerState.CONFIRMED.value
    assert row.idempotency_key == job.idempotency_key
    assert row.margin_after_sats == trade.margin_sats + ADDED_SATS
    position = world.position(position_id)
    assert position.margin_sats == trade.margin_sats + ADDED_SATS
    assert position.sats_added == ADDED_SATS
    assert position.guard_actions == 1
    assert position.guard_version > job.version


async def test_rerun_after_lost_reply(world, armed):
    """A job rerun after its add_margin reply was lost settles by reconciliation, not resend."""
    trade, position_id = armed
    job = world.action_job(position_id)
    world.venue.faults.fail_after_apply_once("add_margin")

    with pytest.raises(StateUnknownError):
        await run_guard_action(world.ctx, job)
    assert only_ledger_row(world).state == LedgerState.UNKNOWN.value

    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "confirmed_by_reconciliation"
    assert len(world.mutations("add_margin", trade.id)) == 1
    row = only_ledger_row(world)
    assert row.state == LedgerState.CONFIRMED.value
    assert row.details["confirmed_by"] == "reconciliation"
    position = world.position(position_id)
    assert position.margin_sats == trade.margin_sats + ADDED_SATS
    assert position.sats_added == ADDED_SATS
    assert position.guard_version > job.version


async def test_rerun_after_success(world, armed):
    """A job rerun after it succeeded returns already_confirmed and sends nothing."""
    trade, position_id = armed
    job = world.action_job(position_id)
    await run_guard_action(world.ctx, job)

    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "already_confirmed"
    assert len(world.mutations("add_margin", trade.id)) == 1
    assert world.position(position_id).sats_added == ADDED_SATS


async def test_killed_after_claim(world, armed):
    """A row left ``sent`` by a worker killed before its call is checked, then sent once."""
    trade, position_id = armed
    job = world.action_job(position_id)
    record = world.ctx.ledger.open(
        job.idempotency_key,
        account_id=world.account_id,
        position_id=position_id,
        action=job.action,
    )
    world.ctx.ledger.claim(
        record,
        amount_sats=ADDED_SATS,
        margin_before_sats=trade.margin_sats,
        margin_after_sats=trade.margin_sats + ADDED_SATS,
    )
    assert only_ledger_row(world).state == LedgerState.SENT.value

    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "margin_added"
    assert len(world.mutations("add_margin", trade.id)) == 1
    row = only_ledger_row(world)
    assert row.state == LedgerState.CONFIRMED.value
    assert row.attempt == 2


async def test_retry_after_not_applied(world, armed):
    """A call the exchange did not apply returns the row to pending, and the retry sends once."""
    trade, position_id = armed
    job = world.action_job(position_id)
    world.venue.faults.fail_before_apply_once("add_margin")

    with pytest.raises(RetryLaterError):
        await run_guard_action(world.ctx, job)
    assert only_ledger_row(world).state == LedgerState.PENDING.value
    assert world.mutations("add_margin") == []

    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "margin_added"
    assert len(world.mutations("add_margin", trade.id)) == 1


async def test_concurrent_runs_send_once(world, armed):
    """Two workers running the same job at the same time apply it once."""
    trade, position_id = armed
    job = world.action_job(position_id)
    world.venue.faults.latency_s = 0.05

    other = WorkerContext(world.db, world.ctx.exchanges, world.ctx.redis, "other-worker")
    results = await asyncio.gather(
        run_guard_action(world.ctx, job),
        run_guard_action(other, job),
        return_exceptions=True,
    )

    assert len(world.mutations("add_margin", trade.id)) == 1
    outcomes = [r["outcome"] for r in results if isinstance(r, dict)]
    assert outcomes.count("margin_added") == 1
    assert only_ledger_row(world).state == LedgerState.CONFIRMED.value


async def test_staggered_runs_send_once(world, armed):
    """A second worker process that reaches its claim while the first is inside the exchange
    call loses the claim and sends nothing."""
    trade, position_id = armed
    job = world.action_job(position_id)
    world.venue.faults.latency_s = 0.2
    # Another process: its own context, so it does not share the per-account lock.
    other = WorkerContext(world.db, world.ctx.exchanges, world.ctx.redis, "other-worker")

    async def late_run():
        await asyncio.sleep(0.1)
        return await run_guard_action(other, job)

    first, second = await asyncio.gather(
        run_guard_action(world.ctx, job), late_run(), return_exceptions=True
    )

    assert len(world.mutations("add_margin", trade.id)) == 1
    assert first["outcome"] == "margin_added"
    assert isinstance(second, ClaimLostError)
    retried = await run_guard_action(world.ctx, job)
    assert retried["outcome"] == "already_confirmed"


class OverstatedBalance:
    """Delegates to a paper account but reports a large free balance on the first read."""

    def __init__(self, account) -> None:
        self._account = account
        self._reads = 0
        self.capabilities = account.capabilities

    def __getattr__(self, name):
        return getattr(self._account, name)

    async def get_balance(self) -> Balance:
        self._reads += 1
        balance = await self._account.get_balance()
        if self._reads == 1:
            return replace(balance, free_sats=10**9)
        return balance


async def test_replans_on_short_balance(world):
    """A balance drawn down before the call makes the worker re-plan and add what is left."""
    trade, position_id = await world.open_position(spare_sats=20_000)
    world.venue.set_price(CROSSING_PRICE, 2_000)
    world.ctx.exchanges = ReportingResolver(OverstatedBalance(world.exchange))

    result = await run_guard_action(world.ctx, world.action_job(position_id))

    assert result["outcome"] == "margin_added"
    assert result["shortfall_sats"] == ADDED_SATS - 20_000
    assert [m.amount_sats for m in world.mutations("add_margin", trade.id)] == [20_000]
    row = only_ledger_row(world)
    assert row.state == LedgerState.CONFIRMED.value
    assert row.attempt == 2
    assert row.amount_sats == 20_000


# No action for a trade that is gone or impossible.


async def test_trade_closed_on_venue(world, armed):
    """A trade closed on the exchange between ticks gets no action, and the position closes."""
    trade, position_id = armed
    world.venue.close_trade(str(world.account_id), trade.id)
    mutations_before = len(world.venue.mutations)

    result = await run_guard_action(world.ctx, world.action_job(position_id))

    assert result["outcome"] == "trade_gone"
    assert len(world.venue.mutations) == mutations_before
    assert world.mutations("add_margin") == []
    assert world.position(position_id).status == PositionStatus.CLOSED.value
    assert world.ledger_rows() == []


async def test_trade_liquidated_on_venue(world, armed):
    """A trade the venue liquidated gets no action, and the position is marked liquidated."""
    trade, position_id = armed
    job = world.action_job(position_id)
    world.venue.set_price(D(54_000), 3_000)
    assert [e.trade_id for e in world.venue.events] == [trade.id]

    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "trade_gone"
    assert [m.kind for m in world.venue.mutations] == ["open"]
    assert world.position(position_id).status == PositionStatus.LIQUIDATED.value
    assert world.ledger_rows() == []


async def test_trade_gone_fails_open_row(world, armed):
    """A row left ``sent`` for a trade that has since gone is failed, never confirmed."""
    trade, position_id = armed
    job = world.action_job(position_id)
    record = world.ctx.ledger.open(
        job.idempotency_key, account_id=world.account_id, position_id=position_id, action="x"
    )
    world.ctx.ledger.claim(record, amount_sats=ADDED_SATS, margin_after_sats=150_000)
    world.venue.close_trade(str(world.account_id), trade.id)

    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "trade_gone"
    assert world.mutations("add_margin") == []
    assert only_ledger_row(world).state == LedgerState.FAILED.value


class ReportingExchange:
    """Delegates to a paper account but reports its running trades through ``rewrite``."""

    def __init__(self, account, rewrite) -> None:
        self._account = account
        self._rewrite = rewrite
        self.capabilities = account.capabilities

    def __getattr__(self, name):
        return getattr(self._account, name)

    async def get_running_trades(self) -> list[Trade]:
        return [self._rewrite(t) for t in await self._account.get_running_trades()]


class ReportingResolver:
    def __init__(self, exchange: ReportingExchange) -> None:
        self.exchange = exchange

    async def for_account(self, account_id: int) -> ReportingExchange:
        return self.exchange


IMPOSSIBLE_LIQUIDATIONS = [
    pytest.param(D(0), "not positive", id="zero"),
    pytest.param(D(61_000), "must be below its entry price", id="above-entry"),
]


def report_liquidation(world: GuardWorld, liquidation: Decimal) -> None:
    exchange = ReportingExchange(
        world.exchange, lambda trade: replace(trade, liquidation_price=liquidation)
    )
    world.ctx.exchanges = ReportingResolver(exchange)


@pytest.mark.parametrize(("liquidation", "detail"), IMPOSSIBLE_LIQUIDATIONS)
async def test_action_impossible_trade(world, armed, liquidation, detail):
    """A trade reported with an impossible liquidation price gets no action and turns invalid."""
    _, position_id = armed
    report_liquidation(world, liquidation)

    result = await run_guard_action(world.ctx, world.action_job(position_id))

    assert result["outcome"] == "invalid_trade"
    assert world.mutations("add_margin") == []
    position = world.position(position_id)
    assert position.status == PositionStatus.INVALID.value
    assert detail in position.invalid_reason


@pytest.mark.parametrize(("liquidation", "detail"), IMPOSSIBLE_LIQUIDATIONS)
async def test_check_impossible_trade(world, armed, liquidation, detail):
    """The account check marks a position invalid when its trade reports impossible values."""
    _, position_id = armed
    report_liquidation(world, liquidation)

    result = await world.check()

    assert result["invalid"] == 1
    position = world.position(position_id)
    assert position.status == PositionStatus.INVALID.value
    assert detail in position.invalid_reason
    assert [m.kind for m in world.venue.mutations] == ["open"]


async def test_check_imports_impossible(world):
    """A new trade with impossible values is imported as an invalid position, never running."""
    report_liquidation(world, D(0))
    trade = await world.open_trade()

    result = await world.check()

    assert result["invalid"] == 1
    assert result["added"] == 0
    assert world.position_by_trade(trade.id).status == PositionStatus.INVALID.value


# Decisions made on fresh values.


async def test_price_recovered(world, armed):
    """A price back above the trigger when the job runs sends nothing and re-arms."""
    _, position_id = armed
    job = world.action_job(position_id)
    world.venue.set_price(D(58_000), 3_000)

    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "not_crossed"
    assert world.mutations("add_margin") == []
    position = world.position(position_id)
    assert position.guard_version == job.version + 1
    assert position.guard_actions == 0
    assert position.status == PositionStatus.RUNNING.value


async def test_stale_job(world, armed):
    """A job for an older trigger version is ignored."""
    _, position_id = armed
    job = world.action_job(position_id)
    world.ctx.positions.rearm(position_id, count_action=False)

    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "stale"
    assert result["current_version"] == job.version + 1
    assert world.mutations("add_margin") == []
    assert world.ledger_rows() == []


async def test_disabled_guard(world, armed):
    """A guard switched off after the crossing sends nothing."""
    _, position_id = armed
    world.configure(GuardConfig(margin_threshold=D("0.8")), enabled=False)

    result = await run_guard_action(world.ctx, world.action_job(position_id))

    assert result["outcome"] == "disabled"
    assert world.mutations("add_margin") == []


async def test_action_limit(world, armed):
    """A position that reached max_actions gets no further action."""
    _, position_id = armed
    world.configure(GuardConfig(margin_threshold=D("0.8"), max_actions=2))
    world.update_position(position_id, guard_actions=2)

    result = await run_guard_action(world.ctx, world.action_job(position_id))

    assert result["outcome"] == "action_limit"
    assert world.mutations("add_margin") == []


async def test_insufficient_funds_pauses(world):
    """With no free balance the guard records the shortfall and pauses until the next check."""
    trade, position_id = await world.open_position(spare_sats=0)
    world.venue.set_price(CROSSING_PRICE, 2_000)
    assert (await world.exchange.get_balance()).free_sats == 0

    result = await run_guard_action(world.ctx, world.action_job(position_id))

    assert result["outcome"] == "insufficient_funds"
    assert world.mutations("add_margin") == []
    row = only_ledger_row(world)
    assert row.state == LedgerState.FAILED.value
    assert row.shortfall_sats == ADDED_SATS
    position = world.position(position_id)
    assert position.guard_paused_reason is not None
    assert "balance" in position.guard_paused_reason
    assert position.guard_actions == 0
    assert [e.status for e in world.trade_log()] == ["failed"]

    check = await world.check()

    assert check["updated"] == 1
    resumed = world.position(position_id)
    assert resumed.guard_paused_reason is None
    assert resumed.guard_version > position.guard_version


async def test_budget_spent(world, armed):
    """A spent budget leaves nothing to add: no mutation and the shortfall recorded."""
    _, position_id = armed
    world.configure(GuardConfig(margin_threshold=D("0.8"), budget_sats=10_000))
    world.update_position(position_id, sats_added=10_000)

    result = await run_guard_action(world.ctx, world.action_job(position_id))

    assert result["outcome"] == "insufficient_funds"
    assert world.mutations("add_margin") == []
    assert only_ledger_row(world).shortfall_sats == ADDED_SATS


# Other actions.


async def test_close_action_once(world, armed):
    """close_position closes the trade once, even when the job runs again."""
    trade, position_id = armed
    world.configure(GuardConfig(margin_threshold=D("0.8"), action=GuardAction.CLOSE_POSITION))
    job = world.action_job(position_id, action="close_position")

    result = await run_guard_action(world.ctx, job)
    rerun = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "closed"
    assert rerun["outcome"] == "already_confirmed"
    assert len(world.mutations("close", trade.id)) == 1
    assert world.position(position_id).status == PositionStatus.CLOSED.value
    assert only_ledger_row(world).state == LedgerState.CONFIRMED.value


async def test_close_after_lost_reply(world, armed):
    """A close whose reply was lost is confirmed from the closed trades, not sent again."""
    trade, position_id = armed
    world.configure(GuardConfig(margin_threshold=D("0.8"), action=GuardAction.CLOSE_POSITION))
    job = world.action_job(position_id, action="close_position")
    world.venue.faults.fail_after_apply_once("close_trade")

    with pytest.raises(StateUnknownError):
        await run_guard_action(world.ctx, job)
    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "confirmed_by_reconciliation"
    assert len(world.mutations("close", trade.id)) == 1
    assert world.position(position_id).status == PositionStatus.CLOSED.value


async def test_notify_action(world, armed):
    """notify records the crossing and re-arms, with no change on the exchange."""
    _, position_id = armed
    world.configure(GuardConfig(margin_threshold=D("0.8"), action=GuardAction.NOTIFY))
    job = world.action_job(position_id, action="notify")

    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "notified"
    assert [m.kind for m in world.venue.mutations] == ["open"]
    assert only_ledger_row(world).state == LedgerState.CONFIRMED.value
    position = world.position(position_id)
    assert position.guard_actions == 1
    assert position.guard_version == job.version + 1


async def test_short_add_margin(world):
    """A crossed short gets margin added the same way as a long."""
    trade, position_id = await world.open_position(side=Side.SELL)
    world.venue.set_price(D(66_000), 2_000)

    result = await run_guard_action(world.ctx, world.action_job(position_id))

    assert result["outcome"] == "margin_added"
    assert len(world.mutations("add_margin", trade.id)) == 1


async def test_position_change_published(world, armed):
    """A worker that changes a position announces it on the position-events stream."""
    _, position_id = armed
    before = await world.ctx.redis.xlen(world.ctx.events_stream)

    await run_guard_action(world.ctx, world.action_job(position_id))

    events = await world.ctx.redis.xrange(world.ctx.events_stream)
    assert len(events) > before
    assert events[-1][1][b"position_id"] == str(position_id).encode()
