"""In-memory trigger index: for each armed position, the price at which the guard must act.

Longs act when the price falls to their trigger and shorts when it rises to theirs, so each side
is one sorted list, and a tick reads only the crossed end of it: O(log n + k) for k crossings.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from decimal import Decimal

from sortedcontainers import SortedList

from axisor.exchange.models import Side


@dataclass(frozen=True, slots=True)
class ArmedTrigger:
    """One position's armed trigger. ``version`` changes whenever the trigger moves."""

    position_id: int
    account_id: int
    side: Side
    trigger_price: Decimal
    liquidation_price: Decimal | None
    version: int
    action: str


class TriggerIndex:
    """Armed triggers of both sides; a crossed trigger leaves the index until it is re-armed."""

    def __init__(self) -> None:
        self._by_position: dict[int, ArmedTrigger] = {}
        self._longs: SortedList = SortedList()  # (trigger_price, position_id), fired from the top
        self._shorts: SortedList = SortedList()  # fired from the bottom

    def __len__(self) -> int:
        return len(self._by_position)

    def __contains__(self, position_id: int) -> bool:
        return position_id in self._by_position

    def get(self, position_id: int) -> ArmedTrigger | None:
        return self._by_position.get(position_id)

    def arm(self, trigger: ArmedTrigger) -> None:
        """Add the trigger, replacing any earlier one of the same position."""
        self.disarm(trigger.position_id)
        self._by_position[trigger.position_id] = trigger
        self._side_list(trigger.side).add((trigger.trigger_price, trigger.position_id))

    def disarm(self, position_id: int) -> ArmedTrigger | None:
        """Remove and return the position's trigger, if it has one."""
        trigger = self._by_position.pop(position_id, None)
        if trigger is not None:
            self._side_list(trigger.side).remove((trigger.trigger_price, position_id))
        return trigger

    def pop_crossed(self, price: Decimal) -> list[ArmedTrigger]:
        """Remove and return every trigger that ``price`` reaches, longs first."""
        crossed = [self._by_position[pid] for _, pid in self._crossed_longs(price)]
        crossed += [self._by_position[pid] for _, pid in self._crossed_shorts(price)]
        for trigger in crossed:
            self.disarm(trigger.position_id)
        return crossed

    def _crossed_longs(self, price: Decimal) -> list[tuple[Decimal, int]]:
        start = self._longs.bisect_left((price, -1))
        return list(self._longs.islice(start))

    def _crossed_shorts(self, price: Decimal) -> list[tuple[Decimal, int]]:
        stop = self._shorts.bisect_right((price, sys.maxsize))
        return list(self._shorts.islice(0, stop))

    def _side_list(self, side: Side) -> SortedList:
        return self._longs if side is Side.BUY else self._shorts
