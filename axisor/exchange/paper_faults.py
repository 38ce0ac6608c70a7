"""Fault injection of the paper venue: calls that fail before or after they are applied."""

from __future__ import annotations

from dataclasses import dataclass, field

from axisor.errors import InvalidConfigError

# Names accepted by the fault injection: the methods of the Exchange protocol and the cross
# margin methods of PaperAccount.
PAPER_METHODS = frozenset(
    {
        "get_ticker",
        "get_balance",
        "get_running_trades",
        "get_closed_trades",
        "open_trade",
        "close_trade",
        "add_margin",
        "cash_in",
        "set_stoploss",
        "set_takeprofit",
        "get_cross_position",
        "get_cross_orders",
        "open_cross_order",
        "close_cross_position",
        "deposit_cross",
        "withdraw_cross",
        "set_cross_leverage",
    }
)


@dataclass
class PaperFaults:
    """Faults a PaperVenue injects into its accounts' calls, by method name.

    A name in ``fail_after_apply`` applies the call and then raises StateUnknownError, which
    simulates a timeout after the venue applied the change. A name in ``fail_before_apply`` raises
    RetryLaterError without applying. Every call first sleeps ``latency_s`` seconds.
    """

    fail_after_apply: set[str] = field(default_factory=set)
    fail_before_apply: set[str] = field(default_factory=set)
    latency_s: float = 0.0
    _after_once: set[str] = field(default_factory=set, init=False, repr=False)
    _before_once: set[str] = field(default_factory=set, init=False, repr=False)

    def fail_after_apply_once(self, method: str) -> None:
        """Apply the next call of ``method``, then raise StateUnknownError for it."""
        self._after_once.add(_known_method(method))

    def fail_before_apply_once(self, method: str) -> None:
        """Raise RetryLaterError for the next call of ``method`` without applying it."""
        self._before_once.add(_known_method(method))

    def take_after(self, method: str) -> bool:
        """Return whether this call of ``method`` fails after applying, using up a one-shot."""
        return _take(self._after_once, method) or method in self.fail_after_apply

    def take_before(self, method: str) -> bool:
        """Return whether this call of ``method`` fails before applying, using up a one-shot."""
        return _take(self._before_once, method) or method in self.fail_before_apply


def _known_method(method: str) -> str:
    if method not in PAPER_METHODS:
        raise InvalidConfigError(
            "method",
            f"{method!r} is not a paper account method. Pass one of {sorted(PAPER_METHODS)}",
        )
    return method


def _take(one_shots: set[str], method: str) -> bool:
    if method in one_shots:
        one_shots.discard(method)
        return True
    return False
