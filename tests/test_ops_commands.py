"""Operator commands through CliRunner: trades, automations, balances, the Margin Guard doctor,
queue optimize and pool recommend.

Commands that reach an exchange read a mock LN Markets API that this test serves on 127.0.0.1;
AXISOR_LNM_BASE_URL points the account resolver at it. The CLI runs in a thread, because each
command starts its own event loop while the mock needs the test's loop to answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import time
import uuid
from decimal import Decimal

import click
import pytest
from bullmq import Queue
from click.testing import CliRunner
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from sqlalchemy import select

from axisor.accounts import link_account
from axisor.cli.accounts import accounts_group
from axisor.cli.main import AxisorGroup
from axisor.cli.ops import OPS_COMMANDS
from axisor.config import Settings
from axisor.db.crypto import CredentialCipher, Credentials
from axisor.db.models import (
    Automation,
    ExchangeAccount,
    LedgerEntry,
    LedgerState,
    Position,
    TradeLogEntry,
    User,
)
from axisor.exchange.paper import PaperVenue
from axisor.exchange.registry import LNM_BASE_URL_ENV
from axisor.guard.store import configure_guard
from axisor.logs import configure_logging
from axisor.mockexchange.server import MockExchange, run_mock_exchange
from axisor.ops import MASK, QueueTarget
from axisor.ops.stuck import WORKER_FIELD
from axisor.queue.names import GUARD_ACTION_JOB, MARGIN_GUARD_QUEUE

QUEUE = MARGIN_GUARD_QUEUE
CREDENTIALS = Credentials(key="lnm-cmd-key", secret="cmd-secret", passphrase="cmd-pass")
MOCK_BALANCE_SATS = 1_234_567


def _quiet_logs() -> None:
    """Send log lines to stderr, as `axisor` does, so that stdout holds only the document."""
    configure_logging("console", "WARNING")


def _cli() -> click.Group:
    group = AxisorGroup(callback=_quiet_logs)
    for command in OPS_COMMANDS:
        group.add_command(command)
    group.add_command(accounts_group)
    return group


def invoke(settings: Settings, *args: str, input: str | None = None):
    return CliRunner().invoke(_cli(), list(args), obj=settings, input=input)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(db, redis_url, tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, redis_url=redis_url, database_url=db.url)


@pytest.fixture
def cipher(monkeypatch) -> CredentialCipher:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("AXISOR_SECRET_KEY", key)
    return CredentialCipher([key])


@pytest.fixture
async def mock_url(monkeypatch):
    """Serve a mock LN Markets API that accepts CREDENTIALS, and point the resolver at it."""
    venue = PaperVenue()
    venue.set_price(Decimal(60_000), int(time.time() * 1000))
    mock = MockExchange(venue)
    mock.register(
        "mock-1",
        CREDENTIALS.key,
        CREDENTIALS.secret,
        CREDENTIALS.passphrase,
        balance_sats=MOCK_BALANCE_SATS,
    )
    async with run_mock_exchange(mock) as base_url:
        monkeypatch.setenv(LNM_BASE_URL_ENV, base_url)
        yield mock


def _user_with_account(db, email: str = "ops@example.com") -> tuple[int, int]:
    with db.session() as session:
        user = User(email=email)
        account = ExchangeAccount(user=user, exchange="paper")
        session.add(account)
        session.flush()
        return user.id, account.id


# trades recent


def _log_entry(user_id: int, account_id: int, trade_id: str, age: dt.timedelta) -> TradeLogEntry:
    return TradeLogEntry(
        user_id=user_id,
        account_id=account_id,
        trade_id=trade_id,
        action="add_margin",
        side="b",
        quantity_usd=600,
        price=Decimal("55000.5"),
        amount_sats=12_000,
        status="confirmed",
        created_at=dt.datetime.now(dt.UTC) - age,
    )


def test_trades_recent_newest_first(db, settings):
    """Entries inside --since are listed newest first; older ones and --limit cut the rest."""
    user_id, account_id = _user_with_account(db)
    with db.session() as session:
        session.add(_log_entry(user_id, account_id, "t-old", dt.timedelta(days=2)))
        session.add(_log_entry(user_id, account_id, "t-1", dt.timedelta(hours=3)))
        session.add(_log_entry(user_id, account_id, "t-2", dt.timedelta(minutes=5)))

    result = invoke(settings, "trades", "recent", "--json")
    assert result.exit_code == 0, result.output
    trades = json.loads(result.stdout)["trades"]
    assert [t["trade_id"] for t in trades] == ["t-2", "t-1"]
    assert trades[0]["amount_sats"] == 12_000
    assert trades[0]["status"] == "confirmed"
    assert Decimal(trades[0]["price"]) == Decimal("55000.5")

    hour = json.loads(invoke(settings, "trades", "recent", "--since", "1h", "--json").stdout)
    assert [t["trade_id"] for t in hour["trades"]] == ["t-2"]
    limited = invoke(settings, "trades", "recent", "--since", "7d", "--limit", "1", "--json")
    assert [t["trade_id"] for t in json.loads(limited.stdout)["trades"]] == ["t-2"]

    table = invoke(settings, "trades", "recent")
    assert table.exit_code == 0, table.output
    assert "t-2" in table.output
    assert "t-old" not in table.output


def test_trades_recent_rejects_bad_since(settings):
    result = invoke(settings, "trades", "recent", "--since", "yesterday")
    assert result.exit_code != 0
    assert "--since" in result.output


# automations list


def test_automations_list_filters_and_masks(db, settings):
    """--type and --active filter the list; secret-looking config entries are masked."""
    user_id, account_id = _user_with_account(db)
    with db.session() as session:
        session.add(
            Automation(
                user_id=user_id,
                account_id=account_id,
                type="dca",
                config={"amount_usd": 10, "webhook": {"token": "tok-never-shown"}},
            )
        )
        session.add(
            Automation(user_id=user_id, account_id=account_id, type="grid", config={}, active=False)
        )

    result = invoke(settings, "automations", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["automations"]
    assert [r["type"] for r in rows] == ["dca", "grid"]
    assert rows[0]["config"] == {"amount_usd": 10, "webhook": {"token": MASK}}
    assert "tok-never-shown" not in result.stdout

    active = json.loads(invoke(settings, "automations", "list", "--active", "--json").stdout)
    assert [r["type"] for r in active["automations"]] == ["dca"]
    grid = json.loads(invoke(settings, "automations", "list", "--type", "grid", "--json").stdout)
    assert [r["active"] for r in grid["automations"]] == [False]


# accounts balances


async def test_accounts_balances_through_mock(db, settings, cipher, mock_url):
    """A linked account shows its balance on the mock; paper and unknown keys show why not."""
    linked = link_account(db, cipher, email="bal@example.com", credentials=CREDENTIALS)
    wrong = Credentials(key="lnm-unknown", secret="s", passphrase="p")
    rejected = link_account(db, cipher, email="bal@example.com", credentials=wrong)
    _, paper = _user_with_account(db, "paper@example.com")

    result = await asyncio.to_thread(invoke, settings, "accounts", "balances", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["account_id"]: r for r in json.loads(result.stdout)["accounts"]}
    assert rows[linked]["free_sats"] == MOCK_BALANCE_SATS
    assert rows[linked]["note"] == ""
    assert rows[rejected]["free_sats"] is None
    assert rows[rejected]["note"].startswith("failed: AuthenticationError")
    assert rows[paper]["free_sats"] is None
    assert rows[paper]["note"].startswith("unsupported:")
    assert CREDENTIALS.secret not in result.stdout

    table = await asyncio.to_thread(invoke, settings, "accounts", "balances")
    assert table.exit_code == 0, table.output
    assert f"{MOCK_BALANCE_SATS}" in table.output


# doctor margin-guard


def _running_position(db, account_id: int) -> int:
    """Store a 600 USD long at 10x from 60,000 USD; its trigger at 0.8 is 55,636 USD."""
    with db.session() as session:
        position = Position(
            account_id=account_id,
            trade_id="lnm-trade-1",
            side="buy",
            quantity_usd=600,
            entry_price=Decimal(60_000),
            margin_sats=100_000,
            leverage=Decimal(10),
            liquidation_price=Decimal(54_545),
        )
        session.add(position)
        session.flush()
        return position.id


async def test_doctor_margin_guard_command(db, settings, cipher, mock_url):
    """The doctor reaches the account on the mock, reads the price there and names the crossed
    position; an unknown user is a one-line error."""
    account_id = link_account(db, cipher, email="guarded@example.com", credentials=CREDENTIALS)
    with db.session() as session:
        session.scalar(select(User).where(User.email == "guarded@example.com")).plan = "pro"
    configure_guard(db, account_id, {"margin_threshold": "0.8"}, mode="global")
    position_id = _running_position(db, account_id)
    mock_url.set_price(Decimal(55_000))

    result = await asyncio.to_thread(
        invoke, settings, "doctor", "margin-guard", "Guarded@example.com", "--json"
    )
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["plan"] == "pro"
    findings = {f["check"]: f for f in document["findings"]}
    assert findings["credentials"]["ok"] is True
    assert findings["exchange"]["ok"] is True
    assert findings["running positions"]["ok"] is True
    problems = [f["check"] for f in document["findings"] if not f["ok"]]
    assert problems == [f"position {position_id}"]
    assert "already crosses the trigger" in findings[f"position {position_id}"]["problem"]

    table = await asyncio.to_thread(invoke, settings, "doctor", "margin-guard", str(account_id))
    assert "1 problems found" in table.output

    missing = await asyncio.to_thread(invoke, settings, "doctor", "margin-guard", "nobody@x.test")
    assert missing.exit_code == 1
    assert "no user with id or email 'nobody@x.test'" in missing.output


async def test_doctor_reports_unreachable_exchange(db, settings, cipher, monkeypatch):
    """With the exchange unreachable the doctor names the account and the error type."""
    account_id = link_account(db, cipher, email="far@example.com", credentials=CREDENTIALS)
    config = {"margin_threshold": "0.8", "action": "close_position"}
    configure_guard(db, account_id, config, mode="global")
    monkeypatch.setenv(LNM_BASE_URL_ENV, f"http://127.0.0.1:{_closed_port()}")

    result = await asyncio.to_thread(
        invoke, settings, "doctor", "margin-guard", "far@example.com", "--json"
    )
    assert result.exit_code == 1, result.output
    findings = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    assert findings["exchange"]["ok"] is False
    assert findings["exchange"]["problem"].startswith(f"account {account_id}: ")


def _closed_port() -> int:
    """Return a loopback port that nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# queue optimize


