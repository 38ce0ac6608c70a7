"""The margin-guard-action job: act once on a position whose trigger the engine saw crossed.

Order of work:
1. Read the ledger. A finished action is never repeated.
2. Re-read the trade from the exchange. A vanished or impossible trade gets no action.
3. Settle an earlier attempt whose outcome is unknown.
4. Check the trigger against the fresh values.
5. Claim the ledger row, then call the exchange. The claim commits before the call, so a crash
   after it leaves evidence that the next attempt reconciles.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal

from axisor.db.models import LedgerState
from axisor.errors import (
    AuthenticationError,
    InsufficientFundsError,
    InvalidExchangeDataError,
    RejectedError,
    RetryLaterError,
    StateUnknownError,
)
from axisor.exchange.models import CloseReason, Trade
from axisor.exchange.protocol import Exchange, find_running_trade
from axisor.guard.config import GuardAction, check_reduce_supported
from axisor.guard.policy import (
    MarginPlan,
    is_crossed,
    plan_add_margin,
    trigger_price,
    validate_trade,
)
from axisor.guard.positions import GuardedPosition
from axisor.ledger import LedgerRecord
from axisor.queue.jobs import GuardActionJob
from axisor.workers.context import WorkerContext


class ClaimLostError(RetryLaterError):
    """Another attempt claimed the ledger row first; this one retries and then finds its outcome."""


@dataclass
class ActionRun:
    """State of one attempt of one job."""

    ctx: WorkerContext
    job: GuardActionJob
    record: LedgerRecord | None = None
    guarded: GuardedPosition | None = None
    exchange: Exchange | None = None

    @property
    def key(self) -> str:
        return self.job.idempotency_key

    def outcome(self, name: str, **extra) -> dict:
        return {"outcome": name, "position_id": self.job.position_id, **extra}


async def run_guard_action(ctx: WorkerContext, job: GuardActionJob) -> dict:
    """Carry out the job and return its outcome; raise only when BullMQ should retry it."""
    async with ctx.account_lock(job.account_id):
        return await _run_locked(ActionRun(ctx, job))


async def _run_locked(run: ActionRun) -> dict:
    ctx, job = run.ctx, run.job
    run.record = await ctx.db(ctx.ledger.get, run.key)
    if run.record is not None and run.record.final:
        return run.outcome(f"already_{run.record.state.value}")

    run.guarded = await ctx.db(ctx.positions.load, job.position_id)
    if run.guarded is None:
        return await _abandon(run, "not_guarded", "position is not running or has no guard")
    if run.record is None and run.guarded.position.guard_version != job.version:
        return run.outcome("stale", current_version=run.guarded.position.guard_version)

    run.exchange = await ctx.exchanges.for_account(job.account_id)
    trade = await find_running_trade(run.exchange, run.guarded.position.trade_id)
    if run.record is not None and run.record.state in (LedgerState.SENT, LedgerState.UNKNOWN):
        settled = await _settle_earlier_attempt(run, trade)
        if settled is not None:
            return settled
    if trade is None:
        return await _trade_gone(run)
    return await _decide(run, trade)


async def _decide(run: ActionRun, trade: Trade) -> dict:
    ctx, guarded = run.ctx, run.guarded
    try:
        validate_trade(trade)
    except InvalidExchangeDataError as exc:
        await ctx.db(ctx.positions.mark_invalid, guarded.position.id, exc)
        await ctx.position_changed(guarded.position.id)
        ctx.log.error("trade rejected as invalid", position_id=guarded.position.id, error=str(exc))
        return await _abandon(run, "invalid_trade", str(exc), notify_engine=False)

    await ctx.db(ctx.positions.refresh_from_trade, guarded.position.id, trade)
    price = (await run.exchange.get_ticker()).last_price
    trigger = trigger_price(
        trade.side, trade.entry_price, trade.liquidation_price, guarded.config.margin_threshold
    )
    if not guarded.enabled:
        return await _abandon(run, "disabled", "the guard is disabled for this position")
    if not is_crossed(trade.side, price, trigger):
        await ctx.db(ctx.positions.rearm, guarded.position.id, count_action=False)
        return await _abandon(run, "not_crossed", f"price {price} no longer crosses {trigger}")
    if guarded.position.guard_actions >= guarded.config.max_actions:
        limit = guarded.config.max_actions
        return await _abandon(run, "action_limit", f"the guard already acted {limit} times")
    return await _act(run, trade, price)


async def _act(run: ActionRun, trade: Trade, price: Decimal) -> dict:
    action = run.guarded.config.action
    if action is GuardAction.ADD_MARGIN:
        return await _add_margin(run, trade, price)
    if action is GuardAction.CLOSE_POSITION:
        return await _close(run, trade, price)
    if action is GuardAction.NOTIFY:
        return await _notify(run, trade, price)
    # Every tracked position is an isolated trade, so reduce_position raises here on LN Markets.
    check_reduce_supported(run.guarded.config, run.exchange.capabilities, cross=False)
    return await _abandon(run, "not_supported", f"{action.value} is not implemented")


# How often one attempt re-reads the balance after the exchange reports it short, which
# happens when another position of the same account drew on it in the meantime.
FUNDS_REPLANS = 3


async def _add_margin(run: ActionRun, trade: Trade, price: Decimal) -> dict:
    for _ in range(FUNDS_REPLANS):
        plan = await _plan(run, trade, price)
        if plan.amount_sats == 0:
            return await _unfunded(run, plan, price)
        await _claim(
            run,
            price,
            amount_sats=plan.amount_sats,
            shortfall_sats=plan.shortfall_sats,
            details={"limited_by": plan.limited_by},
            margin_before_sats=trade.margin_sats,
            margin_after_sats=trade.margin_sats + plan.amount_sats,
        )
        try:
            updated = await _call(run, run.exchange.add_margin(trade.id, plan.amount_sats))
        except InsufficientFundsError as exc:
            await run.ctx.db(run.ctx.ledger.release, run.key, str(exc))
            run.record = await run.ctx.db(run.ctx.ledger.get, run.key)
            continue
        if isinstance(updated, dict):
            return updated
        return await _margin_added(run, plan, updated, price)
    raise RetryLaterError(f"free balance kept changing while adding margin ({run.key})")


async def _plan(run: ActionRun, trade: Trade, price: Decimal) -> MarginPlan:
    balance = await run.exchange.get_balance()
    added = run.guarded.position.sats_added
    return plan_add_margin(run.guarded.config, trade, price, balance.free_sats, added)


async def _margin_added(run: ActionRun, plan: MarginPlan, updated: Trade, price: Decimal) -> dict:
    ctx, position = run.ctx, run.guarded.position
    await ctx.db(
        ctx.positions.record_margin_added,
        position.id,
        position.user_id,
        updated,
        plan.amount_sats,
        price,
        ledger_key=run.key,
        ledger_details={"margin_after_sats": updated.margin_sats},
    )
    await ctx.position_changed(position.id)
    await _tell(
        run,
        "action",
        "add_margin",
        f"Margin Guard added {plan.amount_sats:,} sats at {price} USD; liquidation is now "
        f"{updated.liquidation_price} USD",
        amount_sats=plan.amount_sats,
        price=str(price),
    )
    return run.outcome(
        "margin_added", amount_sats=plan.amount_sats, shortfall_sats=plan.shortfall_sats
    )


async def _unfunded(run: ActionRun, plan: MarginPlan, price: Decimal) -> dict:
    """Record that no sats could be added; the guard pauses until the next account check."""
    ctx, position = run.ctx, run.guarded.position
    reason = f"needed {plan.needed_sats} sats, the {plan.limited_by} limit allows none"
    await _open_record(run, price)
    await ctx.db(
        ctx.ledger.fail, run.key, reason, {"limited_by": plan.limited_by}, plan.shortfall_sats
    )
    await ctx.db(ctx.positions.record_failure, position.id, "add_margin", reason, True)
    await ctx.position_changed(position.id)
    ctx.log.critical(
        "protective action impossible",
        position_id=position.id,
        needed_sats=plan.needed_sats,
        limited_by=plan.limited_by,
    )
    await _tell(
        run,
        "failure",
        "add_margin",
        f"Margin Guard could not add margin at {price} USD: {reason}; deposit sats or "
        "raise the budget",
        needed_sats=plan.needed_sats,
    )
    return run.outcome("insufficient_funds", shortfall_sats=plan.shortfall_sats)


async def _close(run: ActionRun, trade: Trade, price: Decimal) -> dict:
    ctx, position = run.ctx, run.guarded.position
    await _claim(run, price, amount_sats=0, margin_before_sats=trade.margin_sats)
    closed = await _call(run, run.exchange.close_trade(trade.id))
    if isinstance(closed, dict):
        return closed
    await ctx.db(
        ctx.positions.record_closed_by_guard,
        position.id,
        position.user_id,
        price,
        ledger_key=run.key,
        ledger_details={"pnl_sats": closed.pnl_sats},
    )
    await ctx.position_changed(position.id)
    await _tell(
        run,
        "action",
        "close_position",
        f"Margin Guard closed the trade at {price} USD; P&L {closed.pnl_sats:,} sats",
        pnl_sats=closed.pnl_sats,
    )
    return run.outcome("closed", pnl_sats=closed.pnl_sats)


async def _notify(run: ActionRun, trade: Trade, price: Decimal) -> dict:
    ctx, position = run.ctx, run.guarded.position
    await _claim(run, price, amount_sats=0)
    await ctx.db(ctx.ledger.confirm, run.key, {"notified": True, "price": str(price)})
    await ctx.db(ctx.positions.rearm, position.id, count_action=True)
    await ctx.position_changed(position.id)
    ctx.log.warning(
        "margin guard threshold crossed",
        position_id=position.id,
        price=str(price),
        liquidation_price=str(trade.liquidation_price),
    )
    await _tell(
        run,
        "action",
        "notify",
        f"Margin Guard threshold crossed at {price} USD; liquidation at "
        f"{trade.liquidation_price} USD",
        price=str(price),
    )
    return run.outcome("notified")


async def _tell(run: ActionRun, kind: str, action: str, message: str, **details) -> None:
    """Notify the position's owner of an action or a failure when the worker has a notifier."""
    notifier = run.ctx.notifier
    if notifier is None or run.guarded is None:
        return
    position = run.guarded.position
    values = {"position_id": position.id, "trade_id": position.trade_id, **details}
    if kind == "failure":
        await notifier.failure(position.user_id, action, message, values)
    else:
        await notifier.action(position.user_id, action, message, values)


