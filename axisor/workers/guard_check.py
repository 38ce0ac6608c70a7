"""The margin-guard-check job: reconcile one account's positions with the exchange."""

from __future__ import annotations

from axisor.exchange.models import CloseReason
from axisor.guard.positions import sync_account
from axisor.queue.jobs import GuardCheckJob
from axisor.workers.context import WorkerContext


async def run_guard_check(ctx: WorkerContext, job: GuardCheckJob) -> dict:
    """Import new trades, close vanished ones and flag impossible ones; announce each change."""
    exchange = await ctx.exchanges.for_account(job.account_id)
    running = await exchange.get_running_trades()
    closed = await exchange.get_closed_trades(limit=1000)
    reasons: dict[str, CloseReason] = {
        trade.id: trade.close_reason for trade in closed if trade.close_reason is not None
    }
    result = await ctx.db(sync_account, ctx.database, job.account_id, running, reasons)
    for position_id in result.changed_ids:
        await ctx.position_changed(position_id)
    if result.invalid:
        ctx.log.error(
            "trades reported with impossible values",
            account_id=job.account_id,
            position_ids=result.invalid,
        )
    return {
        "account_id": job.account_id,
        "added": len(result.added),
        "updated": len(result.updated),
        "closed": len(result.closed),
        "invalid": len(result.invalid),
    }
