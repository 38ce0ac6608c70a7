"""``axisor pool``: size the worker pools from the measured load."""

from __future__ import annotations

import asyncio

import click

from axisor.cli.common import emit, redis_url_of, target_options
from axisor.config import Settings
from axisor.ops import QueueTarget, redis_client
from axisor.ops.durations import format_duration_ms, parse_duration_ms

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
