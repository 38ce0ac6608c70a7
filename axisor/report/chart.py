"""The SVG chart: price series reduction, the assembled panels, marker symbols and legend."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

from axisor.report.axes import (
    _BOTTOM,
    _COUNT_HEIGHT,
    _COUNT_TOP,
    _LEFT,
    _PLOT_HEIGHT,
    _PLOT_WIDTH,
    _TOP,
    _WIDTH,
    _build_scale,
    _svg_frame,
    _svg_price_axis,
    _svg_time_axis,
)
from axisor.report.formatting import _escape
from axisor.report.markers import MARKER_STYLES, ReportEvent
from axisor.report.panels import (
    _dense_kinds,
    _has_count_panel,
    _svg_count_panel,
    _svg_price_panel,
)

MAX_CHART_POINTS = 2000


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
