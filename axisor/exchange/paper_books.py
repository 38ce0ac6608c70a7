"""Sorted trigger books of the paper venue: the levels a price update may cross, by bisection."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from sortedcontainers import SortedKeyList


class TriggerBook:
    """Trigger levels of one kind and side, sorted so a price finds the crossed ones by bisection.

    A book that fires on a rise fills every level at or below the price. The others fill every
    level at or above it. Levels may be ``Decimal`` or exact ``Fraction`` values.
    """

    def __init__(self, fires_on_rise: bool) -> None:
        self._fires_on_rise = fires_on_rise
        self._levels: SortedKeyList = SortedKeyList(key=lambda entry: entry[0])

    def add(self, level: Decimal | Fraction, trade_id: str) -> None:
        self._levels.add((level, trade_id))

    def discard(self, level: Decimal | Fraction, trade_id: str) -> None:
        self._levels.discard((level, trade_id))

    def crossed(self, price: Decimal | Fraction) -> list[str]:
        if self._fires_on_rise:
            entries = self._levels.irange_key(max_key=price)
        else:
            entries = self._levels.irange_key(min_key=price)
        return [trade_id for _, trade_id in entries]
