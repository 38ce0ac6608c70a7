"""The automation-execute job: carry out one arming of one automation, once.

The order of work is that of a guard action. First read the ledger, because a finished action
is never repeated. Then load the automation: a job of an earlier arming does nothing. Re-read
the trade, and a vanished trade disarms the automation without any call. Settle an earlier
attempt whose outcome is unknown, and only then claim the ledger row and call the exchange.
The claim commits before the call, so a crash after it leaves evidence that the next attempt
reconciles. The ledger key is ``auto:<automation id>:<version>:<job action>``, and the row's
``action`` is the exchange call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from axisor.automations.config import AutoEntryConfig, AutomationType, StopLossConfig
from axisor.automations.engine import automation_events_stream, publish_automation_changed
from axisor.automations.store import (
    StoredAutomation,
    arm,
    disarm_in_session,
    load_automation,
    record_fired,
    record_placed,
    trade_closed,
)
from axisor.db.models import LedgerEntry, LedgerState, Position, TradeLogEntry
from axisor.errors import AuthenticationError, RejectedError, RetryLaterError, StateUnknownError
from axisor.exchange import math as lnm
from axisor.exchange.models import CloseReason, OpenTradeRequest, Side, Trade
from axisor.exchange.protocol import Exchange, find_running_trade
from axisor.guard.positions import (
    PositionSnapshot,
    apply_trade,
    close_position,
    log_trade_action,
    snapshot,
)
from axisor.ledger import LedgerRecord, confirm_in_session
from axisor.queue.jobs import AutomationJob
from axisor.workers.context import WorkerContext

# Exchange calls, as stored in the ledger row's ``action``.
CLOSE = "close"
CASH_IN = "cash_in"
SET_STOPLOSS = "set_stoploss"
OPEN_TRADE = "open_trade"
UNSETTLED = (LedgerState.SENT, LedgerState.UNKNOWN)
# How many closed trades a reconciliation reads to find one that an earlier attempt opened.
CLOSED_TRADES_READ = 1000


class AutomationClaimLostError(RetryLaterError):
    """Another attempt claimed the ledger row first; this one retries and then finds its outcome."""


@dataclass
class AutomationRun:
    """State of one attempt of one job."""

    ctx: WorkerContext
    job: AutomationJob
    record: LedgerRecord | None = None
    automation: StoredAutomation | None = None
    position: PositionSnapshot | None = None
    exchange: Exchange | None = None

    @property
    def key(self) -> str:
        return self.job.idempotency_key

    @property
    def position_id(self) -> int | None:
        return None if self.position is None else self.position.id

    def outcome(self, name: str, **extra) -> dict:
        return {"outcome": name, "automation_id": self.job.automation_id, **extra}


async def run_automation(ctx: WorkerContext, job: AutomationJob) -> dict:
    """Carry out the job and return its outcome; raise only when BullMQ should retry it."""
    async with ctx.account_lock(job.account_id):
        return await _run_locked(AutomationRun(ctx, job))


async def _run_locked(run: AutomationRun) -> dict:
    ctx, job = run.ctx, run.job
    run.record = await ctx.db(ctx.ledger.get, run.key)
    if run.record is not None and run.record.final:
        return run.outcome(f"already_{run.record.state.value}")

    run.automation = await ctx.db(load_automation, ctx.database, job.automation_id)
    if run.automation is None:
        return await _abandon(run, "not_found", "the automation no longer exists")
    state = run.automation.state
    if run.record is None and (not run.automation.active or state.version != job.version):
        return run.outcome("stale", current_version=state.version)

    run.exchange = await ctx.exchanges.for_account(job.account_id)
    if run.automation.type is AutomationType.AUTO_ENTRY:
        return await _entry(run)
    return await _on_trade(run)


# Take profit and stop loss: act on the automation's running trade.


async def _on_trade(run: AutomationRun) -> dict:
    ctx = run.ctx
    run.position = await ctx.db(_load_position, ctx, run.automation.state.position_id)
    if run.position is None:
        return await _abandon(run, "no_position", "the position no longer exists", disarm=True)
    trade = await find_running_trade(run.exchange, run.position.trade_id)
    if run.record is not None and run.record.state in UNSETTLED:
        settled = await _settle_trade_action(run, trade)
        if settled is not None:
            return settled
    if trade is None:
        return await _trade_gone(run)
    if run.job.action == "place_stoploss":
        return await _place_stop(run, trade)
    if run.job.action == CASH_IN:
        return await _cash_in(run, trade)
    return await _close(run, trade)


async def _close(run: AutomationRun, trade: Trade) -> dict:
    price = run.job.tick_price or (await run.exchange.get_ticker()).last_price
    await _claim(run, CLOSE, price, amount_sats=0, margin_before_sats=trade.margin_sats)
    closed = await _call(run, run.exchange.close_trade(trade.id))
    if isinstance(closed, dict):
        return closed
    await run.ctx.db(_record_close, run, closed.exit_price, {"pnl_sats": closed.pnl_sats})
    await _announce(run, f"{_label(run)} closed trade {trade.id} at {closed.exit_price} USD")
    return run.outcome("closed", pnl_sats=closed.pnl_sats)


async def _cash_in(run: AutomationRun, trade: Trade) -> dict:
    price = (await run.exchange.get_ticker()).last_price
    amount_sats = cash_in_amount_sats(trade, price)
    if amount_sats < 1:
        version = await run.ctx.db(arm, run.ctx.database, run.job.automation_id)
        await _announce(run)
        reason = f"no positive P&L to cash in at {price} USD; armed again as version {version}"
        return await _abandon(run, "nothing_to_cash_in", reason)
    await _claim(
        run,
        CASH_IN,
        price,
        amount_sats=amount_sats,
        margin_before_sats=trade.margin_sats,
        details={"entry_price_before": str(trade.entry_price)},
    )
    updated = await _call(run, run.exchange.cash_in(trade.id, amount_sats))
    if isinstance(updated, dict):
        return updated
    await run.ctx.db(_record_cash_in, run, updated, price, amount_sats)
    await _announce(run, f"{_label(run)} cashed in {amount_sats} sats of trade {trade.id}")
    return run.outcome("cashed_in", amount_sats=amount_sats)


def cash_in_amount_sats(trade: Trade, price: Decimal) -> int:
    """Return the P&L in sats that a cash-in takes at ``price``: all of it, within the venue's
    leverage and liquidation limits."""
    pnl = lnm.pnl_sats(trade.side, trade.quantity_usd, trade.entry_price, price)
    if pnl < 1:
        return 0
    limit_sats = lnm.max_cash_in_sats(
        trade.side, trade.quantity_usd, trade.entry_price, trade.margin_sats, price
    )
    return min(pnl, limit_sats)


async def _place_stop(run: AutomationRun, trade: Trade) -> dict:
    """Place the stop on the exchange; a fixed stop already crossed closes the trade instead."""
    config: StopLossConfig = run.automation.config
    price = (await run.exchange.get_ticker()).last_price
    if not config.trailing and stop_crossed(trade.side, config.price_usd, price):
        return await _close(run, trade)
    stop = {
        "stoploss_price": _text(config.price_usd),
        "trailing_usd": _text(config.trailing_distance_usd),
    }
    await _claim(run, SET_STOPLOSS, price, amount_sats=0, details=stop)
    request = run.exchange.set_stoploss(trade.id, config.price_usd, config.trailing_distance_usd)
    updated = await _call(run, request)
    if isinstance(updated, dict):
        return updated
    await run.ctx.db(_record_placed, run, price if config.trailing else None)
    await _announce(run, f"{_label(run)} placed its stop on trade {trade.id}")
    return run.outcome("stop_placed", stoploss_price=str(updated.stoploss_price))


def stop_crossed(side: Side, level: Decimal, price: Decimal) -> bool:
    """Return whether ``price`` is at or past a stop at ``level`` (below it for a long)."""
    return price <= level if side is Side.BUY else price >= level


async def _settle_trade_action(run: AutomationRun, trade: Trade | None) -> dict | None:
    """Confirm an earlier attempt that the exchange shows as applied; None when it was not."""
    record = run.record
    if not await _trade_action_applied(run, record, trade):
        run.ctx.log.info("earlier attempt was not applied", key=run.key, state=record.state.value)
        return None
    confirmed = {"confirmed_by": "reconciliation"}
    if record.action == CLOSE:
        await run.ctx.db(_record_close, run, None, confirmed)
    elif record.action == CASH_IN:
        await run.ctx.db(_record_cash_in, run, trade, None, record.amount_sats, confirmed)
    else:
        await run.ctx.db(_record_placed, run, None, confirmed)
    await _announce(run)
    return run.outcome("confirmed_by_reconciliation", action=record.action)


async def _trade_action_applied(
    run: AutomationRun, record: LedgerRecord, trade: Trade | None
) -> bool:
    """Return whether the exchange shows the claimed call as applied.

    A close shows as the trade in the closed list with reason ``closed``. A cash-in shows as a
    changed entry price or margin. A stop shows as a stop loss of the configured kind.
    """
    if record.action == CLOSE:
        if trade is not None:
            return False
        reasons = await _closed_reasons(run.exchange)
        return reasons.get(run.position.trade_id) is CloseReason.CLOSED
    if trade is None:
        return False
    if record.action == CASH_IN:
        entry_before = (await _details(run)).get("entry_price_before")
        moved_entry = entry_before is not None and trade.entry_price != Decimal(entry_before)
        return moved_entry or trade.margin_sats != record.margin_before_sats
    config: StopLossConfig = run.automation.config
    trailing_set = trade.trailing_stoploss_usd is not None
    return trade.stoploss_price is not None and trailing_set == config.trailing


async def _trade_gone(run: AutomationRun) -> dict:
    ctx, position = run.ctx, run.position
    reason = (await _closed_reasons(run.exchange)).get(position.trade_id, CloseReason.CLOSED)
    await ctx.db(ctx.positions.mark_closed, position.id, reason)
    await ctx.db(trade_closed, ctx.database, position.account_id, position.trade_id, reason)
    await _announce(run)
    ctx.log.info(
        "trade no longer running; automation disarmed",
        automation_id=run.job.automation_id,
        position_id=position.id,
        reason=str(reason),
    )
    return await _abandon(run, "trade_gone", f"trade is no longer running ({reason})")


# Auto entry: open a trade.


async def _entry(run: AutomationRun) -> dict:
    if run.record is not None and run.record.state in UNSETTLED:
        opened = await _find_opened(run)
        if opened is not None:
            await run.ctx.db(_record_open, run, opened, {"confirmed_by": "reconciliation"})
            await _announce(run)
            return run.outcome("confirmed_by_reconciliation", trade_id=opened.id)
        await run.ctx.db(run.ctx.ledger.release, run.key, "no trade from the earlier attempt")
        run.record = await run.ctx.db(run.ctx.ledger.get, run.key)

    config: AutoEntryConfig = run.automation.config
    ticker = await run.exchange.get_ticker()
    await _claim(
        run,
        OPEN_TRADE,
        ticker.last_price,
        amount_sats=config.margin_sats or 0,
        details={"opened_after_ms": ticker.time_ms},
    )
    trade = await _call(run, run.exchange.open_trade(entry_request(config)))
    if isinstance(trade, dict):
        return trade
    await run.ctx.db(_record_open, run, trade, {})
    await _announce(run, f"{_label(run)} opened trade {trade.id} at {trade.entry_price} USD")
    return run.outcome("opened", trade_id=trade.id, quantity_usd=trade.quantity_usd)


def entry_request(config: AutoEntryConfig) -> OpenTradeRequest:
    """Return the market order of an auto entry."""
    return OpenTradeRequest(
        side=config.side,
        leverage=config.leverage,
        quantity_usd=config.quantity_usd,
        margin_sats=config.margin_sats,
        stoploss_price=config.stoploss_price,
        takeprofit_price=config.takeprofit_price,
    )


async def _find_opened(run: AutomationRun) -> Trade | None:
    """Return the trade an earlier attempt opened, or None when the venue shows none.

    NOTE: LN Markets takes no client order id, so the trade is recognised by its side, its
    size (quantity_usd, or a margin within margin_sats) and a creation time at or after the
    venue time read just before the claim. Another trade of the same size opened on the same
    account in that window, by the user or another program, would be taken for this one.
    """
    config: AutoEntryConfig = run.automation.config
    after_ms = (await _details(run)).get("opened_after_ms", 0)
    running = await run.exchange.get_running_trades()
    closed = await run.exchange.get_closed_trades(limit=CLOSED_TRADES_READ)
    known = run.automation.state.last_trade_id
    candidates = [
        trade
        for trade in [*running, *closed]
        if trade.id != known and trade.created_ms >= after_ms and _same_order(config, trade)
    ]
    return min(candidates, key=lambda trade: trade.created_ms, default=None)


def _same_order(config: AutoEntryConfig, trade: Trade) -> bool:
    if trade.side is not config.side:
        return False
    if config.quantity_usd is not None:
        return trade.quantity_usd == config.quantity_usd
    return trade.margin_sats <= config.margin_sats


# Ledger claims and exchange calls.


async def _claim(run: AutomationRun, action: str, price: Decimal, **values) -> None:
    """Claim the ledger row before the exchange call; a first attempt inserts it claimed."""
    ctx, job = run.ctx, run.job
    if run.record is None:
        fields = {
            "account_id": job.account_id,
            "position_id": run.position_id,
            "action": action,
            "trigger_price": job.trigger_price,
            "tick_price": job.tick_price or price,
            "tick_received_ns": job.tick_received_ns,
            "details": {"tick_time_ms": job.tick_time_ms, "type": run.automation.type.value},
        }
        claimed = await ctx.db(ctx.ledger.open_claimed, run.key, claim=values, **fields)
    else:
        claimed = await ctx.db(ctx.ledger.claim, run.record, **values)
    if claimed is None:
        raise AutomationClaimLostError(f"ledger row {run.key} was claimed by another attempt")
    run.record = claimed


async def _call(run: AutomationRun, request):
    """Await the exchange call; return its result, or an outcome dict when it was rejected."""
    ctx = run.ctx
    try:
        return await request
    except RetryLaterError as exc:
        await ctx.db(ctx.ledger.release, run.key, str(exc))
        raise
    except (StateUnknownError, TimeoutError, asyncio.CancelledError) as exc:
        await ctx.db(ctx.ledger.mark_unknown, run.key, str(exc) or type(exc).__name__)
        raise
    except (RejectedError, AuthenticationError) as exc:
        await ctx.db(_record_rejected, run, str(exc))
        await _announce(run)
        ctx.log.error(
            "automation action rejected",
            automation_id=run.job.automation_id,
            action=run.record.action,
            error=str(exc),
        )
        await _notify(run, "failure", f"{_label(run)} was rejected by the exchange: {exc}")
        return run.outcome("rejected", error=str(exc))


async def _abandon(run: AutomationRun, name: str, reason: str, disarm: bool = False) -> dict:
    """Finish without an exchange call, closing any open ledger row as failed."""
    if run.record is not None and not run.record.final:
        await run.ctx.db(run.ctx.ledger.fail, run.key, reason)
    if disarm:
        await run.ctx.db(_disarm, run)
        await _announce(run)
    return run.outcome(name, reason=reason)


# Database writes: each outcome commits with its ledger confirmation in one transaction.


def _load_position(ctx: WorkerContext, position_id: int | None) -> PositionSnapshot | None:
    if position_id is None:
        return None
    with ctx.database.session() as session:
        position = session.get(Position, position_id)
        return None if position is None else snapshot(position, 0)


def _record_close(run: AutomationRun, price: Decimal | None, details: dict) -> None:
    with run.ctx.database.session() as session:
        confirm_in_session(session, run.key, details)
        position = session.get(Position, run.position.id)
        close_position(position, CloseReason.CLOSED, None)
        _log(session, run, position, CLOSE, price)
        _fired(session, run)


def _record_cash_in(
    run: AutomationRun,
    trade: Trade,
    price: Decimal | None,
    amount_sats: int,
    details: dict | None = None,
) -> None:
    with run.ctx.database.session() as session:
        confirm_in_session(
            session, run.key, {"margin_after_sats": trade.margin_sats, **(details or {})}
        )
        position = session.get(Position, run.position.id)
        apply_trade(position, trade)
        _log(session, run, position, CASH_IN, price, amount_sats)
        _fired(session, run)


def _record_placed(
    run: AutomationRun, best_price: Decimal | None, details: dict | None = None
) -> None:
    with run.ctx.database.session() as session:
        confirm_in_session(session, run.key, details)
        position = session.get(Position, run.position.id)
        _log(session, run, position, SET_STOPLOSS, None)
    record_placed(run.ctx.database, run.job.automation_id, run.job.version, best_price)


def _record_open(run: AutomationRun, trade: Trade, details: dict) -> None:
    with run.ctx.database.session() as session:
        confirm_in_session(session, run.key, {"trade_id": trade.id, **details})
        session.add(
            TradeLogEntry(
                user_id=run.automation.user_id,
                account_id=run.job.account_id,
                trade_id=trade.id,
                action=f"{run.automation.type.value}:{OPEN_TRADE}",
                side=trade.side.value,
                quantity_usd=trade.quantity_usd,
                price=trade.entry_price,
                amount_sats=trade.margin_sats,
                status="confirmed",
            )
        )
        _fired(session, run, last_trade_id=trade.id)


def _record_rejected(run: AutomationRun, error: str) -> None:
    run.ctx.ledger.fail(run.key, error)
    with run.ctx.database.session() as session:
        disarm_in_session(session, run.job.automation_id, run.job.version)
        if run.position is not None:
            position = session.get(Position, run.position.id)
            _log(session, run, position, run.record.action, None, status="failed", error=error)


def _disarm(run: AutomationRun) -> None:
    with run.ctx.database.session() as session:
        disarm_in_session(session, run.job.automation_id, run.job.version)


def _fired(session, run: AutomationRun, last_trade_id: str | None = None) -> None:
    record_fired(
        session,
        run.job.automation_id,
        run.job.version,
        time_ms=run.job.tick_time_ms,
        last_trade_id=last_trade_id,
    )


def _log(session, run: AutomationRun, position: Position, call: str, price, amount_sats=0, **extra):
    log_trade_action(
        session,
        user_id=run.automation.user_id,
        position=position,
        action=f"{run.automation.type.value}:{call}",
        status=extra.pop("status", "confirmed"),
        price=price,
        amount_sats=amount_sats,
        **extra,
    )


# Helpers.


async def _announce(run: AutomationRun, fired: str | None = None) -> None:
    """Tell the engines that the automation, and its position if any, changed; notify the
    user of a fire."""
    ctx = run.ctx
    stream = automation_events_stream(ctx.events_stream)
    await publish_automation_changed(ctx.redis, run.job.automation_id, stream)
    if run.position is not None:
        await ctx.position_changed(run.position.id)
    if fired is not None:
        await _notify(run, "action", fired)


async def _notify(run: AutomationRun, kind: str, message: str) -> None:
    """Send a notification when the context carries a Notifier; workers without one skip it."""
    notifier = getattr(run.ctx, "notifier", None)
    if notifier is None or run.automation is None:
        return
    await notifier.notify(run.automation.user_id, kind, message, run.outcome(kind))


async def _details(run: AutomationRun) -> dict:
    """Return the details stored on the job's ledger row."""
    return await run.ctx.db(_ledger_details, run)


def _ledger_details(run: AutomationRun) -> dict:
    with run.ctx.database.session() as session:
        row = session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == run.key))
        return dict(row.details or {}) if row is not None else {}


async def _closed_reasons(exchange: Exchange) -> dict[str, CloseReason]:
    return {
        t.id: t.close_reason for t in await exchange.get_closed_trades(limit=CLOSED_TRADES_READ)
    }


def _label(run: AutomationRun) -> str:
    return f"{run.automation.type.value} automation {run.job.automation_id}"


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