def _record_fields(run: ActionRun, price: Decimal) -> dict:
    job = run.job
    return {
        "account_id": job.account_id,
        "position_id": job.position_id,
        "action": run.guarded.config.action.value,
        "trigger_price": job.trigger_price,
        "tick_price": price,
        "tick_received_ns": job.tick_received_ns,
        "details": {"tick_time_ms": job.tick_time_ms},
    }


async def _open_record(run: ActionRun, price: Decimal) -> LedgerRecord:
    if run.record is None:
        run.record = await run.ctx.db(run.ctx.ledger.open, run.key, **_record_fields(run, price))
    return run.record


async def _claim(run: ActionRun, price: Decimal, **values) -> None:
    """Claim the ledger row before the exchange call; a first attempt inserts it claimed."""
    ledger = run.ctx.ledger
    if run.record is None:
        claimed = await run.ctx.db(
            ledger.open_claimed, run.key, claim=values, **_record_fields(run, price)
        )
    else:
        claimed = await run.ctx.db(ledger.claim, run.record, **values)
    if claimed is None:
        raise ClaimLostError(f"ledger row {run.key} was claimed by another attempt")
    run.record = claimed


async def _call(run: ActionRun, request):
    """Await the exchange call; return its result, or an outcome dict when it was rejected."""
    ctx, position = run.ctx, run.guarded.position
    try:
        return await request
    except RetryLaterError as exc:
        await ctx.db(ctx.ledger.release, run.key, str(exc))
        raise
    except (StateUnknownError, TimeoutError, asyncio.CancelledError) as exc:
        await ctx.db(ctx.ledger.mark_unknown, run.key, str(exc) or type(exc).__name__)
        raise
    except InsufficientFundsError:
        raise
    except (RejectedError, AuthenticationError) as exc:
        action = run.guarded.config.action.value
        await ctx.db(ctx.ledger.fail, run.key, str(exc))
        await ctx.db(ctx.positions.record_failure, position.id, action, str(exc))
        await ctx.position_changed(position.id)
        ctx.log.critical(
            "protective action rejected", position_id=position.id, action=action, error=str(exc)
        )
        await _tell(run, "failure", action, f"Margin Guard {action} was rejected: {exc}")
        return run.outcome("rejected", error=str(exc))


