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
    MAX_DETAILED_MARKERS,
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


def guide_lines(chart: ET.Element) -> list[ET.Element]:
    return [line for line in chart.iter(f"{SVG}line") if line.get("class") == "guide"]


def cumulative_paths(chart: ET.Element) -> dict[str, ET.Element]:
    return {
        path.get("data-kind"): path
        for path in chart.iter(f"{SVG}path")
        if path.get("class") == "cumulative"
    }


def count_labels(chart: ET.Element) -> dict[str, str]:
    return {
        text.get("data-kind"): text.text
        for text in chart.iter(f"{SVG}text")
        if text.get("class") == "count-label"
    }


def stat_cards(page: str) -> dict[str, str]:
    """Map each stat card's summary key to its visible value text."""
    match = re.search(r'<dl class="stats">.*?</dl>', page, re.S)
    if match is None:
        return {}
    cards = ET.fromstring(match.group(0))
    return {card.get("data-key"): "".join(card.find("dd").itertext()) for card in cards}


def spread_events(kind: str, count: int, step_ms: int = MINUTE_MS) -> list[ReportEvent]:
    return [
        ReportEvent(START_MS + n * step_ms, Decimal(40000), kind, f"{kind} {n}")
        for n in range(count)
    ]


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

    assert uses["liquidation_with_guard"] != uses["liquidation_without_guard"]
    assert len(guide_lines(chart)) == 1


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


@pytest.mark.parametrize(
    ("count", "expected_guides"),
    [(1, 1), (MAX_DETAILED_MARKERS, MAX_DETAILED_MARKERS), (MAX_DETAILED_MARKERS + 1, 0)],
)
def test_guides_only_for_few_liquidations(tmp_path, count, expected_guides):
    events = spread_events("liquidation_without_guard", count)

    chart = chart_svg(render(tmp_path, events=events))

    assert len(guide_lines(chart)) == expected_guides
    assert markers_by_kind(chart) == Counter({"liquidation_without_guard": count})


def test_dense_markers_small_and_under_price(tmp_path):
    events = spread_events("add_margin", MAX_DETAILED_MARKERS + 1) + spread_events(
        "close_position", 2
    )

    chart = chart_svg(render(tmp_path, events=events))
    children = list(chart)
    dense_group = chart.find(f"{SVG}g[@class='dense-markers']")
    price_group = next(child for child in children if child.find(f"{SVG}polyline") is not None)
    detailed = [child for child in children if child.get("class") == "marker"]

    assert dense_group is not None
    dense_hrefs = {use.get("href") for use in dense_group.iter(f"{SVG}use")}
    assert dense_hrefs == {"#marker-add_margin-small"}
    assert len(dense_group.findall(f"{SVG}use")) == MAX_DETAILED_MARKERS + 1
    assert {use.get("href") for use in detailed} == {"#marker-close_position"}
    assert children.index(dense_group) < children.index(price_group)
    assert children.index(price_group) < children.index(detailed[0])
    assert markers_by_kind(chart) == Counter(add_margin=MAX_DETAILED_MARKERS + 1, close_position=2)


def test_run_scale_chart(tmp_path):
    """A run as large as the 2021-05-19 replay keeps every marker but draws no guide lines."""
    counts = {"add_margin": 1500, "liquidation_with_guard": 300, "liquidation_without_guard": 650}
    events = [event for kind, count in counts.items() for event in spread_events(kind, count, 7000)]

    page = render(tmp_path, prices=price_series(3 * 24 * 60), events=events)
    chart = chart_svg(page)
    paths = cumulative_paths(chart)

    assert markers_by_kind(chart) == Counter(counts)
    assert guide_lines(chart) == []
    assert paths["liquidation_with_guard"].get("data-final") == "300"
    assert paths["liquidation_without_guard"].get("data-final") == "650"
    assert '<span class="count">1,500</span>' in page


def step_ys(path: ET.Element) -> list[float]:
    """Return the y of the start point and of each vertical step of a cumulative path."""
    data = path.get("d")
    start_y = float(re.match(r"M[\d.]+ ([\d.]+)", data).group(1))
    return [start_y] + [float(y) for y in re.findall(r"V([\d.]+)", data)]


