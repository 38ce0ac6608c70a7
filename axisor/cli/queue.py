"""``axisor queue`` and ``axisor redis``: inspect and repair the BullMQ queues and the Redis
server behind them."""

from __future__ import annotations

import asyncio
import json

import click

from axisor.cli.common import (
    confirm,
    database_of,
    emit,
    ledger_lookup,
    lookup_errors,
    print_table,
    redis_url_of,
    target_options,
    yes_option,
)
from axisor.config import Settings
from axisor.ops import QueueTarget, redis_client
from axisor.ops.durations import parse_duration_ms
from axisor.queue.names import QUEUES

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
