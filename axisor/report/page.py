"""The report page: summary and event tables, styles, and the assembled HTML document."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from decimal import Decimal

from axisor.report.cards import _html_stat_cards
from axisor.report.chart import (
    _html_legend,
    _legend_symbol,
    _svg_chart,
    _svg_symbol_defs,
    downsample_min_max,
)
from axisor.report.formatting import _escape, _format_price, flatten_summary, format_utc
from axisor.report.markers import MARKER_STYLES, ReportEvent

MAX_TABLE_EVENTS = 500


def _html_summary(summary: Mapping[str, object]) -> str:
    rows = flatten_summary(summary)
    if not rows:
        return '<p class="empty">No summary.</p>'

    body = "".join(f"<tr><th>{_escape(k)}</th><td>{_escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary"><tbody>{body}</tbody></table>'


def _html_events(events: Sequence[ReportEvent]) -> str:
    if not events:
        return '<p class="empty">No events.</p>'

    shown_events = events[:MAX_TABLE_EVENTS]
    rows = "".join(
        f'<tr><td class="time">{format_utc(event.time_ms)}</td>'
        f'<td class="kind">{_legend_symbol(event.kind)}'
        f"{_escape(MARKER_STYLES[event.kind].legend)}</td>"
        f'<td class="number">{_escape(_format_price(event.price))}</td>'
        f"<td>{_escape(event.label)}</td></tr>"
        for event in shown_events
    )
    note = ""
    if len(events) > len(shown_events):
        note = f'<p class="note">Showing the first {len(shown_events)} of {len(events)} events.</p>'
    header = "<tr><th>time (UTC)</th><th>event</th><th>price (USD)</th><th>detail</th></tr>"
    return f'{note}<table class="events"><thead>{header}</thead><tbody>{rows}</tbody></table>'


def _html_subtitle(prices: Sequence[tuple[int, Decimal]]) -> str:
    if not prices:
        return ""

    low = min(prices, key=lambda point: point[1])
    high = max(prices, key=lambda point: point[1])
    return (
        f'<p class="subtitle">{format_utc(prices[0][0])} to {format_utc(prices[-1][0])} UTC'
        f" &middot; low {_format_price(low[1])} at {format_utc(low[0])}"
        f" &middot; high {_format_price(high[1])} at {format_utc(high[0])}</p>"
    )


_STYLE = """
:root { color-scheme: light; }
body { margin: 0; background: #f5f7fa; color: #0f172a;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; }
.subtitle, .note, .empty { color: #475569; margin: 0 0 12px; }
.card { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 12px 16px; }
.chart { width: 100%; height: auto; display: block; }
.chart .frame { fill: #fff; stroke: #cbd5e1; }
.chart .grid { stroke: #e2e8f0; stroke-width: 1; }
.chart .axis { fill: #475569; font-size: 12px; font-variant-numeric: tabular-nums; }
.chart .axis-date { fill: #94a3b8; font-size: 11px; }
.chart .axis-title { fill: #64748b; font-size: 12px; }
.chart .guide { stroke: #7f1d1d; stroke-width: 1; stroke-dasharray: 4 4; opacity: 0.55; }
.chart .dense-markers .marker { opacity: 0.5; }
.chart .dense-markers .marker[data-kind="liquidation_without_guard"] { opacity: 0.3; }
.chart .panel-title { fill: #334155; font-size: 13px; font-weight: 600; }
.chart .cumulative { fill: none; stroke-width: 2; stroke-linejoin: round; }
.chart .cumulative[data-kind="liquidation_without_guard"] { stroke: #7f1d1d;
  stroke-dasharray: 6 3; }
.chart .cumulative[data-kind="liquidation_with_guard"] { stroke: #dc2626; }
.chart .count-label { font-size: 13px; font-weight: 600; paint-order: stroke;
  stroke: #fff; stroke-width: 3px; }
.chart .count-label[data-kind="liquidation_without_guard"] { fill: #7f1d1d; }
.chart .count-label[data-kind="liquidation_with_guard"] { fill: #dc2626; }
.stats { display: flex; flex-wrap: wrap; gap: 8px; margin: 0 0 14px; }
.stat { flex: 1 1 112px; max-width: 180px; background: #fff; border: 1px solid #e2e8f0;
  border-radius: 8px; padding: 8px 12px; display: flex; flex-direction: column;
  justify-content: space-between; }
.stat dt { color: #475569; font-size: 12px; line-height: 1.3; }
.stat dd { margin: 4px 0 0; font-size: 18px; font-weight: 600; line-height: 1.2;
  font-variant-numeric: tabular-nums; }
.stat .value { white-space: nowrap; }
.stat .unit { color: #64748b; font-size: 13px; font-weight: 400; }
.price { fill: none; stroke: #334155; stroke-width: 1.2; stroke-linejoin: round; }
.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 6px 18px; padding: 0;
  margin: 10px 0 0; }
.legend li { display: flex; align-items: center; gap: 6px; }
.legend .count { color: #475569; font-variant-numeric: tabular-nums; }
.legend-symbol { width: 18px; height: 18px; overflow: visible; flex: none; }
table { border-collapse: collapse; background: #fff; border: 1px solid #e2e8f0; }
th, td { text-align: left; padding: 5px 12px; border-bottom: 1px solid #eef2f6;
  vertical-align: middle; }
thead th { background: #f1f5f9; font-weight: 600; }
.summary th { font-weight: 500; color: #334155; }
.summary td, .number, .time { font-variant-numeric: tabular-nums; }
.number { text-align: right; white-space: nowrap; }
.time { white-space: nowrap; }
.kind { white-space: nowrap; }
.kind .legend-symbol { width: 14px; height: 14px; vertical-align: -2px; margin-right: 6px; }
tbody tr:nth-child(even) { background: #fafbfc; }
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_report(
    *,
    title: str,
    summary: Mapping[str, object],
    prices: Sequence[tuple[int, Decimal]],
    events: Sequence[ReportEvent],
) -> str:
    """Render the report page as one HTML string (see ``write_report``)."""
    ordered_prices = sorted(prices, key=lambda point: point[0])
    ordered_events = sorted(events, key=lambda event: event.time_ms)
    chart = _svg_chart(downsample_min_max(ordered_prices), ordered_events)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"{_svg_symbol_defs()}<main><h1>{_escape(title)}</h1>{_html_subtitle(ordered_prices)}"
        f"{_html_stat_cards(summary)}"
        f'<div class="card">{chart}{_html_legend(ordered_events)}</div>'
        f"<h2>Summary</h2>{_html_summary(summary)}"
        f"<h2>Events ({len(ordered_events)})</h2>{_html_events(ordered_events)}"
        "</main></body></html>\n"
    )


def write_report(
    path: str | pathlib.Path,
    *,
    title: str,
    summary: Mapping[str, object],
    prices: Sequence[tuple[int, Decimal]],
    events: Sequence[ReportEvent],
) -> pathlib.Path:
    """Write the HTML report to ``path`` and return the path.

    ``prices`` are (epoch ms, USD per BTC) points, drawn after reduction to at most
    MAX_CHART_POINTS points. Nested dicts in ``summary`` become rows named ``a.b``. The headline
    keys that are present (liquidation counts, ``prevented``, ``sats_added``,
    ``duplicate_actions`` and ``tick_to_action_ms`` p50 and p99) also show as cards above the chart.
    """
    path = pathlib.Path(path)
    page = render_report(title=title, summary=summary, prices=prices, events=events)
    path.write_text(page, encoding="utf-8")
    return path
