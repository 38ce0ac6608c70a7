"""Operator commands: ``queue``, ``redis``, ``doctor``, ``jobs``, ``trades``, ``automations``,
``accounts`` and ``pool``.

Every command prints a table, or one JSON document with --json. Every command that changes
state first prints what it will change and asks for confirmation, unless --yes is given.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from axisor.cli.accounts import accounts_group
from axisor.config import Settings
from axisor.ops import QueueTarget, redis_client
from axisor.ops.durations import format_duration_ms, parse_duration_ms
from axisor.queue.names import MARGIN_GUARD_QUEUE, QUEUES

# Output helpers


def emit(as_json: bool, document: Any, show: Callable[[], None]) -> None:
    """Print ``document`` as JSON, or call ``show`` to print it for reading."""
    if as_json:
        click.echo(json.dumps(document, indent=2, default=str))
    else:
        show()


def print_table(title: str, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("-" if value is None else str(value) for value in row))
    Console(width=140).print(table)


def confirm(message: str, yes: bool) -> None:
    """Print what will change and ask; abort (exit status 1) on no."""
    click.echo(message, err=True)
    if not yes:
        click.confirm("Proceed?", abort=True, err=True)


def target_options(queue_required: bool = True):
    """Add --queue, --prefix and --json to a command."""

    def decorate(function):
        default = MARGIN_GUARD_QUEUE if queue_required else None
        function = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(
            function
        )
        function = click.option(
            "--prefix", default="bull", show_default=True, help="BullMQ key prefix."
        )(function)
        return click.option(
            "--queue",
            type=click.Choice(QUEUES),
            default=default,
            show_default=True,
            help="Queue name." if queue_required else "Queue name (default: all).",
        )(function)

    return decorate


def yes_option(function):
    return click.option("--yes", is_flag=True, help="Do not ask for confirmation.")(function)


def redis_url_of(settings: Settings) -> str:
    from axisor.redis_server import ensure_redis

    return ensure_redis(settings)


@contextmanager
def database_of(settings: Settings):
    from axisor.db.migrate import upgrade
    from axisor.db.session import Database

    database = Database(settings.effective_database_url)
    upgrade(database)
    try:
        yield database
    finally:
        database.dispose()


def ledger_lookup(database):
    from axisor.ledger import ActionLedger

    return ActionLedger(database).get


def lookup_errors(function):
    """Turn a LookupError (job or user not found, wrong state) into a one-line error."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except LookupError as exc:
            raise click.ClickException(str(exc.args[0] if exc.args else exc)) from exc

    return wrapper


# queue


@click.group("queue")
def queue_group() -> None:
    """Inspect and repair the BullMQ queues."""


@queue_group.command("stats")
@click.argument("queue_name", required=False, type=click.Choice(QUEUES))
@click.option("--prefix", default="bull", show_default=True, help="BullMQ key prefix.")
@click.option("--window", default="5m", show_default=True, help="Span of the rates, e.g. 5m, 1h.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def stats_command(
    settings: Settings, queue_name: str | None, prefix: str, window: str, as_json: bool
) -> None:
    """Job counts per state and completed/failed jobs per minute, for QUEUE or all queues."""
    from axisor.ops.stats import STATES, queue_stats

    window_s = parse_duration_ms(window, "--window") // 1000

    async def read():
        async with redis_client(redis_url_of(settings)) as client:
            names = [queue_name] if queue_name else list(QUEUES)
            return [await queue_stats(client, QueueTarget(n, prefix), window_s) for n in names]

    stats = asyncio.run(read())
    rows = [
        [
            s.queue,
            *(s.counts[k] for k in STATES),
            s.completed_per_min,
            s.failed_per_min,
            "yes" if s.is_paused else "no",
        ]
        for s in stats
    ]
    columns = ["queue", *STATES, "completed/min", "failed/min", "paused queue"]
    emit(
        as_json,
        {"queues": [s.to_dict() for s in stats]},
        lambda: print_table(f"Queues (rates over {window})", columns, rows),
    )


