"""``axisor jobs``, ``axisor trades``, ``axisor automations`` and ``axisor accounts
balances``: read-only views of the work the platform runs and did."""

from __future__ import annotations

import asyncio
import datetime as dt

import click

from axisor.cli.accounts import accounts_group
from axisor.cli.common import database_of, emit, print_table, redis_url_of, target_options
from axisor.config import Settings
from axisor.ops import QueueTarget, redis_client
from axisor.ops.durations import parse_duration_ms

# jobs


@click.group("jobs")
def jobs_group() -> None:
    """Show how jobs spread over workers and priorities."""


@jobs_group.command("distribution")
@target_options()
@click.pass_obj
def distribution_command(settings: Settings, queue: str, prefix: str, as_json: bool) -> None:
    """Active jobs per worker."""
    from axisor.ops.health import list_workers
    from axisor.ops.stuck import active_by_worker

    async def read():
        async with redis_client(redis_url_of(settings)) as client:
            workers = await list_workers(client, queue)
            counts = await active_by_worker(client, QueueTarget(queue, prefix), workers)
            return workers, counts

    workers, counts = asyncio.run(read())
    for worker in workers:
        counts.setdefault(worker.name, 0)
    concurrency = {w.name: w.concurrency for w in workers}
    rows = [[name, count, concurrency.get(name)] for name, count in sorted(counts.items())]
    emit(
        as_json,
        {"queue": queue, "active_by_worker": counts},
        lambda: print_table(f"Active jobs in {queue}", ["worker", "active", "concurrency"], rows),
    )


@jobs_group.command("priorities")
@target_options()
@click.pass_obj
def priorities_command(settings: Settings, queue: str, prefix: str, as_json: bool) -> None:
    """Waiting jobs per priority range (1 runs first)."""
    from axisor.ops.stats import priority_buckets

    async def read():
        async with redis_client(redis_url_of(settings)) as client:
            return await priority_buckets(client, QueueTarget(queue, prefix))

    buckets = asyncio.run(read())
    emit(
        as_json,
        {"queue": queue, "buckets": buckets},
        lambda: print_table(
            f"Waiting jobs by priority in {queue}",
            ["priority", "waiting"],
            [[b["priority"], b["waiting"]] for b in buckets],
        ),
    )


# trades, automations, accounts


@click.group("trades")
def trades_group() -> None:
    """Show what the platform did on exchanges."""


@trades_group.command("recent")
@click.option("--since", default="24h", show_default=True, help="Age of the oldest entry.")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def trades_command(settings: Settings, since: str, limit: int, as_json: bool) -> None:
    """Trade log entries, newest first."""
    from sqlalchemy import select

    from axisor.db.models import TradeLogEntry

    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(
        milliseconds=parse_duration_ms(since, "--since")
    )
    with database_of(settings) as database, database.session() as session:
        entries = session.scalars(
            select(TradeLogEntry)
            .where(TradeLogEntry.created_at >= cutoff)
            .order_by(TradeLogEntry.created_at.desc())
            .limit(limit)
        ).all()
        rows = [
            {
                "id": e.id,
                "at": e.created_at.isoformat(),
                "user_id": e.user_id,
                "account_id": e.account_id,
                "trade_id": e.trade_id,
                "action": e.action,
                "side": e.side,
                "quantity_usd": e.quantity_usd,
                "price": e.price,
                "amount_sats": e.amount_sats,
                "status": e.status,
                "error": e.error,
            }
            for e in entries
        ]
    columns = ["at", "user_id", "account_id", "trade_id", "action", "side", "amount_sats", "status"]
    emit(
        as_json,
        {"since": since, "trades": rows},
        lambda: print_table(
            f"Trades since {since}", columns, [[r[c] for c in columns] for r in rows]
        ),
    )


@click.group("automations")
def automations_group() -> None:
    """Trading automations."""


@automations_group.command("list")
@click.option("--type", "kind", help="Only automations of this type.")
@click.option("--active", "active_only", is_flag=True, help="Only active automations.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def automations_command(
    settings: Settings, kind: str | None, active_only: bool, as_json: bool
) -> None:
    """Automations with their owner, account and last run."""
    from sqlalchemy import select

    from axisor.db.models import Automation
    from axisor.ops import mask_secrets

    statement = select(Automation).order_by(Automation.id)
    if kind:
        statement = statement.where(Automation.type == kind)
    if active_only:
        statement = statement.where(Automation.active.is_(True))
    with database_of(settings) as database, database.session() as session:
        rows = [
            {
                "id": a.id,
                "user_id": a.user_id,
                "account_id": a.account_id,
                "type": a.type,
                "active": a.active,
                "last_executed_at": a.last_executed_at,
                "config": mask_secrets(a.config),
            }
            for a in session.scalars(statement)
        ]
    columns = ["id", "user_id", "account_id", "type", "active", "last_executed_at"]
    emit(
        as_json,
        {"automations": rows},
        lambda: print_table("Automations", columns, [[r[c] for c in columns] for r in rows]),
    )


@accounts_group.command("balances")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def balances_command(settings: Settings, as_json: bool) -> None:
    """Free balance of every active account, read through the exchange resolver."""
    with database_of(settings) as database:
        rows = asyncio.run(_balances(database, settings))
    columns = ["account_id", "user_id", "exchange", "free_sats", "note"]
    emit(
        as_json,
        {"accounts": rows},
        lambda: print_table("Balances", columns, [[r[c] for c in columns] for r in rows]),
    )


async def _balances(database, settings: Settings) -> list[dict]:
    from sqlalchemy import select

    from axisor.db.models import ExchangeAccount
    from axisor.exchange.registry import account_resolver

    with database.session() as session:
        accounts = [
            (a.id, a.user_id, a.exchange)
            for a in session.scalars(
                select(ExchangeAccount).where(ExchangeAccount.active.is_(True))
            )
        ]
    resolver = account_resolver(database, data_dir=settings.data_dir)
    try:
        return [await _balance(resolver, *account) for account in accounts]
    finally:
        await resolver.aclose()


async def _balance(resolver, account_id: int, user_id: int, exchange: str) -> dict:
    from axisor.errors import AxisorError, NotSupportedError

    row = {
        "account_id": account_id,
        "user_id": user_id,
        "exchange": exchange,
        "free_sats": None,
        "note": "",
    }
    try:
        balance = await (await resolver.for_account(account_id)).get_balance()
    except NotSupportedError as exc:
        row["note"] = f"unsupported: {exc}"
    except (AxisorError, OSError) as exc:
        row["note"] = f"failed: {type(exc).__name__}: {exc}"
    else:
        row["free_sats"] = balance.free_sats
    return row
