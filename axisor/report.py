"""Write a self-contained HTML report of a price replay and the guard's actions on it.

The page needs no network: the chart is inline SVG, the styles are inline CSS and a
Content-Security-Policy blocks every external load. Cards at the top show the headline summary
figures. The chart draws the price line with one marker per event, and under it, on the same
time axis, the cumulative liquidations with and without the guard. A legend with counts per
event kind, the summary as a table and the first 500 events follow.

A kind with more than MAX_DETAILED_MARKERS events is drawn with small translucent markers under
the price line and without per-event guide lines, so that a run with thousands of events still
shows the price.
"""

from __future__ import annotations

import html
import pathlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from itertools import groupby

from axisor.errors import InvalidConfigError

MAX_CHART_POINTS = 2000
MAX_TABLE_EVENTS = 500
# Above this many events of one kind, its markers are small and translucent and a liquidation
# without the guard gets no vertical guide line.
MAX_DETAILED_MARKERS = 20


@dataclass(frozen=True)
class MarkerStyle:
    """Drawing style of one event kind: legend text, colour and two SVG shapes centred on (0, 0).

    ``shape`` is drawn while a kind has at most MAX_DETAILED_MARKERS events and ``small_shape``
    above that, at reduced opacity.
    """

    legend: str
    colour: str
    shape: str
    small_shape: str


# A liquidation that happened with the guard on is a solid red cross. One that would have
# happened without the guard is a hollow dashed ring with a cross and a dashed vertical line.
# Above MAX_DETAILED_MARKERS of them, each is only a small hollow ring.
MARKER_STYLES: dict[str, MarkerStyle] = {
    "add_margin": MarkerStyle(
        "Add margin",
        "#16a34a",
        '<circle r="5.5" fill="#16a34a" stroke="#fff" stroke-width="1.5"/>',
        '<circle r="2.6" fill="#16a34a"/>',
    ),
    "reduce_position": MarkerStyle(
        "Reduce position",
        "#ea580c",
        '<path d="M0 -7 L7 0 L0 7 L-7 0 Z" fill="#ea580c" stroke="#fff" stroke-width="1.5"/>',
        '<path d="M0 -3.5 L3.5 0 L0 3.5 L-3.5 0 Z" fill="#ea580c"/>',
    ),
    "close_position": MarkerStyle(
        "Close position",
        "#1d4ed8",
        '<rect x="-5.5" y="-5.5" width="11" height="11" fill="#1d4ed8" stroke="#fff"'
        ' stroke-width="1.5"/>',
        '<rect x="-2.6" y="-2.6" width="5.2" height="5.2" fill="#1d4ed8"/>',
    ),
    "notify": MarkerStyle(
        "Notify",
        "#64748b",
        '<circle r="4.5" fill="#fff" stroke="#64748b" stroke-width="2"/>',
        '<circle r="2.4" fill="none" stroke="#64748b" stroke-width="1.2"/>',
    ),
    "liquidation_with_guard": MarkerStyle(
        "Liquidation (guard on)",
        "#dc2626",
        '<path d="M-6 -6 L6 6 M6 -6 L-6 6" stroke="#fff" stroke-width="6" stroke-linecap="round"/>'
        '<path d="M-6 -6 L6 6 M6 -6 L-6 6" stroke="#dc2626" stroke-width="3.5"'
        ' stroke-linecap="round"/>',
        '<path d="M-3 -3 L3 3 M3 -3 L-3 3" stroke="#dc2626" stroke-width="1.8"/>',
    ),
    "liquidation_without_guard": MarkerStyle(
        "Liquidation without guard",
        "#7f1d1d",
        '<circle r="9" fill="#fff" fill-opacity="0.85" stroke="#7f1d1d" stroke-width="2"'
        ' stroke-dasharray="3 2"/>'
        '<path d="M-4 -4 L4 4 M4 -4 L-4 4" stroke="#7f1d1d" stroke-width="2"/>',
        '<circle r="4" fill="none" stroke="#7f1d1d" stroke-width="1.1"/>',
    ),
    "take_profit": MarkerStyle(
        "Take profit",
        "#0d9488",
        '<path d="M0 -7 L6.5 5 L-6.5 5 Z" fill="#0d9488" stroke="#fff" stroke-width="1.5"/>',
        '<path d="M0 -3.5 L3.2 2.5 L-3.2 2.5 Z" fill="#0d9488"/>',
    ),
    "stop_loss": MarkerStyle(
        "Stop loss",
        "#c026d3",
        '<path d="M0 7 L6.5 -5 L-6.5 -5 Z" fill="#c026d3" stroke="#fff" stroke-width="1.5"/>',
        '<path d="M0 3.5 L3.2 -2.5 L-3.2 -2.5 Z" fill="#c026d3"/>',
    ),
    "auto_entry": MarkerStyle(
        "Auto entry",
        "#7c3aed",
        '<path d="M-6 0 H6 M0 -6 V6" stroke="#fff" stroke-width="6" stroke-linecap="round"/>'
        '<path d="M-6 0 H6 M0 -6 V6" stroke="#7c3aed" stroke-width="3" stroke-linecap="round"/>',
        '<path d="M-3 0 H3 M0 -3 V3" stroke="#7c3aed" stroke-width="1.6"/>',
    ),
}
EVENT_KINDS = tuple(MARKER_STYLES)


