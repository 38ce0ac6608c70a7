"""The main job: generated positions protected through a real BTC crash replay."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from axisor.market.replay import Replay
from axisor.simulation.simulate import simulate

HOUR_MS = 3_600_000


def crash_window() -> Replay:
    """2021-05-19 from midnight to 18:00 UTC: the fall from about 42,800 to 30,000 and back."""
    replay = Replay.from_episode("2021-05-19")
    start = replay.start_ms + 48 * HOUR_MS
    return replay.window(start, start + 18 * HOUR_MS)


async def test_crash_window_outcome(database_url, redis_url):
    """Every liquidation the balance could prevent is prevented, and nothing acts twice."""
    result = await simulate(
        crash_window(),
        "2021-05-19",
        positions=150,
        seed=11,
        database_url=database_url,
        redis_url=redis_url,
    )
    summary = result.summary
    assert summary["liquidated_without_guard"] > 0
    assert summary["liquidated_with_guard"] < summary["liquidated_without_guard"]
    assert summary["missed"] == 0
    assert summary["prevented"] == summary["preventable_liquidations"]
    assert summary["preventable_liquidations"] > 0
    assert summary["duplicate_actions"] == 0
    assert summary["actions"].get("add_margin", 0) > 0


async def test_exclusions_add_up(redis_url, tmp_path):
    """Liquidations without the guard split exactly into prevented, excluded and missed."""
    result = await simulate(
        crash_window(),
        "2021-05-19",
        positions=120,
        seed=3,
        database_url=f"sqlite:///{tmp_path / 'sim.db'}",
        redis_url=redis_url,
    )
    summary = result.summary
    excluded = sum(summary["excluded"].values())
    total = summary["prevented"] + excluded + summary["missed"]
    assert total == summary["liquidated_without_guard"]
    assert summary["preventable_liquidations"] == summary["liquidated_without_guard"] - excluded


async def test_same_seed_same_positions(redis_url, tmp_path):
    """The seed alone decides the positions, so the guard-off outcome repeats exactly."""
    replay = crash_window()
    first = await simulate(
        replay,
        "w",
        positions=60,
        seed=5,
        redis_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'a.db'}",
    )
    second = await simulate(
        replay,
        "w",
        positions=60,
        seed=5,
        redis_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'b.db'}",
    )
    assert first.summary["liquidated_without_guard"] == second.summary["liquidated_without_guard"]
    assert first.summary["positions"] == second.summary["positions"]


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_full_crash_episode_demo_figures(redis_url, tmp_path):
    """The demo's replay: 1,000 positions over the whole 2021-05-19 episode, seed 7."""
    result = await simulate(
        Replay.from_episode("2021-05-19"),
        "2021-05-19",
        positions=1000,
        seed=7,
        database_url=f"sqlite:///{tmp_path / 'demo.db'}",
        redis_url=redis_url,
    )
    summary = result.summary
    assert summary["positions"] == 1000
    assert summary["missed"] == 0
    assert summary["prevented"] == summary["preventable_liquidations"]
    assert summary["duplicate_actions"] == 0
    assert summary["liquidated_with_guard"] < summary["liquidated_without_guard"]
    assert summary["tick_to_action_ms"]["samples"] > 0


def falling_prices_csv(start_usd: int, step_usd: int, minutes: int) -> str:
    """Return a CSV of one-minute bars that fall by ``step_usd`` each minute."""
    start = dt.datetime(2021, 5, 19, 10, tzinfo=dt.UTC)
    rows = ["timestamp,open,high,low,close,volume"]
    for minute in range(minutes):
        stamp = (start + dt.timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
        open_usd = start_usd - minute * step_usd
        close_usd = open_usd - step_usd
        rows.append(f"{stamp},{open_usd},{open_usd + 20},{close_usd - 10},{close_usd},1.5")
    return "\n".join(rows) + "\n"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "axisor.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.fixture
def cli_env(tmp_path, redis_url, monkeypatch) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(AXISOR_DATA_DIR=str(tmp_path / "data"), REDIS_URL=redis_url, LOG_LEVEL="WARNING")
    env.pop("DATABASE_URL", None)
    return env


def test_cli_json_is_one_object(cli_env, tmp_path):
    """With --json, stdout contains exactly one JSON object, and progress goes to stderr."""
    prices = tmp_path / "crash.csv"
    prices.write_text(falling_prices_csv(start_usd=40_000, step_usd=150, minutes=120))
    completed = run_cli(
        "simulate",
        "--prices",
        str(prices),
        "--positions",
        "40",
        "--seed",
        "2",
        "--json",
        env=cli_env,
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["positions"] == 40
    assert summary["duplicate_actions"] == 0
    assert "report" in summary
    assert completed.stdout.count("\n") == 1


def test_cli_malformed_prices_line(cli_env, tmp_path):
    """A malformed row is reported with its line number and the field, with exit status 2."""
    prices = tmp_path / "bad.csv"
    prices.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2021-05-19T10:00:00Z,40000,40100,39900,40050,1\n"
        "2021-05-19T10:01:00Z,40050,abc,39900,40000,1\n"
    )
    completed = run_cli("simulate", "--prices", str(prices), "--json", env=cli_env)
    assert completed.returncode == 2
    assert "line 3" in completed.stderr
    assert "high" in completed.stderr
    assert completed.stdout == ""


def test_cli_unknown_episode(cli_env):
    """An unknown episode name is rejected with the list of shipped episodes."""
    completed = run_cli("simulate", "--episode", "1999-01-01", env=cli_env)
    assert completed.returncode == 2
    assert "episode" in completed.stderr
    assert "2021-05-19" in completed.stderr


async def test_mock_exchange_same_outcome(redis_url, tmp_path):
    """Through the LN Markets client and the local mock, the replay ends as on the paper venue."""
    replay = crash_window()
    outcomes = {}
    for exchange in ("paper", "mock"):
        result = await simulate(
            replay,
            "2021-05-19",
            positions=80,
            seed=11,
            redis_url=redis_url,
            exchange=exchange,
            database_url=f"sqlite:///{tmp_path / f'{exchange}.db'}",
        )
        outcomes[exchange] = result.summary
    for figure in (
        "liquidated_without_guard",
        "liquidated_with_guard",
        "prevented",
        "missed",
        "preventable_liquidations",
        "duplicate_actions",
    ):
        assert outcomes["mock"][figure] == outcomes["paper"][figure], figure
    assert outcomes["mock"]["exchange"] == "mock"
