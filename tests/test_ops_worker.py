"""Worker processes against the local LN Markets mock: ``axisor worker run`` end to end, and a
worker killed with SIGKILL in the middle of an add-margin call.

The test process serves the mock API on 127.0.0.1 and owns its paper venue, so it can count
every margin change the workers caused. Workers are subprocesses that reach the mock through
AXISOR_LNM_BASE_URL with the credentials of an account linked in a SQLite database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
from bullmq import Queue
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from sqlalchemy import select

from axisor.accounts import link_account
from axisor.db.crypto import CredentialCipher, Credentials
from axisor.db.migrate import upgrade
from axisor.db.models import LedgerEntry, LedgerState, Position, User
from axisor.db.session import Database
from axisor.exchange.models import OpenTradeRequest, Side
from axisor.exchange.paper import PaperVenue
from axisor.exchange.registry import LNM_BASE_URL_ENV
from axisor.guard.store import configure_guard
from axisor.mockexchange.server import MockExchange, run_mock_exchange
from axisor.ops import QueueTarget
from axisor.ops.health import list_workers
from axisor.ops.stuck import WORKER_FIELD, find_stuck
from axisor.queue.jobs import (
    GuardActionJob,
    GuardCheckJob,
    guard_check_job_id,
    job_options,
)
from axisor.queue.names import GUARD_ACTION_JOB, GUARD_CHECK_JOB, MARGIN_GUARD_QUEUE

QUEUE = MARGIN_GUARD_QUEUE
MOCK_ACCOUNT = "lnm-ops-1"
CREDENTIALS = Credentials(key="lnm-ops-key", secret="ops-secret", passphrase="ops-pass")
# A 600 USD long at 10x from 60,000 USD: liquidation at 54,545 USD and, with a threshold of
# 0.8, a trigger at 55,636 USD, which 55,000 USD crosses.
ENTRY_PRICE = Decimal(60_000)
CROSSING_PRICE = Decimal(55_000)
TRIGGER_PRICE = Decimal(55_636)
# Lock duration and stalled-job interval of the workers in the SIGKILL test.
INTERVAL_MS = 2_000

# A worker process: the real resolver and processors, started through start_worker with a short
# lock and stalled-job interval, and served like `axisor worker run` serves its worker.
WORKER_SCRIPT = """
import asyncio, sys
from axisor.cli.worker import ServeOptions, build_context, close_context, serve_worker
from axisor.config import Settings
from axisor.ops import QueueTarget
from axisor.queue.names import MARGIN_GUARD_QUEUE
from axisor.workers.runner import start_worker

name, prefix, interval_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def main():
    settings = Settings.from_env()
    ctx = build_context(settings, settings.redis_url, name)
    worker = start_worker(ctx, settings.redis_url, prefix=prefix, lock_duration_ms=interval_ms,
                          stalled_interval_ms=interval_ms)
    serve = ServeOptions("127.0.0.1", 0, "127.0.0.1", heartbeat_interval_s=0.5,
                         heartbeat_ttl_ms=interval_ms)
    try:
        target = QueueTarget(MARGIN_GUARD_QUEUE, prefix)
        await serve_worker(worker, settings.redis_url, target, name, serve)
    finally:
        await close_context(ctx)

asyncio.run(main())
"""


@dataclass
class ExchangeWorld:
    """A linked LN Markets account with a running trade on the mock, and the workers' env."""

    database: Database
    mock: MockExchange
    redis: Redis
    redis_url: str
    prefix: str
    account_id: int
    env: dict[str, str]

    @property
    def target(self) -> QueueTarget:
        return QueueTarget(QUEUE, self.prefix)

    def queue(self) -> Queue:
        return Queue(QUEUE, {"connection": self.redis_url, "prefix": self.prefix})

    def add_margin_mutations(self) -> list:
        return [m for m in self.mock.venue.mutations if m.kind == "add_margin"]

    def position(self) -> Position | None:
        with self.database.session() as session:
            return session.scalar(select(Position).where(Position.account_id == self.account_id))

    def ledger_rows(self) -> list[LedgerEntry]:
        with self.database.session() as session:
            return list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))

    def action_job(self) -> GuardActionJob:
        position = self.position()
        return GuardActionJob(
            position_id=position.id,
            account_id=self.account_id,
            version=position.guard_version,
            action="add_margin",
            trigger_price=TRIGGER_PRICE,
            tick_price=CROSSING_PRICE,
            tick_time_ms=int(time.time() * 1000),
            tick_received_ns=time.time_ns(),
        )


