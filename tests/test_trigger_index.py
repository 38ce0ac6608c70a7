"""Trigger index: crossed triggers by bisection, compared with a brute-force scan."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from axisor.engine.index import ArmedTrigger, TriggerIndex
from axisor.exchange.models import Side

D = Decimal


def armed(position_id: int, side: Side, trigger: Decimal, version: int = 1) -> ArmedTrigger:
    return ArmedTrigger(
        position_id=position_id,
        account_id=1,
        side=side,
        trigger_price=trigger,
        liquidation_price=None,
        version=version,
        action="add_margin",
    )


def brute_force_crossed(triggers: dict[int, ArmedTrigger], price: Decimal) -> set[int]:
    """Return the ids whose trigger ``price`` reaches: longs at or below, shorts at or above."""
    return {
        t.position_id
        for t in triggers.values()
        if (price <= t.trigger_price if t.side is Side.BUY else price >= t.trigger_price)
    }


# Prices in half-dollar ticks within a narrow band, so ties and crossings are common.
half_ticks = st.integers(min_value=100_000, max_value=100_040)
trigger_sets = st.dictionaries(
    keys=st.integers(min_value=1, max_value=10_000),
    values=st.tuples(st.sampled_from(Side), half_ticks),
    max_size=60,
)


@given(entries=trigger_sets, price_ticks=half_ticks)
def test_pop_crossed_matches_scan(entries, price_ticks):
    """pop_crossed returns exactly the triggers a full scan finds, and only those leave."""
    triggers = {pid: armed(pid, side, D(ticks) / 2) for pid, (side, ticks) in entries.items()}
    index = TriggerIndex()
    for trigger in triggers.values():
        index.arm(trigger)
    price = D(price_ticks) / 2
    expected = brute_force_crossed(triggers, price)

    popped = index.pop_crossed(price)

    assert {t.position_id for t in popped} == expected
    assert len(popped) == len(expected)
    assert len(index) == len(triggers) - len(expected)
    assert all(pid not in index for pid in expected)
    assert all(pid in index for pid in triggers.keys() - expected)
    assert index.pop_crossed(price) == []


@given(entries=trigger_sets, prices=st.lists(half_ticks, min_size=1, max_size=10))
def test_pop_sequence_matches_scan(entries, prices):
    """Over a run of ticks each trigger is popped once, at the first tick that reaches it."""
    remaining = {pid: armed(pid, side, D(ticks) / 2) for pid, (side, ticks) in entries.items()}
    index = TriggerIndex()
    for trigger in remaining.values():
        index.arm(trigger)

    for ticks in prices:
        price = D(ticks) / 2
        expected = brute_force_crossed(remaining, price)
        popped = {t.position_id for t in index.pop_crossed(price)}
        assert popped == expected
        for pid in expected:
            del remaining[pid]

    assert len(index) == len(remaining)


def test_pop_crossed_longs_first():
    """Crossed longs come before crossed shorts in the result."""
    index = TriggerIndex()
    index.arm(armed(1, Side.SELL, D(100)))
    index.arm(armed(2, Side.BUY, D(100)))
    popped = index.pop_crossed(D(100))
    assert [t.side for t in popped] == [Side.BUY, Side.SELL]


def test_pop_crossed_exact_trigger():
    """A price equal to the trigger crosses it on both sides."""
    index = TriggerIndex()
    index.arm(armed(1, Side.BUY, D("55636")))
    index.arm(armed(2, Side.SELL, D("64364")))
    assert [t.position_id for t in index.pop_crossed(D("55636"))] == [1]
    assert [t.position_id for t in index.pop_crossed(D("64364"))] == [2]


def test_pop_crossed_returns_armed_values():
    """The popped trigger carries the version and action it was armed with."""
    index = TriggerIndex()
    index.arm(armed(7, Side.BUY, D(100), version=4))
    (popped,) = index.pop_crossed(D(99))
    assert popped.version == 4
    assert popped.action == "add_margin"


def test_rearm_replaces_trigger():
    """Arming a position again replaces its trigger, so the old price no longer fires it."""
    index = TriggerIndex()
    index.arm(armed(1, Side.BUY, D(100), version=1))
    index.arm(armed(1, Side.BUY, D(90), version=2))

    assert len(index) == 1
    assert index.get(1).version == 2
    assert index.pop_crossed(D(95)) == []
    assert [t.version for t in index.pop_crossed(D(90))] == [2]


def test_rearm_changes_side():
    """Re-arming a position with the other side moves it to that side's list."""
    index = TriggerIndex()
    index.arm(armed(1, Side.BUY, D(100)))
    index.arm(armed(1, Side.SELL, D(100)))
    assert index.pop_crossed(D(50)) == []
    assert [t.side for t in index.pop_crossed(D(150))] == [Side.SELL]


def test_disarm_removes_trigger():
    """Disarm returns the trigger, and a crossing price then finds nothing."""
    index = TriggerIndex()
    trigger = armed(1, Side.BUY, D(100))
    index.arm(trigger)

    assert index.disarm(1) == trigger
    assert 1 not in index
    assert index.pop_crossed(D(1)) == []


def test_disarm_unknown_is_none():
    """Disarming a position that is not armed returns None and changes nothing."""
    index = TriggerIndex()
    index.arm(armed(1, Side.BUY, D(100)))
    assert index.disarm(2) is None
    assert len(index) == 1


def test_ties_pop_together():
    """Positions with equal trigger prices are all popped by the same tick."""
    index = TriggerIndex()
    for pid in (3, 1, 2):
        index.arm(armed(pid, Side.BUY, D(100)))
    index.arm(armed(4, Side.BUY, D("99.5")))
    popped = index.pop_crossed(D(100))
    assert sorted(t.position_id for t in popped) == [1, 2, 3]
    assert 4 in index


def test_disarm_one_of_tie():
    """Disarming one of several positions at the same price leaves the others armed."""
    index = TriggerIndex()
    for pid in (1, 2, 3):
        index.arm(armed(pid, Side.SELL, D(100)))
    index.disarm(2)
    assert sorted(t.position_id for t in index.pop_crossed(D(100))) == [1, 3]