@queue_group.command("failed")
@target_options()
@click.option("--limit", default=20, show_default=True, help="Number of jobs, newest first.")
@click.pass_obj
def failed_command(settings: Settings, queue: str, prefix: str, as_json: bool, limit: int) -> None:
    """Failed jobs with their reason; secrets in job data are masked."""
    from axisor.ops.stats import failed_jobs

    jobs = asyncio.run(failed_jobs(redis_url_of(settings), QueueTarget(queue, prefix), limit))
    rows = [
        [
            j.id,
            j.name,
            _first_line(j.reason),
            f"{j.attempts_made}/{j.attempts}",
            json.dumps(j.data, default=str)[:80],
        ]
        for j in jobs
    ]
    emit(
        as_json,
        {"queue": queue, "failed": [j.to_dict() for j in jobs]},
        lambda: print_table(
            f"Failed jobs in {queue}", ["id", "name", "reason", "attempts", "data"], rows
        ),
    )


def _first_line(text: str | None) -> str | None:
    """Return the first line of a failure reason; --json prints the whole reason."""
    return text.splitlines()[0] if text else text


def _grace_options(function):
    for state in ("completed", "failed", "delayed", "wait", "prioritized", "paused"):
        function = click.option(
            f"--{state}",
            f"{state}_grace",
            metavar="AGE",
            help=f"Remove {state} jobs older than AGE (e.g. 90m, 1d, 7d).",
        )(function)
    return function


def grace_from(options: dict[str, str | None]) -> dict[str, int]:
    return {
        name.removesuffix("_grace"): parse_duration_ms(value, f"--{name.removesuffix('_grace')}")
        for name, value in options.items()
        if name.endswith("_grace") and value is not None
    }


@queue_group.command("clean")
@target_options()
@_grace_options
@click.option("--limit", default=10_000, show_default=True, help="Maximum jobs removed per state.")
@yes_option
@click.pass_obj
def clean_command(
    settings: Settings,
    queue: str,
    prefix: str,
    as_json: bool,
    limit: int,
    yes: bool,
    **options: str | None,
) -> None:
    """Remove jobs older than the given age per state; the next run of a schedule is kept."""
    from axisor.ops.cleanup import clean

    grace = grace_from(options)
    if not grace:
        raise click.UsageError("give at least one of --completed, --failed, --delayed, ...")
    target, url = QueueTarget(queue, prefix), redis_url_of(settings)
    preview = asyncio.run(clean(url, target, grace, limit=limit, dry_run=True))
    summary = ", ".join(f"{len(ids)} {state}" for state, ids in preview.removed.items())
    confirm(f"Queue {queue}: will remove {summary} jobs.", yes or preview.removed_count == 0)
    result = asyncio.run(clean(url, target, grace, limit=limit))
    emit(as_json, result.to_dict(), lambda: _print_clean(result))


def _print_clean(result) -> None:
    for state, ids in result.removed.items():
        click.echo(f"{result.queue}: removed {len(ids)} {state} jobs")
    if result.kept_scheduled:
        click.echo(
            f"kept {len(result.kept_scheduled)} scheduled runs: {', '.join(result.kept_scheduled)}"
        )


@queue_group.command("pause")
@target_options()
@yes_option
@click.pass_obj
def pause_command(settings: Settings, queue: str, prefix: str, as_json: bool, yes: bool) -> None:
    """Stop every worker from starting jobs of QUEUE; running jobs finish."""
    _set_paused(settings, queue, prefix, as_json, yes, paused=True)


@queue_group.command("resume")
@target_options()
@yes_option
@click.pass_obj
def resume_command(settings: Settings, queue: str, prefix: str, as_json: bool, yes: bool) -> None:
    """Let workers start jobs of QUEUE again."""
    _set_paused(settings, queue, prefix, as_json, yes, paused=False)