def _link_guarded_account(database: Database, cipher: CredentialCipher) -> int:
    """Link the mock's credentials to a Pro user and guard the whole account with add_margin."""
    account_id = link_account(
        database, cipher, email="ops-worker@example.test", credentials=CREDENTIALS
    )
    with database.session() as session:
        session.scalar(select(User)).plan = "pro"
    configure_guard(
        database, account_id, {"margin_threshold": "0.8", "action": "add_margin"}, mode="global"
    )
    return account_id


async def _mock_with_trade() -> MockExchange:
    venue = PaperVenue()
    venue.set_price(ENTRY_PRICE, int(time.time() * 1000))
    mock = MockExchange(venue)
    mock.register(
        MOCK_ACCOUNT,
        CREDENTIALS.key,
        CREDENTIALS.secret,
        CREDENTIALS.passphrase,
        balance_sats=2_000_000,
    )
    request = OpenTradeRequest(side=Side.BUY, leverage=Decimal(10), quantity_usd=600)
    await venue.account(MOCK_ACCOUNT).open_trade(request)
    return mock


@pytest.fixture
async def world(redis_url, tmp_path) -> AsyncIterator[ExchangeWorld]:
    secret_key = Fernet.generate_key().decode()
    database_url = f"sqlite:///{tmp_path / 'axisor.db'}"
    database = Database(database_url)
    upgrade(database)
    account_id = _link_guarded_account(database, CredentialCipher([secret_key]))
    mock = await _mock_with_trade()
    redis = Redis.from_url(redis_url, decode_responses=True)
    async with run_mock_exchange(mock) as base_url:
        env = {
            **os.environ,
            "AXISOR_DATA_DIR": str(tmp_path),
            "AXISOR_SECRET_KEY": secret_key,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            LNM_BASE_URL_ENV: base_url,
            "LOG_FORMAT": "json",
        }
        prefix = f"t{uuid.uuid4().hex[:10]}"
        yield ExchangeWorld(database, mock, redis, redis_url, prefix, account_id, env)
    await redis.aclose()
    database.dispose()