async def _make_stuck(redis_url: str, prefix: str, job_id: str, name: str, data: dict) -> None:
    """Add a job and move it to active with no lock, as a killed worker leaves it."""
    queue = Queue(QUEUE, {"connection": redis_url, "prefix": prefix})
    await queue.add(name, data, {"jobId": job_id, "attempts": 5})
    await queue.close()
    target = QueueTarget(QUEUE, prefix)
    async with Redis.from_url(redis_url) as client:
        await client.lmove(target.key("wait"), target.key("active"), "RIGHT", "LEFT")
        await client.hset(target.key(job_id), "processedOn", int(time.time() * 1000))
        await client.hset(target.key(job_id), WORKER_FIELD, "gone-1234")


def _confirmed_position(db) -> dict:
    """Store a position whose add_margin action at version 2 the ledger shows confirmed."""
    user_id, account_id = _user_with_account(db, "optimize@example.com")
    position_id = _running_position(db, account_id)
    with db.session() as session:
        session.add(
            LedgerEntry(
                idempotency_key=f"guard:{position_id}:2:add_margin",
                account_id=account_id,
                position_id=position_id,
                action="add_margin",
                state=LedgerState.CONFIRMED.value,
            )
        )
    return {"position_id": position_id, "account_id": account_id, "version": 2}