def test_cumulative_panel_final_counts(tmp_path):
    with_guard = spread_events("liquidation_with_guard", 7)
    # Two liquidations in the same millisecond make one step of two.
    without_guard = spread_events("liquidation_without_guard", 11) + [
        ReportEvent(START_MS, Decimal(39000), "liquidation_without_guard", "same tick")
    ]
    events = with_guard + without_guard + spread_events("add_margin", 5)

    chart = chart_svg(render(tmp_path, events=events))
    paths = cumulative_paths(chart)
    labels = count_labels(chart)
    with_ys = step_ys(paths["liquidation_with_guard"])
    without_ys = step_ys(paths["liquidation_without_guard"])

    assert set(paths) == {"liquidation_with_guard", "liquidation_without_guard"}
    assert paths["liquidation_with_guard"].get("data-final") == "7"
    assert paths["liquidation_without_guard"].get("data-final") == "12"
    assert labels["liquidation_with_guard"] == "with guard: 7"
    assert labels["liquidation_without_guard"] == "without guard: 12"
    assert len(with_ys) == 1 + 7
    assert len(without_ys) == 1 + 11
    assert with_ys == sorted(with_ys, reverse=True)
    assert without_ys == sorted(without_ys, reverse=True)
    assert with_ys[0] == without_ys[0]
    # The panel's y scale is linear from a shared zero line, so 12 rises 12/7 times as far as 7.
    rise_with = with_ys[0] - with_ys[-1]
    rise_without = without_ys[0] - without_ys[-1]
    assert rise_without / rise_with == pytest.approx(12 / 7, rel=1e-2)


def test_cumulative_panel_absent_without_liquidations(tmp_path):
    chart = chart_svg(render(tmp_path, events=spread_events("add_margin", 30)))

    assert cumulative_paths(chart) == {}
    assert count_labels(chart) == {}
    assert "Liquidated positions so far" not in "".join(chart.itertext())


def test_cumulative_panel_zero_line_labelled(tmp_path):
    chart = chart_svg(render(tmp_path, events=spread_events("liquidation_without_guard", 3)))

    assert cumulative_paths(chart)["liquidation_with_guard"].get("data-final") == "0"
    assert count_labels(chart)["liquidation_with_guard"] == "with guard: 0"


RUN_SUMMARY = {
    "episode": {"name": "2021-05-19"},
    "liquidated_with_guard": 339,
    "liquidated_without_guard": 662,
    "preventable_liquidations": 323,
    "prevented": 323,
    "sats_added": 362158919,
    "duplicate_actions": 0,
    "tick_to_action_ms": {"p50": 66.51, "p99": 975.66, "max": 1195.37, "samples": 1654},
}


def test_stat_cards_from_summary(tmp_path):
    page = render(tmp_path, summary=RUN_SUMMARY)
    cards = stat_cards(page)

    assert cards == {
        "liquidated_without_guard": "662",
        "liquidated_with_guard": "339",
        "preventable_liquidations": "323",
        "prevented": "323",
        "sats_added": "362,158,919 sats",
        "duplicate_actions": "0",
        "tick_to_action_ms.p50": "66.51 ms",
        "tick_to_action_ms.p99": "975.66 ms",
    }
    assert page.index('<dl class="stats">') < page.index('<svg class="chart"')
    assert "<tr><th>tick_to_action_ms.max</th><td>1195.37</td></tr>" in page


def test_stat_cards_absent_without_keys(tmp_path):
    page = render(tmp_path, summary={"episode": "test", "tick_to_action_ms": {"max": 3}})

    assert stat_cards(page) == {}
    assert 'class="stats"' not in page


def test_stat_cards_only_present_keys(tmp_path):
    summary = {"prevented": None, "tick_to_action_ms": {"p99": 12.5}}

    cards = stat_cards(render(tmp_path, summary=summary))

    assert cards == {"prevented": "-", "tick_to_action_ms.p99": "12.5 ms"}


def test_stat_card_value_escaped(tmp_path):
    page = render(tmp_path, summary={"prevented": "<script>x</script>"})

    assert "<script>" not in page
    assert stat_cards(page) == {"prevented": "<script>x</script>"}
