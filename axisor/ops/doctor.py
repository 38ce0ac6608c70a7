"""Diagnoses: why one user's Margin Guard would not act, and whether the platform runs.

``diagnose_user`` lists, in the order an operator should fix them, every reason the user's
protection would not act, each with its fix. ``diagnose_platform`` checks Redis, migrations,
workers per queue, the engine's last tick and the exchange stream.

Keys the engine and the stream client write (JSON):
    axisor:engine:last-tick   {"time_ms": tick time, "price": "USD per BTC", "at": epoch ms}
    axisor:stream:status      {"state": "connected", "last_message_ms": epoch ms, ...}
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from axisor.db.models import (
    Automation,
    ExchangeAccount,
    LedgerEntry,
    LedgerState,
    MarginGuardConfig,
    Position,
    PositionStatus,
    User,
)
from axisor.db.session import Database
from axisor.errors import InvalidConfigError
from axisor.guard.positions import load_guarded
from axisor.ops.health import list_workers
from axisor.queue.names import QUEUES

ENGINE_TICK_KEY = "axisor:engine:last-tick"
STREAM_STATUS_KEY = "axisor:stream:status"
ENGINE_TICK_STALE_MS = 60_000
LAST_ERRORS = 5

# Returns None when the account's credentials work, else the problem.
AccountCheck = Callable[[ExchangeAccount], Awaitable[str | None]]


@dataclass
class Finding:
    """One check: ``ok`` False means the protection (or platform) is blocked by ``problem``."""

    check: str
    ok: bool
    problem: str | None = None
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def passed(check: str, **details: Any) -> Finding:
    return Finding(check, True, details=details)


def failed(check: str, problem: str, fix: str, **details: Any) -> Finding:
    return Finding(check, False, problem, fix, details)


@dataclass
class UserFacts:
    """Rows of one user read in one session: configurations, accounts, positions and errors."""

    user_id: int
    email: str
    plan: str
    configs: list[MarginGuardConfig]
    accounts: list[ExchangeAccount]
    positions: list[Position]
    automations: list[Automation]
    errors: list[LedgerEntry]


def load_user(database: Database, user_ref: str) -> UserFacts:
    """Read the user named by id or email; raise LookupError when there is none."""
    with database.session() as session:
        user = _find_user(session, user_ref)
        accounts = list(
            session.scalars(select(ExchangeAccount).where(ExchangeAccount.user_id == user.id))
        )
        account_ids = [account.id for account in accounts]
        facts = UserFacts(
            user_id=user.id,
            email=user.email,
            plan=user.plan,
            configs=list(
                session.scalars(
                    select(MarginGuardConfig).where(MarginGuardConfig.user_id == user.id)
                )
            ),
            accounts=accounts,
            positions=list(
                session.scalars(
                    select(Position).where(
                        Position.account_id.in_(account_ids),
                        Position.status == PositionStatus.RUNNING.value,
                    )
                )
            ),
            automations=list(
                session.scalars(select(Automation).where(Automation.user_id == user.id))
            ),
            errors=list(
                session.scalars(
                    select(LedgerEntry)
                    .where(
                        LedgerEntry.account_id.in_(account_ids),
                        LedgerEntry.state.in_(
                            [LedgerState.FAILED.value, LedgerState.UNKNOWN.value]
                        ),
                    )
                    .order_by(LedgerEntry.updated_at.desc(), LedgerEntry.id.desc())
                    .limit(LAST_ERRORS)
                )
            ),
        )
        session.expunge_all()
    return facts


def _find_user(session: Session, user_ref: str) -> User:
    ref = user_ref.strip()
    user = session.get(User, int(ref)) if ref.isdigit() else None
    if user is None:
        user = session.scalar(select(User).where(User.email == ref.lower()))
    if user is None:
        raise LookupError(f"no user with id or email {user_ref!r}")
    return user


async def diagnose_user(
    database: Database,
    user_ref: str,
    *,
    check_credentials: AccountCheck,
    check_exchange: AccountCheck,
    price_usd: Decimal | None = None,
) -> tuple[UserFacts, list[Finding]]:
    """Return the user's facts and the findings, in the order the problems should be fixed."""
    facts = await asyncio.to_thread(load_user, database, user_ref)
    findings = [_config_finding(facts), _enabled_finding(facts), _accounts_finding(facts)]
    active = [account for account in facts.accounts if account.active]
    findings += [await _account_finding("credentials", a, check_credentials) for a in active]
    findings += [await _account_finding("exchange", a, check_exchange) for a in active]
    findings.append(_positions_finding(facts))
    findings.append(_automations_finding(facts))
    findings.append(_plan_finding(facts))
    guarded = await asyncio.to_thread(_guarded_positions, database, facts)
    findings += _position_findings(guarded, price_usd)
    findings.append(_errors_finding(facts))
    return facts, findings