@dataclass(frozen=True)
class ReportEvent:
    """An action or outcome to mark on the chart, at ``price`` USD per BTC."""

    time_ms: int  # epoch milliseconds UTC
    price: Decimal
    kind: str  # one of EVENT_KINDS
    label: str

    def __post_init__(self) -> None:
        if self.kind not in MARKER_STYLES:
            raise InvalidConfigError(
                "kind", f"unknown event kind {self.kind!r}; choose one of: {', '.join(EVENT_KINDS)}"
            )


# Chart geometry, in SVG user units. The price panel is on top and the optional panel of
# cumulative liquidations sits under it, with the time labels under the lowest panel.
_WIDTH = 1100
_LEFT = 84
_RIGHT = 24
_TOP = 20
_BOTTOM = 58
_PLOT_WIDTH = _WIDTH - _LEFT - _RIGHT
_PLOT_HEIGHT = 382  # price panel
_COUNT_GAP = 34  # between the panels, holding the lower panel's heading
_COUNT_TOP = _TOP + _PLOT_HEIGHT + _COUNT_GAP
_COUNT_HEIGHT = 150
_COUNT_TICK_TARGET = 4

_MINUTE_MS = 60_000
_HOUR_MS = 60 * _MINUTE_MS
_DAY_MS = 24 * _HOUR_MS
_TIME_STEPS_MS = tuple(
    [m * _MINUTE_MS for m in (1, 2, 5, 10, 15, 30)]
    + [h * _HOUR_MS for h in (1, 2, 3, 6, 12)]
    + [d * _DAY_MS for d in (1, 2, 7, 14, 28, 91, 182, 364)]
)
_MAX_TIME_TICKS = 9
_PRICE_TICK_TARGET = 6


