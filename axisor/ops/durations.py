"""Durations as operators type them: ``90s``, ``90m``, ``24h``, ``1d``, ``2w`` or ``1h30m``."""

from __future__ import annotations

import re

from axisor.errors import InvalidConfigError

UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def parse_duration_ms(text: str, field: str = "duration") -> int:
    """Parse ``text`` into milliseconds; a bare number is seconds.

    Raises InvalidConfigError naming ``field`` when the text is empty, negative or has an
    unknown unit.
    """
    value = text.strip().lower()
    if value.isdigit():
        return int(value) * 1_000
    parts = _PART.findall(value)
    if not value or "".join(number + unit for number, unit in parts) != value:
        raise InvalidConfigError(
            field, f"{text!r} is not a duration; use a number and a unit such as 90m, 24h or 7d"
        )
    return sum(int(number) * UNIT_MS[unit] for number, unit in parts)


def format_duration_ms(duration_ms: int | float | None) -> str:
    """Format milliseconds with the two largest units, such as ``1d 2h`` or ``4m 10s``."""
    if duration_ms is None:
        return "-"
    remaining = int(duration_ms)
    if remaining < 1_000:
        return f"{remaining}ms"
    pieces = []
    for unit in ("w", "d", "h", "m", "s"):
        count, remaining = divmod(remaining, UNIT_MS[unit])
        if count:
            pieces.append(f"{count}{unit}")
    return " ".join(pieces[:2])