def _config_finding(facts: UserFacts) -> Finding:
    if facts.configs:
        return passed("configuration", count=len(facts.configs))
    return failed(
        "configuration",
        "the user has no Margin Guard configuration",
        "create one for the account (all positions) or for a position",
    )


def _enabled_finding(facts: UserFacts) -> Finding:
    enabled = [c.id for c in facts.configs if c.enabled]
    if enabled or not facts.configs:
        return passed("enabled", enabled=enabled)
    return failed(
        "enabled",
        f"all {len(facts.configs)} Margin Guard configurations are disabled",
        "enable the configuration; a plan downgrade may have disabled it",
        disabled=[c.id for c in facts.configs],
    )


def _accounts_finding(facts: UserFacts) -> Finding:
    active = [a.id for a in facts.accounts if a.active]
    if active:
        return passed("active account", accounts=active)
    problem = "the user has no exchange account" if not facts.accounts else "no account is active"
    return failed("active account", problem, "link an LN Markets account or re-activate one")


async def _account_finding(name: str, account: ExchangeAccount, check: AccountCheck) -> Finding:
    problem = await check(account)
    if problem is None:
        return passed(name, account_id=account.id, exchange=account.exchange)
    fixes = {
        "credentials": "ask the user to enter new API credentials (key, secret, passphrase)",
        "exchange": "check the exchange status and the network path from the workers",
    }
    return failed(name, f"account {account.id}: {problem}", fixes[name], account_id=account.id)


def _positions_finding(facts: UserFacts) -> Finding:
    if facts.positions:
        return passed("running positions", count=len(facts.positions))
    return failed(
        "running positions",
        "no running position is known: there is nothing to protect",
        "if the user has open trades, check that margin-guard-check jobs run for the account",
    )


def _automations_finding(facts: UserFacts) -> Finding:
    inactive = [a.id for a in facts.automations if not a.active]
    if not inactive:
        return passed("automations", count=len(facts.automations))
    return failed(
        "automations",
        f"{len(inactive)} automations are inactive",
        "re-activate them if the user expects them to run; a plan downgrade may have stopped them",
        inactive=inactive,
    )


def _plan_finding(facts: UserFacts) -> Finding:
    """Check each enabled configuration against the plan; skipped when plans are unavailable."""
    try:
        from axisor import plans
    except ImportError:
        return passed("plan limits", skipped="axisor.plans is not available")
    protected = len(facts.positions)
    problems = []
    for row in (c for c in facts.configs if c.enabled):
        error = _plan_error(plans, facts.plan, row, protected)
        if error is not None:
            problems.append(f"configuration {row.id}: {error}")
    if not problems:
        return passed("plan limits", plan=facts.plan)
    return failed("plan limits", "; ".join(problems), "change the setting or upgrade the plan")


def _plan_error(plans, plan: str, row: MarginGuardConfig, protected: int) -> str | None:
    from axisor.guard.config import parse_guard_config

    try:
        config = parse_guard_config(row.config)
    except InvalidConfigError as exc:
        return f"stored setting is invalid: {exc}"
    stored_mode = getattr(row, "mode", None)
    modes = ["global"] if row.position_id is None else ["selected", "individual"]
    if stored_mode:
        modes = [stored_mode]
    errors = []
    for mode in modes:
        try:
            plans.check_guard_config(plan, config, mode, protected)
            return None
        except InvalidConfigError as exc:
            errors.append(str(exc))
    return errors[0]


def _guarded_positions(database: Database, facts: UserFacts) -> list:
    with database.session() as session:
        return [(p.id, load_guarded(session, p.id)) for p in facts.positions]


def _position_findings(guarded: list, price_usd: Decimal | None) -> list[Finding]:
    findings = []
    for position_id, item in guarded:
        problem = _position_problem(item, price_usd)
        if problem is not None:
            findings.append(failed(f"position {position_id}", *problem, position_id=position_id))
    return findings


