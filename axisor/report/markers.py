"""Event kinds of the report and how each is drawn."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from axisor.errors import InvalidConfigError

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