def _set_paused(settings, queue: str, prefix: str, as_json: bool, yes: bool, paused: bool) -> None:
    from axisor.ops.cleanup import set_paused

    verb = "pause" if paused else "resume"
    warning = " Margin Guard actions will wait until resume." if paused else ""
    confirm(f"Will {verb} queue {queue}.{warning}", yes)
    was_paused = asyncio.run(set_paused(redis_url_of(settings), QueueTarget(queue, prefix), paused))
    changed = was_paused != paused
    state = "paused" if paused else "running"
    emit(
        as_json,
        {"queue": queue, "paused": paused, "changed": changed},
        lambda: click.echo(f"queue {queue} is {state}" + ("" if changed else " (no change)")),
    )


@queue_group.command("retry")
@target_options()
@click.argument("job_id", required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed job.")
@click.option("--limit", default=1_000, show_default=True, help="Maximum jobs with --failed.")
@yes_option
@click.pass_obj
@lookup_errors
def retry_command(
    settings: Settings,
    queue: str,
    prefix: str,
    as_json: bool,
    job_id: str | None,
    all_failed: bool,
    limit: int,
    yes: bool,
) -> None:
    """Move failed job JOB_ID, or with --failed every failed job, back to wait.

    A Margin Guard action that the ledger shows confirmed is not retried.
    """
    from axisor.ops.cleanup import retry_failed

    if (job_id is None) == (not all_failed):
        raise click.UsageError("give a JOB_ID or --failed, not both")
    what = f"job {job_id}" if job_id else f"up to {limit} failed jobs"
    confirm(f"Will move {what} of {queue} back to wait with fresh attempts.", yes)
    with database_of(settings) as database:
        result = asyncio.run(
            retry_failed(
                redis_url_of(settings),
                QueueTarget(queue, prefix),
                job_id,
                lookup=ledger_lookup(database),
                limit=limit,
            )
        )
    emit(as_json, result.to_dict(), lambda: _print_retry(result))
    if job_id and result.rejected:
        raise SystemExit(1)


def _print_retry(result) -> None:
    click.echo(f"{result.queue}: retried {len(result.retried)} jobs")
    for job_id, reason in result.rejected.items():
        click.echo(f"not retried {job_id}: {reason}")


@queue_group.command("promote")
@target_options()
@click.argument("job_id", required=False)
@yes_option
@click.pass_obj
@lookup_errors
def promote_command(
    settings: Settings, queue: str, prefix: str, as_json: bool, job_id: str | None, yes: bool
) -> None:
    """Run delayed job JOB_ID, or every delayed job, now."""
    from axisor.ops.cleanup import promote

    confirm(f"Will move {job_id or 'every delayed job'} of {queue} to wait.", yes)
    ids = asyncio.run(promote(redis_url_of(settings), QueueTarget(queue, prefix), job_id))
    emit(
        as_json,
        {"queue": queue, "promoted": ids},
        lambda: click.echo(f"{queue}: promoted {len(ids)} delayed jobs"),
    )


@queue_group.command("optimize")
@target_options()
@click.option(
    "--to",
    type=click.Choice(["wait", "failed"]),
    default="wait",
    show_default=True,
    help="Where stuck jobs go.",
)
@click.option("--completed", default="1d", show_default=True, help="Clean completed jobs older.")
@click.option("--failed", default="7d", show_default=True, help="Clean failed jobs older.")
@yes_option
@click.pass_obj
def optimize_command(
    settings: Settings,
    queue: str,
    prefix: str,
    as_json: bool,
    to: str,
    completed: str,
    failed: str,
    yes: bool,
) -> None:
    """Move stuck jobs, clean old finished jobs and print advice."""
    from axisor.ops.stuck import optimize

    grace = {
        "completed": parse_duration_ms(completed, "--completed"),
        "failed": parse_duration_ms(failed, "--failed"),
    }
    target, url = QueueTarget(queue, prefix), redis_url_of(settings)
    with database_of(settings) as database:
        lookup = ledger_lookup(database)
        preview = asyncio.run(
            optimize(url, target, to=to, grace_ms=grace, lookup=lookup, dry_run=True)
        )
        changes = len(preview.stuck) + preview.cleaned.removed_count
        confirm(
            f"Queue {queue}: {len(preview.stuck)} stuck jobs go to {to}; "
            f"{preview.cleaned.removed_count} old jobs are removed.",
            yes or changes == 0,
        )
        report = (
            preview
            if changes == 0
            else asyncio.run(optimize(url, target, to=to, grace_ms=grace, lookup=lookup))
        )
    emit(as_json, report.to_dict(), lambda: _print_optimize(report))


def _print_optimize(report) -> None:
    print_table(
        f"Stuck jobs in {report.queue}",
        ["id", "name", "worker", "reason"],
        [[s.id, s.name, s.worker, s.reason] for s in report.stuck],
    )
    if report.moves is not None:
        click.echo(f"moved to {report.moves.to}: {', '.join(report.moves.moved) or 'none'}")
        for job_id, reason in {**report.moves.rejected, **report.moves.skipped}.items():
            click.echo(f"left {job_id}: {reason}")
    _print_clean(report.cleaned)
    for line in report.advice or ["no advice: the queue looks normal"]:
        click.echo(f"advice: {line}")


# redis


@click.group("redis")
def redis_group() -> None:
    """Inspect the Redis server."""


@redis_group.command("memory")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def memory_command(settings: Settings, as_json: bool) -> None:
    """Used and peak memory, fragmentation and the eviction policy."""
    from axisor.ops.stats import redis_memory

    async def read():
        async with redis_client(redis_url_of(settings)) as client:
            return await redis_memory(client)

    memory = asyncio.run(read())

    def show() -> None:
        print_table(
            "Redis memory",
            ["used", "peak", "fragmentation", "maxmemory", "policy"],
            [
                [
                    _mib(memory.used_bytes),
                    _mib(memory.peak_bytes),
                    memory.fragmentation_ratio,
                    _mib(memory.maxmemory_bytes) if memory.maxmemory_bytes else "unlimited",
                    memory.maxmemory_policy,
                ]
            ],
        )
        if memory.warning:
            click.echo(f"warning: {memory.warning}")

    emit(as_json, memory.to_dict(), show)


def _mib(value: int) -> str:
    return f"{value / 1_048_576:.1f} MiB"


# doctor


@click.group("doctor", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def doctor_group(ctx: click.Context, as_json: bool) -> None:
    """Check the platform: Redis, migrations, workers, engine and stream."""
    if ctx.invoked_subcommand is not None:
        return
    from axisor.ops.doctor import diagnose_platform

    settings: Settings = ctx.obj

    async def run(database):
        async with redis_client(redis_url_of(settings)) as client:
            return await diagnose_platform(client, database)

    with database_of(settings) as database:
        findings = asyncio.run(run(database))
    _emit_findings(as_json, "platform", findings)


def _emit_findings(as_json: bool, subject: str, findings, extra: dict | None = None) -> None:
    document = {"subject": subject, **(extra or {}), "findings": [f.to_dict() for f in findings]}
    problems = [f for f in findings if not f.ok]

    def show() -> None:
        print_table(
            f"Doctor: {subject}",
            ["check", "result", "problem", "fix"],
            [[f.check, "ok" if f.ok else "PROBLEM", f.problem, f.fix] for f in findings],
        )
        click.echo(f"{len(problems)} problems found" if problems else "no problems found")

    emit(as_json, document, show)
    if problems:
        raise SystemExit(1)


@doctor_group.command("margin-guard")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
@lookup_errors
def doctor_guard_command(settings: Settings, user: str, as_json: bool) -> None:
    """List every reason the Margin Guard of USER (id or email) would not act, with the fix."""
    from axisor.ops.doctor import diagnose_user, engine_price

    async def run(database):
        checks = AccountChecks(settings, database)
        async with redis_client(redis_url_of(settings)) as client:
            price = await engine_price(client)
        price = price or await ticker_price()
        try:
            return await diagnose_user(
                database,
                user,
                check_credentials=checks.credentials,
                check_exchange=checks.exchange,
                price_usd=price,
            )
        finally:
            await checks.aclose()

    with database_of(settings) as database:
        facts, findings = asyncio.run(run(database))
    _emit_findings(
        as_json,
        f"user {facts.user_id} ({facts.email})",
        findings,
        {"user_id": facts.user_id, "plan": facts.plan},
    )


class AccountChecks:
    """Credential and exchange checks for the doctor, through the account resolver."""

    def __init__(self, settings: Settings, database) -> None:
        self.settings = settings
        self.database = database
        self._resolver = None

    def resolver(self):
        if self._resolver is None:
            from axisor.exchange.registry import account_resolver

            self._resolver = account_resolver(self.database, data_dir=self.settings.data_dir)
        return self._resolver

    async def aclose(self) -> None:
        if self._resolver is not None:
            await self._resolver.aclose()

    async def credentials(self, account) -> str | None:
        if account.exchange == "paper":
            return None
        if not account.credentials_encrypted:
            return "no credentials are stored"
        from axisor.db.crypto import CredentialCipher
        from axisor.errors import InvalidConfigError

        try:
            CredentialCipher.from_env(data_dir=self.settings.data_dir).decrypt(
                account.credentials_encrypted
            )
        except InvalidConfigError as exc:
            return f"credentials cannot be decrypted ({exc.field})"
        return None

    async def exchange(self, account) -> str | None:
        from axisor.errors import AxisorError

        try:
            exchange = await self.resolver().for_account(account.id)
            await exchange.get_ticker()
        except (AxisorError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


async def ticker_price():
    """Return the last BTC price in USD from the public LN Markets ticker, or None when the
    request fails. AXISOR_LNM_BASE_URL replaces the mainnet host, as it does for workers."""
    from axisor.errors import AxisorError
    from axisor.exchange.lnmarkets.client import LNMarketsClient
    from axisor.exchange.registry import lnm_base_url_from_env

    try:
        async with LNMarketsClient(lnm_base_url_from_env(), None) as client:
            return (await client.get_ticker()).last_price
    except (AxisorError, OSError):
        return None


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


# pool


@click.group("pool")
def pool_group() -> None:
    """Size the worker pools."""


@pool_group.command("recommend")
@target_options()
@click.option("--min", "min_workers", default=1, show_default=True, help="Minimum workers.")
@click.option("--max", "max_workers", default=20, show_default=True, help="Maximum workers.")
@click.option("--window", default="5m", show_default=True, help="Span of the measured rates.")
@click.option("--utilisation", default=0.7, show_default=True, help="Target busy share, 0..1.")
@click.option(
    "--margin",
    default=0.2,
    show_default=True,
    help="Keep the current count unless the change exceeds this share of it.",
)
@click.pass_obj
def recommend_command(
    settings: Settings,
    queue: str,
    prefix: str,
    as_json: bool,
    min_workers: int,
    max_workers: int,
    window: str,
    utilisation: float,
    margin: float,
) -> None:
    """Recommend the number of worker processes for QUEUE, with the reasoning."""
    from axisor.ops.scaling import ScalingPolicy, recommend_for_queue

    if not 0 < utilisation <= 1 or min_workers > max_workers:
        raise click.UsageError("--utilisation must be in (0, 1] and --min at most --max")
    policy = ScalingPolicy(
        min_workers,
        max_workers,
        utilisation,
        margin=margin,
        window_s=parse_duration_ms(window, "--window") // 1000,
    )

    async def read():
        async with redis_client(redis_url_of(settings)) as client:
            return await recommend_for_queue(
                client, QueueTarget(queue, prefix), policy, settings.worker_concurrency
            )

    result = asyncio.run(read())

    def show() -> None:
        click.echo(f"{queue}: {result.recommended} workers (now {result.load.current_workers})")
        for line in result.reasoning:
            click.echo(f"  {line}")
        click.echo(f"  window {format_duration_ms(result.load.window_s * 1000)}")

    emit(as_json, result.to_dict(), show)


OPS_COMMANDS = (
    queue_group,
    redis_group,
    doctor_group,
    jobs_group,
    trades_group,
    automations_group,
    pool_group,
)
