"""Write a self-contained HTML report of a price replay and the guard's actions on it.

The page needs no network: the chart is inline SVG, the styles are inline CSS and a
Content-Security-Policy blocks every external load. Cards at the top show the headline summary
figures. The chart draws the price line with one marker per event, and under it, on the same
time axis, the cumulative liquidations with and without the guard. A legend with counts per
event kind, the summary as a table and the first 500 events follow.

A kind with more than MAX_DETAILED_MARKERS events is drawn with small translucent markers under
the price line and without per-event guide lines, so that a run with thousands of events still
shows the price.

Modules, one per part of the page:

- ``markers``: event kinds and their drawing styles.
- ``axes``: chart geometry, scales and axes.
- ``panels``: the price panel and the cumulative liquidations panel.
- ``chart``: price series reduction, the assembled SVG and its legend.
- ``cards``: headline figures above the chart.
- ``page``: the summary and event tables and the HTML document.
- ``formatting``: text of values, times and prices.
"""

from __future__ import annotations

from axisor.report.chart import MAX_CHART_POINTS, downsample_min_max
from axisor.report.formatting import flatten_summary, format_utc
from axisor.report.markers import (
    EVENT_KINDS,
    MARKER_STYLES,
    MAX_DETAILED_MARKERS,
    MarkerStyle,
    ReportEvent,
)
from axisor.report.page import MAX_TABLE_EVENTS, render_report, write_report

__all__ = [
    "EVENT_KINDS",
    "MARKER_STYLES",
    "MAX_CHART_POINTS",
    "MAX_DETAILED_MARKERS",
    "MAX_TABLE_EVENTS",
    "MarkerStyle",
    "ReportEvent",
    "downsample_min_max",
    "flatten_summary",
    "format_utc",
    "render_report",
    "write_report",
]
