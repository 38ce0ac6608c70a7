"""Reducing an account's cross margin position once, through the action ledger.

The positions table does not track cross positions, so this reduces the net position with an
opposite market order and reconciles an unknown outcome by the net quantity.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from axisor.db.models import LedgerEntry, LedgerState
from axisor.errors import (
    AuthenticationError,
    InvalidConfigError,
    RejectedError,
    RetryLaterError,
    StateUnknownError,
)
from axisor.exchange.models import Side
from axisor.exchange.protocol import CrossExchange
from axisor.guard.config import GuardAction, GuardConfig, check_reduce_supported
from axisor.ledger import LedgerRecord
from axisor.workers.context import WorkerContext
from axisor.workers.guard_action import ClaimLostError


@dataclass(frozen=True)
class CrossReduceRequest:
    """Reduce the cross margin position of ``account_id`` by ``config.reduce_percent`` percent.

    ``idempotency_key`` names the ledger row: the same key acts at most once. Prices are USD per
    BTC and only recorded.
    """

    idempotency_key: str
    account_id: int
    config: GuardConfig
    trigger_price: Decimal | None = None
    tick_price: Decimal | None = None


@dataclass(frozen=True)
class CrossReducePlan:
    """An opposite market order of ``reduce_usd`` that takes the signed net quantity from
    ``quantity_before_usd`` to ``quantity_after_usd``."""

    side: Side
    reduce_usd: int
    quantity_before_usd: int
    quantity_after_usd: int

    def details(self) -> dict[str, Any]:
        return {
            "side": self.side.value,
            "reduce_usd": self.reduce_usd,
            "quantity_before_usd": self.quantity_before_usd,
            "quantity_after_usd": self.quantity_after_usd,
        }


def plan_cross_reduce(quantity_usd: int, reduce_percent: Decimal) -> CrossReducePlan | None:
    """Return the order that reduces a signed net quantity by ``reduce_percent`` %, rounded
    down to whole USD, or None when that is less than 1 USD."""
    reduce_usd = int(abs(quantity_usd) * reduce_percent // 100)
    if reduce_usd < 1:
        return None
    if quantity_usd > 0:
        return CrossReducePlan(Side.SELL, reduce_usd, quantity_usd, quantity_usd - reduce_usd)
    return CrossReducePlan(Side.BUY, reduce_usd, quantity_usd, quantity_usd + reduce_usd)


async def reduce_cross_position(ctx: WorkerContext, request: CrossReduceRequest) -> dict:
    """Reduce the account's cross margin position once; raise only when a retry should follow.

    The ledger row is claimed before the order. A row left ``sent`` or ``unknown`` is settled
    first by the net quantity: the expected one confirms it, the one before the order sends it
    again, and any other fails it without sending, since something else changed the position.
    """
    async with ctx.account_lock(request.account_id):
        return await _reduce_cross_locked(ctx, request)


async def _reduce_cross_locked(ctx: WorkerContext, request: CrossReduceRequest) -> dict:
    key = request.idempotency_key
    record = await ctx.db(ctx.ledger.get, key)
    if record is not None and record.final:
        return _cross_outcome(request, f"already_{record.state.value}")

    exchange = await ctx.exchanges.for_account(request.account_id)
    check_reduce_supported(request.config, exchange.capabilities, cross=True)
    if not isinstance(exchange, CrossExchange):
        raise InvalidConfigError(
            "account_id", f"account {request.account_id} has no cross margin client"
        )
    position = await exchange.get_cross_position()
    if record is not None and record.state in (LedgerState.SENT, LedgerState.UNKNOWN):
        settled = await _settle_cross_reduce(ctx, request, position.quantity_usd)
        if settled is not None:
            return settled
        record = await ctx.db(ctx.ledger.get, key)

    plan = plan_cross_reduce(position.quantity_usd, request.config.reduce_percent)
    if plan is None:
        reason = f"net quantity {position.quantity_usd} USD leaves nothing to reduce"
        await _finish_unsent(ctx, request, record, reason)
        return _cross_outcome(request, "nothing_to_reduce", reason=reason)
    await _claim_cross(ctx, request, record, plan)
    return await _send_cross_reduce(ctx, request, exchange, plan)


async def _send_cross_reduce(
    ctx: WorkerContext, request: CrossReduceRequest, exchange: CrossExchange, plan: CrossReducePlan
) -> dict:
    key = request.idempotency_key
    try:
        await exchange.open_cross_order(plan.side, plan.reduce_usd)
    except RetryLaterError as exc:
        await ctx.db(ctx.ledger.release, key, str(exc))
        raise
    except (StateUnknownError, TimeoutError, asyncio.CancelledError) as exc:
        await ctx.db(ctx.ledger.mark_unknown, key, str(exc) or type(exc).__name__)
        raise
    except (RejectedError, AuthenticationError) as exc:
        await ctx.db(ctx.ledger.fail, key, str(exc))
        ctx.log.critical(
            "cross reduce rejected", account_id=request.account_id, key=key, error=str(exc)
        )
        return _cross_outcome(request, "rejected", error=str(exc))

    await ctx.db(ctx.ledger.confirm, key, {"confirmed_by": "reply"})
    ctx.log.info("cross position reduced", account_id=request.account_id, key=key, **plan.details())
    return _cross_outcome(request, "reduced", **plan.details())


async def _settle_cross_reduce(
    ctx: WorkerContext, request: CrossReduceRequest, quantity_usd: int
) -> dict | None:
    """Confirm or fail an earlier attempt by the net quantity; None when it was not applied."""
    key = request.idempotency_key
    details = await ctx.db(_ledger_details, ctx, key)
    expected_usd = details.get("quantity_after_usd")
    if quantity_usd == expected_usd:
        await ctx.db(ctx.ledger.confirm, key, {"confirmed_by": "reconciliation"})
        return _cross_outcome(request, "confirmed_by_reconciliation")
    if quantity_usd == details.get("quantity_before_usd"):
        ctx.log.info("earlier cross reduce was not applied", key=key)
        return None
    reason = (
        f"net quantity {quantity_usd} USD is neither the {details.get('quantity_before_usd')} "
        f"USD before the earlier order nor the {expected_usd} USD expected after it; "
        "not sent again"
    )
    await ctx.db(ctx.ledger.fail, key, reason)
    ctx.log.critical("cross reduce outcome unresolved", account_id=request.account_id, key=key)
    return _cross_outcome(request, "reconcile_mismatch", reason=reason)


async def _claim_cross(
    ctx: WorkerContext,
    request: CrossReduceRequest,
    record: LedgerRecord | None,
    plan: CrossReducePlan,
) -> None:
    ledger = ctx.ledger
    if record is None:
        claimed = await ctx.db(
            ledger.open_claimed,
            request.idempotency_key,
            claim={"amount_sats": 0, "details": plan.details()},
            **_cross_record_fields(request),
        )
    else:
        claimed = await ctx.db(ledger.claim, record, amount_sats=0, details=plan.details())
    if claimed is None:
        raise ClaimLostError(f"ledger row {request.idempotency_key} was claimed by another attempt")


async def _finish_unsent(
    ctx: WorkerContext, request: CrossReduceRequest, record: LedgerRecord | None, reason: str
) -> None:
    """Record an action that was decided against, so the key does not act later."""
    if record is None:
        await ctx.db(ctx.ledger.open, request.idempotency_key, **_cross_record_fields(request))
    await ctx.db(ctx.ledger.fail, request.idempotency_key, reason)


def _cross_record_fields(request: CrossReduceRequest) -> dict[str, Any]:
    return {
        "account_id": request.account_id,
        "position_id": None,
        "action": GuardAction.REDUCE_POSITION.value,
        "trigger_price": request.trigger_price,
        "tick_price": request.tick_price,
        "details": {"margin_mode": "cross", "reduce_percent": str(request.config.reduce_percent)},
    }


def _ledger_details(ctx: WorkerContext, key: str) -> dict[str, Any]:
    with ctx.database.session() as session:
        statement = select(LedgerEntry.details).where(LedgerEntry.idempotency_key == key)
        return dict(session.scalar(statement) or {})


def _cross_outcome(request: CrossReduceRequest, name: str, **extra: Any) -> dict:
    return {"outcome": name, "account_id": request.account_id, "margin_mode": "cross", **extra}
