"""Headline summary figures, shown as cards above the chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from axisor.report.formatting import _escape, _format_value

# Headline figures shown as cards above the chart: summary key path, card title and unit.
_STAT_CARDS = (
    (("liquidated_without_guard",), "Liquidated without guard", ""),
    (("liquidated_with_guard",), "Liquidated with guard", ""),
    (("preventable_liquidations",), "Preventable liquidations", ""),
    (("prevented",), "Prevented", ""),
    (("sats_added",), "Margin added", "sats"),
    (("duplicate_actions",), "Duplicate actions", ""),
    (("tick_to_action_ms", "p50"), "Tick to action p50", "ms"),
    (("tick_to_action_ms", "p99"), "Tick to action p99", "ms"),
)
_MISSING = object()


def _summary_lookup(summary: Mapping[str, object], key_path: Sequence[str]) -> object:
    value: object = summary
    for key in key_path:
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _format_stat(value: object) -> str:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return f"{value:,}"
    return _format_value(value)


def _html_stat_cards(summary: Mapping[str, object]) -> str:
    """Render the headline summary figures that are present as a row of cards."""
    cards = []
    for key_path, title, unit in _STAT_CARDS:
        value = _summary_lookup(summary, key_path)
        if value is _MISSING:
            continue
        unit_text = f' <span class="unit">{unit}</span>' if unit and value is not None else ""
        cards.append(
            f'<div class="stat" data-key="{".".join(key_path)}"><dt>{title}</dt>'
            f'<dd><span class="value">{_escape(_format_stat(value))}</span>{unit_text}</dd></div>'
        )
    if not cards:
        return ""
    return f'<dl class="stats">{"".join(cards)}</dl>'
