"""A guarded paper account for worker and engine tests: database, venue, Redis and a worker context.

``GuardWorld`` creates a user and a paper exchange account with an account-wide guard
configuration. It opens trades on the paper venue and imports them as positions by running the
margin-guard-check job.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

from redis.asyncio import Redis
from sqlalchemy import select

from axisor.db.models import (
    ExchangeAccount,
    LedgerEntry,
    MarginGuardConfig,
    Position,
    TradeLogEntry,
    User,
)
from axisor.db.session import Database
from axisor.exchange import math as lnm
from axisor.exchange.models import Mutation, OpenTradeRequest, Side, Trade
from axisor.exchange.paper import PaperAccount, PaperVenue
from axisor.exchange.registry import PaperResolver
from axisor.guard.config import GuardConfig
from axisor.queue.jobs import GuardActionJob, GuardCheckJob
from axisor.workers.context import WorkerContext
from axisor.workers.guard_check import run_guard_check

D = Decimal
ENTRY_PRICE = D(60_000)
# A 600 USD long at 10x from 60,000 USD: 100,000 sats of margin, liquidation at 54,545 USD and,
# with a threshold of 0.8, a trigger at 55,636 USD.
QUANTITY_USD = 600
LEVERAGE = D(10)
CROSSING_PRICE = D(55_000)
SPARE_SATS = 1_000_000
DEFAULT_CONFIG = GuardConfig(margin_threshold=D("0.8"))


@dataclass
class GuardWorld:
    """One user with one guarded paper account, and the context workers run with."""

    db: Database
    venue: PaperVenue
    ctx: WorkerContext
    user_id: int
    account_id: int

    @property
    def exchange(self) -> PaperAccount:
        return self.venue.account(str(self.account_id))

    def configure(
        self, config: GuardConfig, *, position_id: int | None = None, enabled: bool = True
    ) -> None:
        """Store ``config`` for the whole account, or for one position when it is given."""
        if position_id is None:
            scope = MarginGuardConfig.position_id.is_(None)
        else:
            scope = MarginGuardConfig.position_id == position_id
        with self.db.session() as session:
            row = session.scalar(
                select(MarginGuardConfig).where(
                    MarginGuardConfig.account_id == self.account_id, scope
                )
            )
            if row is None:
                row = MarginGuardConfig(
                    user_id=self.user_id, account_id=self.account_id, position_id=position_id
                )
                session.add(row)
            row.config = config.model_dump(mode="json")
            row.enabled = enabled

    async def open_trade(
        self,
        side: Side = Side.BUY,
        leverage: Decimal = LEVERAGE,
        quantity_usd: int = QUANTITY_USD,
        spare_sats: int = SPARE_SATS,
    ) -> Trade:
        """Deposit what the trade costs plus ``spare_sats`` and open it at the current price."""
        price = self.venue.price
        margin_sats = lnm.margin_for(quantity_usd, leverage, price)
        liquidation = lnm.liquidation_price(side, quantity_usd, price, margin_sats)
        reserve_sats = lnm.maintenance_margin_sats(quantity_usd, price, liquidation)
        self.venue.deposit(str(self.account_id), margin_sats + reserve_sats + spare_sats)
        request = OpenTradeRequest(side=side, leverage=leverage, quantity_usd=quantity_usd)
        return await self.exchange.open_trade(request)

    async def check(self) -> dict:
        """Run the margin-guard-check job for the account."""
        return await run_guard_check(self.ctx, GuardCheckJob(account_id=self.account_id))

    async def open_position(self, **trade_options) -> tuple[Trade, int]:
        """Open a trade, import it with a check and return it with its position id."""
        trade = await self.open_trade(**trade_options)
        await self.check()
        return trade, self.position_by_trade(trade.id).id

    def position(self, position_id: int) -> Position:
        with self.db.session() as session:
            return session.get(Position, position_id)

    def position_by_trade(self, trade_id: str) -> Position:
        with self.db.session() as session:
            return session.scalar(select(Position).where(Position.trade_id == trade_id))

    def update_position(self, position_id: int, **values) -> None:
        with self.db.session() as session:
            position = session.get(Position, position_id)
            for name, value in values.items():
                setattr(position, name, value)

    def ledger_rows(self) -> list[LedgerEntry]:
        with self.db.session() as session:
            return list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))

    def trade_log(self) -> list[TradeLogEntry]:
        with self.db.session() as session:
            return list(session.scalars(select(TradeLogEntry).order_by(TradeLogEntry.id)))

    def mutations(self, kind: str, trade_id: str | None = None) -> list[Mutation]:
        """Return the changes of ``kind`` the venue applied, for one trade when it is given."""
        return [
            m
            for m in self.venue.mutations
            if m.kind == kind and (trade_id is None or m.trade_id == trade_id)
        ]

    def action_job(self, position_id: int, action: str = "add_margin") -> GuardActionJob:
        """Return the job the engine would queue for the position's current trigger version."""
        position = self.position(position_id)
        price = self.venue.price
        return GuardActionJob(
            position_id=position_id,
            account_id=self.account_id,
            version=position.guard_version,
            action=action,
            trigger_price=D(55_636),
            tick_price=price,
            tick_time_ms=2_000,
            tick_received_ns=time.time_ns(),
        )


def create_account(db: Database, venue: PaperVenue, config: GuardConfig) -> tuple[int, int]:
    """Create a user and a paper account with an account-wide guard config, and return both ids."""
    with db.session() as session:
        user = User(email="guard@example.test")
        account = ExchangeAccount(user=user, exchange="paper", label="tests")
        session.add(account)
        session.flush()
        session.add(
            MarginGuardConfig(
                user_id=user.id, account_id=account.id, config=config.model_dump(mode="json")
            )
        )
        user_id, account_id = user.id, account.id
    venue.create_account(str(account_id), 0)
    return user_id, account_id


@asynccontextmanager
async def guard_world(db: Database, redis_url: str) -> AsyncIterator[GuardWorld]:
    """Yield a guarded paper account at 60,000 USD with the default configuration."""
    venue = PaperVenue()
    venue.set_price(ENTRY_PRICE, 1_000)
    user_id, account_id = create_account(db, venue, DEFAULT_CONFIG)
    redis = Redis.from_url(redis_url)
    ctx = WorkerContext(db, PaperResolver(venue), redis, "test-worker")
    try:
        yield GuardWorld(db, venue, ctx, user_id, account_id)
    finally:
        await redis.aclose()
