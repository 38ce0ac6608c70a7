"""The margin-guard-cross job: reduce an account's cross margin position past its trigger.

Order of work: read the ledger (a finished action is never repeated), read the account's cross
guard setting, and re-read the cross position. A first attempt then checks that the position is
the version the engine saw, that the guard has actions left and that a fresh price still
crosses the trigger. An attempt that finds its ledger row open skips those checks, because its
own earlier order may have changed the position: ``reduce_cross_position`` settles that row by
the net quantity before it sends anything. Every outcome, and every error that ends the job,
announces the account on the cross events stream, so the cross engine reads the position again
and re-arms it.
"""

from __future__ import annotations

from typing import Any

from axisor.engine.cross import cross_client, publish_cross_changed
from axisor.errors import RetryLaterError, StateUnknownError
from axisor.exchange.protocol import CrossExchange
from axisor.guard.cross import (
    CrossGuardSetting,
    count_cross_actions,
    cross_trigger,
    cross_version,
    is_cross_crossed,
    load_cross_setting,
)
from axisor.queue.jobs import GuardCrossJob
from axisor.workers.context import WorkerContext
from axisor.workers.cross_reduce import CrossReduceRequest, reduce_cross_position


async def run_guard_cross(ctx: WorkerContext, job: GuardCrossJob) -> dict:
    """Carry out the job and return its outcome; raise only when BullMQ should retry it.

    A retried job announces nothing, so the engine does not re-arm a newer version while this
    one's order may still be unsettled.
    """
    try:
        result = await _run(ctx, job)
    except (RetryLaterError, StateUnknownError, TimeoutError):
        # Another attempt follows; after the last one the runner announces the account.
        raise
    except Exception:
        await publish_cross_changed(ctx.redis, job.account_id)
        raise
    await publish_cross_changed(ctx.redis, job.account_id)
    return result


async def _run(ctx: WorkerContext, job: GuardCrossJob) -> dict:
    record = await ctx.db(ctx.ledger.get, job.idempotency_key)
    if record is not None and record.final:
        return _outcome(job, f"already_{record.state.value}")

    setting = await ctx.db(load_cross_setting, ctx.database, job.account_id)
    if setting is None or not setting.enabled:
        # NOTE: a row left sent or unknown stays open here; it is settled only if the guard is
        # enabled again and the job reruns.
        return _outcome(job, "not_guarded", reason="the account has no enabled cross guard")

    if record is None:
        exchange = await cross_client(ctx.exchanges, job.account_id)
        skipped = await _first_attempt_checks(ctx, job, setting, exchange)
        if skipped is not None:
            return skipped
    request = CrossReduceRequest(
        job.idempotency_key,
        job.account_id,
        setting.config,
        trigger_price=job.trigger_price,
        tick_price=job.tick_price,
    )
    return await reduce_cross_position(ctx, request)


async def _first_attempt_checks(
    ctx: WorkerContext, job: GuardCrossJob, setting: CrossGuardSetting, exchange: CrossExchange
) -> dict | None:
    """Return the outcome that ends the job without an order, or None when it must act."""
    position = await exchange.get_cross_position()
    version = cross_version(position, setting.config)
    if position.id != job.position_id or version != job.version:
        return _outcome(job, "stale", current_version=version)

    done = await ctx.db(count_cross_actions, ctx.database, job.account_id, position.id)
    if done >= setting.config.max_actions:
        return _outcome(job, "action_limit", reason=f"the guard already acted {done} times")

    price = (await exchange.get_ticker()).last_price
    trigger = cross_trigger(position, setting.config)
    if not is_cross_crossed(trigger, price):
        trigger_text = None if trigger is None else trigger.trigger_price
        reason = f"price {price} no longer crosses {trigger_text}"
        return _outcome(job, "not_crossed", reason=reason)
    return None


def _outcome(job: GuardCrossJob, name: str, **extra: Any) -> dict:
    return {"outcome": name, "account_id": job.account_id, "margin_mode": "cross", **extra}