def _position_problem(item, price_usd: Decimal | None) -> tuple[str, str] | None:
    from axisor.guard.policy import is_crossed

    if item is None:
        return "no configuration applies to it", "add an account-wide or a position configuration"
    position = item.position
    if not item.enabled:
        return "its configuration or account is disabled", "enable the configuration and account"
    if position.guard_paused_reason:
        reason = position.guard_paused_reason
        return f"guard paused: {reason}", "add funds; the next account check re-arms the guard"
    if position.guard_actions >= item.config.max_actions:
        return (
            f"the guard already acted {position.guard_actions} times (max_actions)",
            "raise max_actions if more actions are wanted",
        )
    trigger = item.trigger
    if trigger is None:
        return "no trigger price: the liquidation price is unknown", "run an account check"
    if price_usd is not None and is_crossed(position.side, price_usd, trigger):
        return (
            f"price {price_usd} USD already crosses the trigger {trigger} USD, so the guard "
            "acts on the next tick or its job failed",
            "check the margin-guard queue for a failed or stuck job of this position",
        )
    return None


def _errors_finding(facts: UserFacts) -> Finding:
    if not facts.errors:
        return passed("last errors")
    rows = [
        {
            "key": e.idempotency_key,
            "state": e.state,
            "error": e.error,
            "at": e.updated_at.isoformat(),
        }
        for e in facts.errors
    ]
    return failed(
        "last errors",
        f"{len(rows)} recent actions failed or have an unknown outcome; latest: {rows[0]['error']}",
        "read each error; unknown outcomes are reconciled by the job's next attempt",
        errors=rows,
    )


# Platform


async def diagnose_platform(
    client: Redis, database: Database, *, prefix: str = "bull"
) -> list[Finding]:
    """Check Redis, migrations, workers per queue, the engine's last tick and the stream."""
    findings = [
        await _redis_finding(client),
        await asyncio.to_thread(_migrations_finding, database),
    ]
    if not findings[0].ok:
        return findings
    for queue in QUEUES:
        findings.append(await _workers_finding(client, queue))
    findings.append(await _engine_finding(client))
    findings.append(await _stream_finding(client))
    return findings


async def _redis_finding(client: Redis) -> Finding:
    started = time.perf_counter()
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return failed("redis", f"PING failed: {type(exc).__name__}", "start Redis or fix REDIS_URL")
    return passed("redis", latency_ms=round((time.perf_counter() - started) * 1000, 2))


def _migrations_finding(database: Database) -> Finding:
    from axisor.db.migrate import current_revision, head_revision, is_up_to_date

    try:
        if is_up_to_date(database):
            return passed("migrations", revision=head_revision())
        current = current_revision(database)
    except SQLAlchemyError as exc:
        return failed(
            "migrations", f"cannot read the revision: {type(exc).__name__}", "check DATABASE_URL"
        )
    return failed(
        "migrations",
        f"database is at revision {current}, the code expects {head_revision()}",
        "run: axisor db upgrade",
    )


async def _workers_finding(client: Redis, queue: str) -> Finding:
    workers = await list_workers(client, queue)
    if workers:
        return passed(f"workers {queue}", count=len(workers), names=[w.name for w in workers])
    return failed(
        f"workers {queue}",
        f"no worker has a heartbeat on queue {queue}",
        f"start one: axisor worker run --queue {queue}",
    )


async def _engine_finding(client: Redis) -> Finding:
    raw = await client.get(ENGINE_TICK_KEY)
    if raw is None:
        return failed("engine", "the engine has recorded no tick", "start the engine")
    tick = json.loads(raw)
    age_ms = int(time.time() * 1000) - int(tick.get("at", 0))
    if age_ms > ENGINE_TICK_STALE_MS:
        return failed(
            "engine",
            f"the last tick is {age_ms} ms old",
            "check the engine process and its price feed",
            **tick,
        )
    return passed("engine", age_ms=age_ms, price=tick.get("price"))


async def _stream_finding(client: Redis) -> Finding:
    raw = await client.get(STREAM_STATUS_KEY)
    if raw is None:
        return failed("exchange stream", "not connected", "start the stream client")
    status = json.loads(raw)
    if status.get("state") != "connected":
        return failed("exchange stream", str(status.get("state")), "check the stream client logs")
    return passed("exchange stream", **status)


async def engine_price(client: Redis) -> Decimal | None:
    """Return the price of the engine's last tick, USD per BTC, or None."""
    raw = await client.get(ENGINE_TICK_KEY)
    if raw is None:
        return None
    price = json.loads(raw).get("price")
    return None if price is None else Decimal(str(price))
