"""Tests of the self-contained HTML replay report."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from decimal import Decimal

import pytest

from axisor.errors import InvalidConfigError
from axisor.market import Replay
from axisor.report import (
    EVENT_KINDS,
    MAX_CHART_POINTS,
    MAX_TABLE_EVENTS,
    ReportEvent,
    downsample_min_max,
    flatten_summary,
    write_report,
)

SVG = "{http://www.w3.org/2000/svg}"
START_MS = 1_621_209_600_000  # 2021-05-17T00:00:00Z
MINUTE_MS = 60_000


def price_series(count: int) -> list[tuple[int, Decimal]]:
    """A zigzag around 40,000 USD with one deep wick at the middle point."""
    points = [(START_MS + i * MINUTE_MS, Decimal(40000 + (i % 7) * 10)) for i in range(count)]
    middle = count // 2
    points[middle] = (points[middle][0], Decimal(30000))
    return points


def chart_svg(page: str) -> ET.Element:
    """Parse the chart as XML, which also checks that it is well formed."""
    match = re.search(r'<svg class="chart".*?</svg>', page, re.S)
    assert match is not None
    return ET.fromstring(match.group(0))


def markers_by_kind(chart: ET.Element) -> Counter[str]:
    return Counter(
        element.get("data-kind")
        for element in chart.iter(f"{SVG}use")
        if element.get("class") == "marker"
    )


def render(tmp_path, **overrides) -> str:
    arguments = {
        "title": "Replay",
        "summary": {"episode": "test"},
        "prices": price_series(100),
        "events": [],
    }
    arguments.update(overrides)
    path = write_report(tmp_path / "report.html", **arguments)
    return path.read_text(encoding="utf-8")


def test_report_file_written(tmp_path):
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()

    path = write_report(target, title="2021-05-19", summary={}, prices=price_series(10), events=[])

    assert path == target
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_markers_counted_per_kind(tmp_path):
    counts = {kind: index + 1 for index, kind in enumerate(EVENT_KINDS)}
    events = [
        ReportEvent(START_MS + n * MINUTE_MS, Decimal(40000), kind, f"{kind} {n}")
        for kind, count in counts.items()
        for n in range(count)
    ]

    page = render(tmp_path, events=events)
    chart = chart_svg(page)

    assert markers_by_kind(chart) == Counter(counts)
    for kind, count in counts.items():
        legend = re.search(rf'<li class="legend-item" data-kind="{kind}">.*?</li>', page)
        assert legend is not None, kind
        assert f'<span class="count">{count}</span>' in legend.group(0)


def test_liquidation_without_guard_drawn_distinctly(tmp_path):
    events = [
        ReportEvent(START_MS, Decimal(35000), "liquidation_with_guard", "with"),
        ReportEvent(START_MS + MINUTE_MS, Decimal(34000), "liquidation_without_guard", "without"),
    ]

    chart = chart_svg(render(tmp_path, events=events))
    uses = {use.get("data-kind"): use.get("href") for use in chart.iter(f"{SVG}use")}
    guides = [line for line in chart.iter(f"{SVG}line") if line.get("class") == "guide"]

    assert uses["liquidation_with_guard"] != uses["liquidation_without_guard"]
    assert len(guides) == 1


def test_script_label_escaped(tmp_path):
    label = "<script>alert('x')</script> & more"
    events = [ReportEvent(START_MS, Decimal(40000), "notify", label)]

    page = render(tmp_path, title="<b>title</b>", summary={"<key>": "<value>"}, events=events)

    assert "<script>" not in page
    assert "<b>title</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "&lt;key&gt;" in page
    assert "&lt;value&gt;" in page
    assert chart_svg(page).find(f"{SVG}use/{SVG}title") is not None


def test_page_loads_nothing_external(tmp_path):
    page = render(tmp_path, events=[ReportEvent(START_MS, Decimal(40000), "notify", "n")])

    assert "default-src 'none'" in page
    assert "<script" not in page
    assert "<link" not in page
    assert "url(http" not in page
    assert 'src="' not in page


def test_downsample_keeps_bound_and_extremes():
    points = price_series(100_000)

    kept = downsample_min_max(points)

    assert len(kept) <= MAX_CHART_POINTS
    assert kept[0] == points[0]
    assert kept[-1] == points[-1]
    assert min(price for _, price in kept) == Decimal(30000)
    assert max(price for _, price in kept) == Decimal(40060)
    assert [time_ms for time_ms, _ in kept] == sorted({time_ms for time_ms, _ in kept})


def test_downsample_leaves_short_series():
    points = price_series(50)

    assert downsample_min_max(points) == points


def test_chart_polyline_respects_bound(tmp_path):
    chart = chart_svg(render(tmp_path, prices=price_series(30_000)))
    polyline = chart.find(f".//{SVG}polyline")

    assert polyline is not None
    assert len(polyline.get("points").split()) <= MAX_CHART_POINTS


def test_empty_events(tmp_path):
    page = render(tmp_path, events=[])

    assert markers_by_kind(chart_svg(page)) == Counter()
    assert "No events." in page
    assert "Events (0)" in page
    assert 'class="legend-item"' not in page


def test_no_prices_and_no_events(tmp_path):
    page = render(tmp_path, prices=[], events=[])

    assert "No price data." in page
    assert '<svg class="chart"' not in page


def test_events_table_capped(tmp_path):
    events = [
        ReportEvent(START_MS + n * 1000, Decimal(40000), "notify", f"event {n}")
        for n in range(MAX_TABLE_EVENTS + 20)
    ]

    page = render(tmp_path, events=events)
    table = page[page.index('<table class="events">') :]

    assert table.count("<tr>") == MAX_TABLE_EVENTS + 1
    assert f"Showing the first {MAX_TABLE_EVENTS} of {MAX_TABLE_EVENTS + 20} events." in page
    assert f"event {MAX_TABLE_EVENTS - 1}<" in table
    assert f"event {MAX_TABLE_EVENTS}<" not in table
    assert sum(markers_by_kind(chart_svg(page)).values()) == MAX_TABLE_EVENTS + 20


def test_summary_flattened(tmp_path):
    summary = {
        "episode": "2021-05-19",
        "guard": {"threshold_pct": Decimal("70"), "actions": {"add_margin": 3}},
        "liquidated": False,
        "note": None,
    }

    assert flatten_summary(summary) == [
        ("episode", "2021-05-19"),
        ("guard.threshold_pct", "70"),
        ("guard.actions.add_margin", "3"),
        ("liquidated", "False"),
        ("note", "-"),
    ]
    page = render(tmp_path, summary=summary)
    assert "<tr><th>guard.actions.add_margin</th><td>3</td></tr>" in page


def test_axes_have_readable_labels(tmp_path):
    chart = chart_svg(render(tmp_path, prices=price_series(3 * 24 * 60)))
    labels = [
        "".join(text.itertext()) for text in chart.iter(f"{SVG}text") if text.get("class") == "axis"
    ]

    assert "30,000" in labels
    assert "00:00" + "2021-05-18" in labels
    assert "USD per BTC" in "".join(chart.itertext())
    assert "time (UTC)" in "".join(chart.itertext())


def test_unknown_event_kind_rejected():
    with pytest.raises(InvalidConfigError) as caught:
        ReportEvent(START_MS, Decimal(1), "liquidate", "x")

    assert caught.value.field == "kind"
    assert "unknown event kind 'liquidate'" in caught.value.message


def test_real_episode_report(tmp_path):
    replay = Replay.from_episode("2021-05-19")
    prices = [(tick.time_ms, tick.price) for tick in replay.ticks()]
    lowest = min(replay.bars, key=lambda bar: bar.low)
    events = [ReportEvent(lowest.time_ms, lowest.low, "liquidation_without_guard", "low")]

    page = render(tmp_path, title="2021-05-19", prices=prices, events=events)
    polyline = chart_svg(page).find(f".//{SVG}polyline")

    assert len(prices) > MAX_CHART_POINTS
    assert len(polyline.get("points").split()) <= MAX_CHART_POINTS
    assert "low 30,000.0 at 2021-05-19 13:10:" in page
