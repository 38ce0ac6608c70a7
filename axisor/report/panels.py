"""The two chart panels: the price line with event markers, and cumulative liquidations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby

from axisor.report.axes import (
    _COUNT_HEIGHT,
    _COUNT_TICK_TARGET,
    _COUNT_TOP,
    _LEFT,
    _PLOT_HEIGHT,
    _RIGHT,
    _TOP,
    _WIDTH,
    _price_step,
    _Scale,
    _svg_frame,
)
from axisor.report.formatting import _escape, _format_price, format_utc
from axisor.report.markers import EVENT_KINDS, MARKER_STYLES, MAX_DETAILED_MARKERS, ReportEvent

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
