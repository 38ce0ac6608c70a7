"""Chart geometry, the scale from (time, price) to SVG coordinates, and the price and time axes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from axisor.report.markers import ReportEvent

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
