"""Text formatting of report values: summary rows, UTC times, prices and HTML escaping."""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal


def flatten_summary(summary: Mapping[str, object], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested mappings into (``"a.b"``, text) rows in insertion order."""
    rows: list[tuple[str, str]] = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(flatten_summary(value, prefix=f"{name}."))
        else:
            rows.append((name, _format_value(value)))
    return rows


def _format_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(_format_value(item) for item in value)
    return str(value)


def format_utc(time_ms: int) -> str:
    """Format epoch milliseconds as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=time_ms)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _format_price(price: Decimal) -> str:
    return f"{price:,f}"


def _escape(text: object) -> str:
    return html.escape(str(text), quote=True)