async def start_process(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop_process(process: asyncio.subprocess.Process) -> bytes:
    """Send SIGTERM (SIGKILL after 10 s) and return what the process wrote to stderr."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    except TimeoutError:
        process.kill()
        _, stderr = await process.communicate()
    return stderr


async def wait_until(predicate, timeout_s: float = 15.0, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval_s)
    return False


async def _registered(world: ExchangeWorld, name: str) -> bool:
    return name in {w.name for w in await list_workers(world.redis, QUEUE)}


async def _completed(world: ExchangeWorld, job_id: str) -> bool:
    return await world.redis.zscore(world.target.key("completed"), job_id) is not None


async def _run_check(world: ExchangeWorld, queue: Queue) -> None:
    """Queue a margin-guard-check job and wait until the worker imported the trade."""
    check = GuardCheckJob(account_id=world.account_id)
    job_id = guard_check_job_id(world.account_id, uuid.uuid4().hex[:8])
    await queue.add(GUARD_CHECK_JOB, check.model_dump(mode="json"), job_options(job_id))
    assert await wait_until(lambda: _completed(world, job_id)), "the check job did not complete"
    assert world.position() is not None


async def _queue_action(world: ExchangeWorld, queue: Queue) -> str:
    job = world.action_job()
    await queue.add(GUARD_ACTION_JOB, job.model_dump(mode="json"), job_options(job.job_id))
    return job.job_id


async def _mutation_applied(world: ExchangeWorld) -> bool:
    return len(world.add_margin_mutations()) == 1


async def _stuck_ids(world: ExchangeWorld, expected: list[str]) -> bool:
    workers = {w.name for w in await list_workers(world.redis, QUEUE)}
    return [s.id for s in await find_stuck(world.redis, world.target, workers)] == expected


async def test_worker_run_processes_guard_jobs(world):
    """`axisor worker run` imports the trade, adds margin once and stops cleanly on SIGTERM."""
    process = await start_process(
        world.env,
        "-m",
        "axisor.cli.main",
        "worker",
        "run",
        "--prefix",
        world.prefix,
        "--health-host",
        "127.0.0.1",
        "--health-port",
        "0",
    )
    queue = world.queue()
    try:
        assert await wait_until(lambda: _any_worker(world)), "the worker never registered"
        (info,) = await list_workers(world.redis, QUEUE)
        assert info.health_url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as client:
            health = await client.get(info.health_url)
        assert health.status_code == 200
        assert health.json()["status"] == "HEALTHY"

        await _run_check(world, queue)
        world.mock.set_price(CROSSING_PRICE)
        job_id = await _queue_action(world, queue)
        assert await wait_until(lambda: _completed(world, job_id))

        job = await queue.getJob(job_id)
        assert job.returnvalue["outcome"] == "margin_added"
        assert len(world.add_margin_mutations()) == 1
        assert [row.state for row in world.ledger_rows()] == [LedgerState.CONFIRMED.value]
        assert await world.redis.hget(world.target.key(job_id), WORKER_FIELD) == info.name
    finally:
        await queue.close()
        stderr = await stop_process(process)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert await list_workers(world.redis, QUEUE) == []


async def _any_worker(world: ExchangeWorld) -> bool:
    return bool(await list_workers(world.redis, QUEUE))


async def test_killed_mid_call_acts_once(world):
    """SIGKILL while add-margin is in flight: stuck within one stalled interval, run once more
    by another worker, which confirms the margin through reconciliation instead of adding it
    again."""
    script = ["-c", WORKER_SCRIPT]
    victim = await start_process(world.env, *script, "victim-1", world.prefix, str(INTERVAL_MS))
    rescuer = None
    queue = world.queue()
    try:
        assert await wait_until(lambda: _registered(world, "victim-1"), timeout_s=20)
        await _run_check(world, queue)
        world.mock.set_price(CROSSING_PRICE)
        # The venue applies the next add-margin and then holds the reply for a minute, so the
        # worker is still waiting on the call when it is killed.
        world.mock.faults.hold_s = 60.0
        world.mock.venue.faults.fail_after_apply_once("add_margin")
        job_id = await _queue_action(world, queue)

        assert await wait_until(lambda: _mutation_applied(world))
        victim.kill()
        await victim.wait()
        killed_at = time.monotonic()
        assert [row.state for row in world.ledger_rows()] == [LedgerState.SENT.value]

        assert await wait_until(lambda: _stuck_ids(world, [job_id]), timeout_s=5)
        assert time.monotonic() - killed_at <= INTERVAL_MS / 1000 + 0.5

        rescuer = await start_process(
            world.env, *script, "rescuer-1", world.prefix, str(INTERVAL_MS)
        )
        assert await wait_until(lambda: _completed(world, job_id), timeout_s=30)
        job = await queue.getJob(job_id)
        assert job.returnvalue["outcome"] == "confirmed_by_reconciliation"
        assert await world.redis.hget(world.target.key(job_id), WORKER_FIELD) == "rescuer-1"
        assert await world.redis.hget(world.target.key(job_id), "stc") == "1"
        assert len(world.add_margin_mutations()) == 1
        assert [row.state for row in world.ledger_rows()] == [LedgerState.CONFIRMED.value]
        assert world.position().sats_added == world.add_margin_mutations()[0].amount_sats
    finally:
        await queue.close()
        with contextlib.suppress(ProcessLookupError):
            victim.kill()
        await victim.communicate()
        if rescuer is not None:
            await stop_process(rescuer)