async def _settle_earlier_attempt(run: ActionRun, trade: Trade | None) -> dict | None:
    """Confirm an earlier attempt that the exchange shows as applied; None when it was not."""
    ctx, record = run.ctx, run.record
    applied = await _was_applied(run, record, trade)
    if not applied:
        ctx.log.info("earlier attempt was not applied", key=run.key, state=record.state.value)
        return None
    position = run.guarded.position
    confirmation = {"ledger_key": run.key, "ledger_details": {"confirmed_by": "reconciliation"}}
    if record.action == GuardAction.ADD_MARGIN.value:
        await ctx.db(
            ctx.positions.record_margin_added,
            position.id,
            position.user_id,
            trade,
            record.amount_sats,
            None,
            **confirmation,
        )
    else:
        await ctx.db(
            ctx.positions.record_closed_by_guard,
            position.id,
            position.user_id,
            None,
            **confirmation,
        )
    await ctx.position_changed(position.id)
    return run.outcome("confirmed_by_reconciliation")


async def _was_applied(run: ActionRun, record: LedgerRecord, trade: Trade | None) -> bool:
    if record.action == GuardAction.ADD_MARGIN.value:
        return trade is not None and trade.margin_sats >= (record.margin_after_sats or 0)
    if record.action == GuardAction.CLOSE_POSITION.value and trade is None:
        reasons = await _closed_reasons(run.exchange)
        return reasons.get(run.guarded.position.trade_id) is CloseReason.CLOSED
    return False


async def _closed_reasons(exchange: Exchange) -> dict[str, CloseReason]:
    return {t.id: t.close_reason for t in await exchange.get_closed_trades(limit=1000)}


async def _trade_gone(run: ActionRun) -> dict:
    ctx, position = run.ctx, run.guarded.position
    reason = (await _closed_reasons(run.exchange)).get(position.trade_id, CloseReason.CLOSED)
    await ctx.db(ctx.positions.mark_closed, position.id, reason)
    await ctx.position_changed(position.id)
    ctx.log.info(
        "trade no longer running; no action sent", position_id=position.id, reason=str(reason)
    )
    return await _abandon(
        run, "trade_gone", f"trade is no longer running ({reason})", notify_engine=False
    )


async def _abandon(run: ActionRun, name: str, reason: str, notify_engine: bool = True) -> dict:
    """Finish without an exchange call, closing any open ledger row as failed."""
    if run.record is not None and not run.record.final:
        await run.ctx.db(run.ctx.ledger.fail, run.key, reason)
    if notify_engine and run.guarded is not None:
        await run.ctx.position_changed(run.guarded.position.id)
    return run.outcome(name, reason=reason)