async def _list(redis_url: str, key: str) -> list[str]:
    async with Redis.from_url(redis_url, decode_responses=True) as client:
        return await client.lrange(key, 0, -1)


def test_queue_optimize_moves_stuck_jobs(db, settings, redis_url, prefix):
    """Declined, nothing moves. Confirmed, the plain job goes back to wait, the confirmed guard
    action is not sent to wait again, and --to failed then moves it to failed."""
    action = {**_confirmed_position(db), "action": "add_margin"}
    asyncio.run(_make_stuck(redis_url, prefix, "guard-a", GUARD_ACTION_JOB, action))
    asyncio.run(_make_stuck(redis_url, prefix, "plain-1", "job", {"n": 1}))
    target = QueueTarget(QUEUE, prefix)

    declined = invoke(settings, "queue", "optimize", "--prefix", prefix, input="n\n")
    assert declined.exit_code == 1
    assert "2 stuck jobs go to wait" in declined.output
    assert sorted(asyncio.run(_list(redis_url, target.key("active")))) == ["guard-a", "plain-1"]

    result = invoke(settings, "queue", "optimize", "--prefix", prefix, "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {s["id"] for s in report["stuck"]} == {"guard-a", "plain-1"}
    assert {s["reason"] for s in report["stuck"]} == {"lock expired: no worker renews it"}
    assert {s["worker"] for s in report["stuck"]} == {"gone-1234"}
    assert report["moves"]["moved"] == ["plain-1"]
    assert "confirmed" in report["moves"]["rejected"]["guard-a"]
    assert asyncio.run(_list(redis_url, target.key("wait"))) == ["plain-1"]
    assert asyncio.run(_list(redis_url, target.key("active"))) == ["guard-a"]

    again = invoke(settings, "queue", "optimize", "--prefix", prefix, "--to", "failed", "--yes")
    assert again.exit_code == 0, again.output
    assert "moved to failed: guard-a" in again.output
    assert asyncio.run(_list(redis_url, target.key("active"))) == []


# pool recommend


def test_pool_recommend_idle_queue_json(settings, prefix):
    """An idle queue with no workers gets the minimum, with the reasoning in the document."""
    result = invoke(settings, "pool", "recommend", "--prefix", prefix, "--min", "2", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["recommended"] == 2
    assert document["load"]["waiting"] == 0
    assert document["load"]["current_workers"] == 0
    assert document["reasoning"]

    invalid = invoke(settings, "pool", "recommend", "--min", "5", "--max", "2")
    assert invalid.exit_code == 2
    assert "--min at most --max" in invalid.output