def downsample_min_max(
    points: Sequence[tuple[int, Decimal]], max_points: int = MAX_CHART_POINTS
) -> list[tuple[int, Decimal]]:
    """Reduce a time-ordered series to at most ``max_points`` by keeping each bucket's extremes.

    The series is cut into equal-count buckets and each bucket keeps its lowest and highest
    point in time order, so a one-tick crash wick survives. The first and last points are kept.
    """
    if len(points) <= max_points:
        return list(points)

    bucket_count = max(1, (max_points - 2) // 2)
    kept_points = [points[0]]
    for bucket in range(bucket_count):
        start = 1 + bucket * (len(points) - 2) // bucket_count
        stop = 1 + (bucket + 1) * (len(points) - 2) // bucket_count
        kept_points.extend(_bucket_extremes(points, start, stop))
    kept_points.append(points[-1])
    return kept_points


def _bucket_extremes(
    points: Sequence[tuple[int, Decimal]], start: int, stop: int
) -> list[tuple[int, Decimal]]:
    if start >= stop:
        return []
    indices = range(start, stop)
    low = min(indices, key=lambda i: points[i][1])
    high = max(indices, key=lambda i: points[i][1])
    return [points[i] for i in sorted({low, high})]


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


# Scales and axes


@dataclass(frozen=True)
class _Scale:
    """Mapping from epoch milliseconds and USD prices to SVG coordinates of the plot area."""

    start_ms: int
    end_ms: int
    low_usd: Decimal
    high_usd: Decimal

    def x(self, time_ms: int) -> float:
        span_ms = max(1, self.end_ms - self.start_ms)
        return _LEFT + (time_ms - self.start_ms) / span_ms * _PLOT_WIDTH

    def y(self, price: Decimal) -> float:
        span_usd = max(Decimal("1e-9"), self.high_usd - self.low_usd)
        return _TOP + float((self.high_usd - price) / span_usd) * _PLOT_HEIGHT


def _build_scale(prices: Sequence[tuple[int, Decimal]], events: Sequence[ReportEvent]) -> _Scale:
    times = [time_ms for time_ms, _ in prices] + [event.time_ms for event in events]
    values = [price for _, price in prices] + [event.price for event in events]
    low, high = min(values), max(values)
    padding = (high - low) * Decimal("0.04") or max(abs(high) * Decimal("0.01"), Decimal(1))
    return _Scale(min(times), max(times), low - padding, high + padding)


def _price_step(span_usd: Decimal, target: int = _PRICE_TICK_TARGET) -> Decimal:
    """Pick a step of 1, 2, 2.5 or 5 times a power of ten that gives about ``target`` ticks."""
    raw = span_usd / target
    magnitude = Decimal(1).scaleb(raw.adjusted())
    for factor in (1, 2, Decimal("2.5"), 5, 10):
        if magnitude * factor >= raw:
            return magnitude * factor
    return magnitude * 10


def _price_ticks(scale: _Scale) -> list[Decimal]:
    step = _price_step(scale.high_usd - scale.low_usd)
    tick = (scale.low_usd / step).to_integral_value(rounding=ROUND_CEILING) * step
    ticks = []
    while tick <= scale.high_usd:
        ticks.append(tick)
        tick += step
    return ticks


def _price_label(tick: Decimal) -> str:
    if tick == tick.to_integral_value():
        return f"{int(tick):,}"
    return f"{tick.normalize():,f}"


def _time_ticks(scale: _Scale) -> tuple[int, list[int]]:
    span_ms = max(1, scale.end_ms - scale.start_ms)
    step_ms = next(
        (step for step in _TIME_STEPS_MS if span_ms // step <= _MAX_TIME_TICKS), _TIME_STEPS_MS[-1]
    )
    first_ms = -(-scale.start_ms // step_ms) * step_ms
    return step_ms, list(range(first_ms, scale.end_ms + 1, step_ms))


def _time_label(time_ms: int, step_ms: int, previous_ms: int | None) -> tuple[str, str]:
    """Return the two lines under a time tick: the clock time and, on a new day, the date."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=time_ms)
    date = moment.strftime("%Y-%m-%d")
    if step_ms >= _DAY_MS:
        return date, ""

    new_day = previous_ms is None or time_ms // _DAY_MS != previous_ms // _DAY_MS
    return moment.strftime("%H:%M"), date if new_day else ""


def _svg_price_axis(scale: _Scale) -> list[str]:
    parts = []
    for tick in _price_ticks(scale):
        y = scale.y(tick)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_price_label(tick)}</text>"
        )
    middle_y = _TOP + _PLOT_HEIGHT / 2
    parts.append(
        f'<text class="axis-title" transform="translate(18 {middle_y:.1f}) rotate(-90)"'
        ' text-anchor="middle">USD per BTC</text>'
    )
    return parts


def _svg_time_axis(scale: _Scale, panels: Sequence[tuple[int, int]]) -> list[str]:
    """Draw the vertical time grid across each (top, bottom) panel, labelled under the last."""
    step_ms, ticks = _time_ticks(scale)
    bottom = panels[-1][1]
    parts = []
    previous_ms = None
    for tick_ms in ticks:
        x = scale.x(tick_ms)
        clock, date = _time_label(tick_ms, step_ms, previous_ms)
        parts.extend(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{panel_bottom}"/>'
            for top, panel_bottom in panels
        )
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{bottom + 18}" text-anchor="middle">{clock}'
            f'<tspan class="axis-date" x="{x:.1f}" dy="15">{date}</tspan></text>'
        )
        previous_ms = tick_ms
    parts.append(
        f'<text class="axis-title" x="{_WIDTH - _RIGHT}" y="{bottom + _BOTTOM - 4}" '
        'text-anchor="end">time (UTC)</text>'
    )
    return parts


def _svg_frame(top: int, height: int) -> str:
    return f'<rect class="frame" x="{_LEFT}" y="{top}" width="{_PLOT_WIDTH}" height="{height}"/>'


# Price panel


def _svg_price_line(scale: _Scale, prices: Sequence[tuple[int, Decimal]]) -> str:
    points = " ".join(f"{scale.x(t):.1f},{scale.y(p):.1f}" for t, p in prices)
    return f'<polyline class="price" points="{points}"/>'


def _dense_kinds(events: Sequence[ReportEvent]) -> frozenset[str]:
    counts = Counter(event.kind for event in events)
    return frozenset(kind for kind, count in counts.items() if count > MAX_DETAILED_MARKERS)


def _svg_marker(scale: _Scale, event: ReportEvent, symbol: str) -> str:
    x, y = scale.x(event.time_ms), scale.y(event.price)
    tooltip = _escape(
        f"{format_utc(event.time_ms)} UTC, {MARKER_STYLES[event.kind].legend}, "
        f"{_format_price(event.price)} USD: {event.label}"
    )
    return (
        f'<use class="marker" data-kind="{event.kind}" href="#{symbol}" '
        f'x="{x:.1f}" y="{y:.1f}"><title>{tooltip}</title></use>'
    )


def _svg_guides(scale: _Scale, events: Sequence[ReportEvent], dense: frozenset[str]) -> list[str]:
    """Draw a dashed vertical line at each liquidation without the guard, unless there are many."""
    if "liquidation_without_guard" in dense:
        return []

    bottom = _TOP + _PLOT_HEIGHT
    return [
        f'<line class="guide" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{bottom}"/>'
        for x in (scale.x(e.time_ms) for e in events if e.kind == "liquidation_without_guard")
    ]


# Dense markers are drawn in this order, so the baseline's liquidations lie under the guarded
# run's markers.
_DENSE_ORDER = {
    kind: rank
    for rank, kind in enumerate(
        ["liquidation_without_guard", *(k for k in EVENT_KINDS if k != "liquidation_without_guard")]
    )
}


def _svg_price_panel(
    scale: _Scale, prices: Sequence[tuple[int, Decimal]], events: Sequence[ReportEvent]
) -> list[str]:
    """Draw guides, then dense markers, then the price line, then the detailed markers on top."""
    dense = _dense_kinds(events)
    dense_events = sorted(
        (event for event in events if event.kind in dense),
        key=lambda event: _DENSE_ORDER[event.kind],
    )
    dense_markers = "".join(
        _svg_marker(scale, event, f"marker-{event.kind}-small") for event in dense_events
    )
    detailed_markers = [
        _svg_marker(scale, event, f"marker-{event.kind}")
        for event in events
        if event.kind not in dense
    ]
    return [
        *_svg_guides(scale, events, dense),
        f'<g class="dense-markers">{dense_markers}</g>',
        f'<g clip-path="url(#plot)">{_svg_price_line(scale, prices)}</g>',
        *detailed_markers,
    ]


# Cumulative liquidations panel

_COUNT_SERIES = (
    ("liquidation_without_guard", "without guard"),
    ("liquidation_with_guard", "with guard"),
)
_COUNT_KINDS = frozenset(kind for kind, _ in _COUNT_SERIES)


@dataclass(frozen=True)
class _CountScale:
    """Mapping from an event count to the SVG y coordinate of the cumulative panel."""

    top_count: int

    def y(self, count: int) -> float:
        return _COUNT_TOP + (1 - count / self.top_count) * _COUNT_HEIGHT


def _count_times(events: Sequence[ReportEvent]) -> dict[str, list[int]]:
    return {
        kind: [event.time_ms for event in events if event.kind == kind] for kind, _ in _COUNT_SERIES
    }


def _has_count_panel(events: Sequence[ReportEvent]) -> bool:
    return any(event.kind in _COUNT_KINDS for event in events)


def _svg_count_axis(counts: _CountScale) -> list[str]:
    step = max(1, int(_price_step(Decimal(counts.top_count), _COUNT_TICK_TARGET)))
    parts = []
    for tick in range(0, counts.top_count + 1, step):
        y = counts.y(tick)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{tick:,}</text>'
        )
    middle_y = _COUNT_TOP + _COUNT_HEIGHT / 2
    parts.append(
        f'<text class="axis-title" transform="translate(18 {middle_y:.1f}) rotate(-90)"'
        ' text-anchor="middle">positions</text>'
        f'<text class="panel-title" x="{_LEFT}" y="{_COUNT_TOP - 10}">'
        "Liquidated positions so far, with and without the guard</text>"
    )
    return parts


def _step_path(scale: _Scale, counts: _CountScale, times_ms: Sequence[int]) -> str:
    """Return the path data of a count that rises by one at each of the sorted ``times_ms``."""
    steps = [f"M{scale.x(scale.start_ms):.1f} {counts.y(0):.1f}"]
    total = 0
    for time_ms, group in groupby(times_ms):
        total += sum(1 for _ in group)
        steps.append(f"H{scale.x(time_ms):.1f}V{counts.y(total):.1f}")
    steps.append(f"H{scale.x(scale.end_ms):.1f}")
    return "".join(steps)


def _count_label_ys(counts: _CountScale, finals: Sequence[int]) -> list[float]:
    """Place each line's label above the line's end, or below it when the line above is too close.

    ``finals`` must be in descending order, so each label only has the previous line to clear.
    """
    ys = []
    previous_line_y = None
    for final in finals:
        line_y = counts.y(final)
        above = max(line_y - 6, _COUNT_TOP + 14)
        below = line_y + 16
        crowded = previous_line_y is not None and above - 13 < previous_line_y + 3
        fits_below = below < _COUNT_TOP + _COUNT_HEIGHT - 2
        ys.append(below if crowded and fits_below else above)
        previous_line_y = line_y
    return ys


def _svg_count_panel(scale: _Scale, events: Sequence[ReportEvent]) -> list[str]:
    """Draw one step line per liquidation kind, labelled with its final count."""
    times = _count_times(events)
    series = sorted(_COUNT_SERIES, key=lambda item: len(times[item[0]]), reverse=True)
    finals = [len(times[kind]) for kind, _ in series]
    # 12 % headroom over the highest count leaves room for its label above the line.
    counts = _CountScale(max(1, -(-finals[0] * 112 // 100)))
    parts = [_svg_frame(_COUNT_TOP, _COUNT_HEIGHT), *_svg_count_axis(counts)]
    label_ys = _count_label_ys(counts, finals)
    for (kind, name), final, label_y in zip(series, finals, label_ys, strict=True):
        parts.append(
            f'<path class="cumulative" data-kind="{kind}" data-final="{final}" '
            f'd="{_step_path(scale, counts, times[kind])}"/>'
            f'<text class="count-label" data-kind="{kind}" x="{_WIDTH - _RIGHT - 6}" '
            f'y="{label_y:.1f}" text-anchor="end">{name}: {final:,}</text>'
        )
    return parts


def _svg_chart(prices: Sequence[tuple[int, Decimal]], events: Sequence[ReportEvent]) -> str:
    if not prices and not events:
        return '<p class="empty">No price data.</p>'

    scale = _build_scale(prices, events)
    panels = [(_TOP, _TOP + _PLOT_HEIGHT)]
    if _has_count_panel(events):
        panels.append((_COUNT_TOP, _COUNT_TOP + _COUNT_HEIGHT))
    height = panels[-1][1] + _BOTTOM
    clip = (
        f'<clipPath id="plot"><rect x="{_LEFT}" y="{_TOP}" width="{_PLOT_WIDTH}" '
        f'height="{_PLOT_HEIGHT}"/></clipPath>'
    )
    body = [clip, _svg_frame(_TOP, _PLOT_HEIGHT)]
    if len(panels) > 1:
        body.extend(_svg_count_panel(scale, events))
    body.extend([*_svg_price_axis(scale), *_svg_time_axis(scale, panels)])
    body.extend(_svg_price_panel(scale, prices, events))
    return (
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-label="price chart" xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>'
    )


def _svg_symbol_defs() -> str:
    symbols = "".join(
        f'<g id="marker-{kind}">{style.shape}</g>'
        f'<g id="marker-{kind}-small">{style.small_shape}</g>'
        for kind, style in MARKER_STYLES.items()
    )
    return (
        '<svg width="0" height="0" style="position:absolute" aria-hidden="true" '
        f'xmlns="http://www.w3.org/2000/svg"><defs>{symbols}</defs></svg>'
    )


def _legend_symbol(kind: str, small: bool = False) -> str:
    if small:
        return (
            '<svg class="legend-symbol" viewBox="-5 -5 10 10" aria-hidden="true">'
            f'<use href="#marker-{kind}-small"/></svg>'
        )
    return (
        '<svg class="legend-symbol" viewBox="-10 -10 20 20" aria-hidden="true">'
        f'<use href="#marker-{kind}"/></svg>'
    )


def _html_legend(events: Sequence[ReportEvent]) -> str:
    counts = Counter(event.kind for event in events)
    dense = _dense_kinds(events)
    items = [
        '<li><svg class="legend-symbol" viewBox="0 0 20 20" aria-hidden="true">'
        '<path class="price" d="M1 13 L7 7 L12 11 L19 4"/></svg>price</li>'
    ]
    for kind, style in MARKER_STYLES.items():
        if counts[kind]:
            items.append(
                f'<li class="legend-item" data-kind="{kind}">{_legend_symbol(kind, kind in dense)}'
                f'{_escape(style.legend)} <span class="count">{counts[kind]:,}</span></li>'
            )
    return f'<ul class="legend">{"".join(items)}</ul>'


# Tables and page


def _escape(text: object) -> str:
    return html.escape(str(text), quote=True)


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
