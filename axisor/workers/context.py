"""Processor context: the database, the ledger, exchanges per account and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from redis.asyncio import Redis

from axisor.db.session import Database
from axisor.engine.events import publish_position_changed
from axisor.exchange.protocol import Exchange
from axisor.guard.positions import PositionStore
from axisor.ledger import ActionLedger
from axisor.queue.names import POSITION_EVENTS_STREAM

T = TypeVar("T")


class ExchangeResolver(Protocol):
    """Returns the exchange client for one linked account."""

    async def for_account(self, account_id: int) -> Exchange: ...


@dataclass
class WorkerContext:
    database: Database
    exchanges: ExchangeResolver
    redis: Redis
    worker_name: str
    events_stream: str = POSITION_EVENTS_STREAM
    # In-app notifications and webhooks for each action and failure; None sends none.
    notifier: Any = None
    ledger: ActionLedger = field(init=False)
    positions: PositionStore = field(init=False)
    log: Any = field(init=False)

    def __post_init__(self) -> None:
        self._account_locks: dict[int, asyncio.Lock] = {}
        self.ledger = ActionLedger(self.database)
        self.positions = PositionStore(self.database)
        self.log = structlog.get_logger("axisor.worker").bind(worker=self.worker_name)

    def account_lock(self, account_id: int) -> asyncio.Lock:
        """Return the lock that runs this process's actions on one account one at a time.

        Actions on one account draw on the same free balance, so running them in the order they
        were fetched (priority order) keeps the outcome independent of thread timing. Other
        processes may still act on the account at the same time; the exchange then rejects a
        short balance and the action plans again.
        """
        return self._account_locks.setdefault(account_id, asyncio.Lock())

    async def db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking database call in a thread, so lock renewal keeps running."""
        return await asyncio.to_thread(function, *args, **kwargs)

    async def position_changed(self, position_id: int) -> None:
        await publish_position_changed(self.redis, position_id, self.events_stream)
