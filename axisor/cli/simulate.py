"""``axisor simulate``: replay a real price episode through the whole pipeline."""

from __future__ import annotations

import asyncio
import fcntl
import json
import pathlib
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from axisor.config import Settings
from axisor.errors import InvalidConfigError
from axisor.market.replay import Replay

# Run locks stay open until the process exits.
_RUN_LOCKS: list = []


@click.command("simulate")
@click.option(
    "--episode",
    default="2021-05-19",
    show_default=True,
    help="Name of a shipped episode (see `axisor episodes`).",
)
@click.option(
    "--prices",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Replay this CSV (timestamp,open,high,low,close,volume) instead of an episode.",
)
@click.option(
    "--positions",
    default=1000,
    show_default=True,
    type=int,
    help="Number of positions to generate.",
)
@click.option(
    "--seed",
    default=7,
    show_default=True,
    type=int,
    help="Seed for sides, leverage, thresholds, actions, plans and balances.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print only the summary, as one JSON object on stdout."
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Where to write the HTML report [default: DATA_DIR/reports/...].",
)
@click.option(
    "--database-url",
    help="Database for the replay's generated users [default: a new SQLite file in "
    "DATA_DIR/simulations].",
)
@click.option(
    "--exchange",
    type=click.Choice(["paper", "mock"]),
    default="paper",
    show_default=True,
    help="paper: workers call the paper exchange in process. mock: they call it through the "
    "LN Markets client and a local mock of the LN Markets API on 127.0.0.1.",
)
@click.option(
    "--automations",
    is_flag=True,
    help="Also run a mix of take profits, stop losses and auto entries drawn from the seed, "
    "on a second linked account per chosen user, and count them in the summary.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    help="Jobs each worker runs at once [default: WORKER_CONCURRENCY].",
)
@click.pass_obj
def simulate_command(
    settings: Settings,
    episode,
    prices,
    positions,
    seed,
    as_json,
    report,
    database_url,
    exchange,
    automations,
    concurrency,
) -> None:
    """Replay real BTC prices over generated positions, with the guard on and off."""
    from axisor.redis_server import ensure_redis
    from axisor.report import write_report
    from axisor.simulation.simulate import simulate

    replay, name = _load_replay(episode, prices)
    label = f"{name}-seed{seed}" + ("" if exchange == "paper" else f"-{exchange}")
    label += "-automations" if automations else ""
    _lock_run(settings, label)
    database_url = database_url or _fresh_sqlite(settings, label)
    report_path = report or settings.data_dir / "reports" / f"simulate-{label}.html"
    redis_url = ensure_redis(settings)
    log_path = _log_to_file(settings, label)

    console = Console(stderr=True)
    with _progress(console) as progress:
        task = progress.add_task(f"replaying {name}", total=len(replay))
        result = asyncio.run(
            simulate(
                replay,
                name,
                positions=positions,
                seed=seed,
                database_url=database_url,
                redis_url=redis_url,
                concurrency=concurrency or settings.worker_concurrency,
                timeout_ms=settings.worker_timeout_ms,
                progress=lambda done, total: progress.update(task, completed=done),
                exchange=exchange,
                automations=automations,
            )
        )
    summary = {**result.summary, "report": str(report_path), "log": str(log_path)}
    report_path.parent.mkdir(parents=True, exist_ok=True)
    write_report(
        report_path,
        title=f"Axisor Margin Guard replay: {name}",
        summary=summary,
        prices=result.prices,
        events=result.events,
    )
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        Console().print(_summary_table(summary))


def _load_replay(episode: str, prices: pathlib.Path | None) -> tuple[Replay, str]:
    if prices is not None:
        if not prices.is_file():
            raise InvalidConfigError("--prices", f"file {prices} does not exist")
        return Replay.from_csv(prices), prices.stem
    return Replay.from_episode(episode), episode


def _log_to_file(settings: Settings, label: str) -> pathlib.Path:
    """Send the run's log lines (one per job) to a file, so the terminal shows the progress."""
    from axisor.logs import configure_logging

    path = settings.data_dir / "simulations" / f"{label}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Left open until the process exits, so that shutdown steps can still log.
    handle = path.open("w", encoding="utf-8")  # noqa: SIM115
    configure_logging(settings.log_format, settings.log_level, file=handle)
    return path


def _lock_run(settings: Settings, label: str) -> None:
    """Hold a lock on the run's label for the life of the process, so two runs of the same
    episode and seed cannot share one database file and one report."""
    path = settings.data_dir / "simulations" / f"{label}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("w")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InvalidConfigError(
            "--seed",
            f"another `axisor simulate` run of {label} is using {path.parent}; wait for it to "
            "finish, or pick another --seed or AXISOR_DATA_DIR",
        ) from None
    _RUN_LOCKS.append(handle)


def _fresh_sqlite(settings: Settings, label: str) -> str:
    path = settings.data_dir / "simulations" / f"{label}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        pathlib.Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ticks"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _summary_table(summary: dict) -> Table:
    table = Table(title="Margin Guard replay summary", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in _flatten(summary):
        table.add_row(key, str(value))
    return table


def _flatten(values: dict, prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
