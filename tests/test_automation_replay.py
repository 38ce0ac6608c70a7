"""The automation mix in the guarded replay: every type runs through BullMQ, the guard's figures
stay those of the run without automations."""

from __future__ import annotations

from axisor.market.replay import Replay
from axisor.simulation.simulate import simulate

HOUR_MS = 3_600_000
# Figures of the guard's comparison with the run without the guard.
GUARD_FIGURES = (
    "positions",
    "accounts",
    "liquidated_without_guard",
    "liquidated_with_guard",
    "preventable_liquidations",
    "prevented",
    "excluded",
    "missed",
    "actions",
    "sats_added",
    "duplicate_actions",
)


def crash_window() -> Replay:
    """2021-05-19 from midnight to 18:00 UTC: the fall from about 42,800 to 30,000 and back."""
    replay = Replay.from_episode("2021-05-19")
    start = replay.start_ms + 48 * HOUR_MS
    return replay.window(start, start + 18 * HOUR_MS)


async def run(redis_url: str, database_url: str, automations: bool) -> dict:
    result = await simulate(
        crash_window(),
        "2021-05-19",
        positions=120,
        seed=11,
        database_url=database_url,
        redis_url=redis_url,
        automations=automations,
    )
    return result.summary


async def test_automation_mix_counts(redis_url, tmp_path):
    """Each type is armed and fires, nothing acts twice, and the guard's figures are unchanged."""
    without = await run(redis_url, f"sqlite:///{tmp_path / 'off.db'}", automations=False)
    summary = await run(redis_url, f"sqlite:///{tmp_path / 'on.db'}", automations=True)

    assert "automations" not in without
    automations = summary["automations"]
    for kind in ("take_profit", "stop_loss", "auto_entry"):
        counts = automations[kind]
        assert counts["planned"] == counts["armed"] + counts["rejected_by_plan"], kind
        assert counts["armed"] > 0, kind
        assert counts["fired"] > 0, kind
    assert automations["stop_loss"]["placed_on_exchange"] > 0
    assert automations["duplicate_actions"] == 0
    for figure in GUARD_FIGURES:
        assert summary[figure] == without[figure], figure
