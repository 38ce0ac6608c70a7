"""Replay historical candles as a stream of price ticks.

A candle only records four prices, not the path between them, so each bar becomes up to four
ticks in a fixed order: open, then the extreme against the bar's direction, then the other
extreme, then close. An up bar (close >= open) goes open, low, high, close; a down bar goes
open, high, low, close. This order visits both wicks and, for a long position, the low of an up
bar comes before its recovery. All prices are Decimal USD per BTC.
"""

from __future__ import annotations

import csv
import gzip
import io
import pathlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import pairwise

from axisor.errors import InvalidConfigError, PriceDataError
from axisor.market.episodes import episode_path, get_episode

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# An integer timestamp below this is epoch seconds, and milliseconds from here on. As seconds
# it is the year 5138; as milliseconds it is 1973-03-03.
_EPOCH_MS_THRESHOLD = 10**11
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_PLAIN_INTEGER = re.compile(r"\d+")
# Offsets of the four ticks inside a bar, in percent of the bar's resolution.
_TICK_OFFSETS_PERCENT = (0, 25, 50, 75)


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV candle, with prices in USD per BTC and volume in BTC."""

    time_ms: int  # candle open time, epoch milliseconds UTC
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(frozen=True, slots=True)
class Tick:
    """One price point of a replay, derived from bar ``bar_index``."""

    time_ms: int  # epoch milliseconds UTC
    price: Decimal  # USD per BTC
    bar_index: int
    kind: str  # which bar price this is: "open", "high", "low" or "close"


def format_time_ms(time_ms: int) -> str:
    """Format epoch milliseconds as ISO-8601 UTC with a ``Z`` suffix."""
    moment = _EPOCH + timedelta(milliseconds=time_ms)
    text = moment.isoformat(timespec="milliseconds" if time_ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")


# Loading


class _RowReader:
    """Parser for the fields of one CSV row, whose errors name the file and line."""

    def __init__(self, path: str, line: int) -> None:
        self.path = path
        self.line = line

    def error(self, message: str) -> PriceDataError:
        return PriceDataError(self.path, self.line, message)

    def timestamp_ms(self, text: str) -> int:
        if _PLAIN_INTEGER.fullmatch(text):
            value = int(text)
            return value if value >= _EPOCH_MS_THRESHOLD else value * 1000

        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise self.error(
                f"timestamp {text!r} is not a valid time: expected ISO-8601 UTC such as "
                "2021-05-19T13:10:00Z, or integer epoch seconds or milliseconds"
            ) from None
        if moment.utcoffset() != timedelta(0):
            raise self.error(f"timestamp {text!r} is not in UTC: end it with 'Z' or '+00:00'")
        return (moment - _EPOCH) // _ONE_MS

    def number(self, field: str, text: str) -> Decimal:
        if not _PLAIN_NUMBER.fullmatch(text):
            raise self.error(self._not_a_number_message(field, text))
        return Decimal(text)

    def price(self, field: str, text: str) -> Decimal:
        value = self.number(field, text)
        if value <= 0:
            raise self.error(f"{field} {text} is not a positive price: prices must be above 0")
        return value

    @staticmethod
    def _not_a_number_message(field: str, text: str) -> str:
        if not text:
            return f"{field} is empty: expected a decimal number"
        try:
            finite = Decimal(text).is_finite()
        except InvalidOperation:
            finite = True
        if not finite:
            return f"{field} {text!r} is not a finite number: NaN and Infinity are not prices"
        return f"{field} {text!r} is not a number: expected a decimal such as 42000.5"


def _check_ohlc(reader: _RowReader, bar: Bar) -> None:
    """Raise unless low <= min(open, close) and high >= max(open, close)."""
    rule = "each row needs low <= min(open, close) and high >= max(open, close)"
    for name, value in (("open", bar.open), ("close", bar.close)):
        if bar.low > value:
            raise reader.error(f"low {bar.low} is above {name} {value}: {rule}")
        if bar.high < value:
            raise reader.error(f"high {bar.high} is below {name} {value}: {rule}")


def _parse_row(reader: _RowReader, fields: list[str]) -> Bar:
    if len(fields) != len(COLUMNS):
        raise reader.error(
            f"row has {len(fields)} fields but expected {len(COLUMNS)}: {','.join(COLUMNS)}"
        )

    stamp, open_, high, low, close, volume = (field.strip() for field in fields)
    bar = Bar(
        time_ms=reader.timestamp_ms(stamp),
        open=reader.price("open", open_),
        high=reader.price("high", high),
        low=reader.price("low", low),
        close=reader.price("close", close),
        volume=reader.number("volume", volume),
    )
    if bar.volume < 0:
        raise reader.error(f"volume {volume} is negative: volume must be 0 or more")
    _check_ohlc(reader, bar)
    return bar


def _check_header(path: str, header: list[str] | None) -> None:
    expected = ",".join(COLUMNS)
    if header is None:
        raise PriceDataError(path, 1, f"file is empty: expected the header {expected}")

    names = [name.strip().lstrip("\ufeff").lower() for name in header]
    if tuple(names) != COLUMNS:
        raise PriceDataError(
            path, 1, f"header is {','.join(header)!r} but expected the columns {expected}"
        )


def _open_text(path: pathlib.Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _read_bars(path: str, handle: io.TextIOBase) -> list[Bar]:
    rows = csv.reader(handle)
    _check_header(path, next(rows, None))

    bars: list[Bar] = []
    previous_stamp = ""
    for fields in rows:
        if not fields:
            continue  # a blank line, such as a trailing one

        reader = _RowReader(path, rows.line_num)
        bar = _parse_row(reader, fields)
        if bars and bar.time_ms <= bars[-1].time_ms:
            raise reader.error(
                f"timestamp {fields[0].strip()} is not after the previous row's "
                f"{previous_stamp}: rows must be in increasing time order"
            )
        bars.append(bar)
        previous_stamp = fields[0].strip()

    if not bars:
        raise PriceDataError(path, rows.line_num + 1, "file has a header but no candle rows")
    return bars


def load_bars(path: str | pathlib.Path) -> list[Bar]:
    """Load OHLCV candles from a CSV file, or a gzip-compressed one when the name ends in .gz.

    The header must be exactly ``timestamp,open,high,low,close,volume``. A timestamp is the
    candle's open time, in ISO-8601 UTC or as integer epoch seconds or milliseconds. Raises
    PriceDataError naming the line of the first malformed row.
    """
    path = pathlib.Path(path)
    try:
        with _open_text(path) as handle:
            return _read_bars(str(path), handle)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, csv.Error) as exc:
        raise PriceDataError(str(path), 1, f"file cannot be read as CSV: {exc}") from exc


# Ticks


def bar_ticks(bar: Bar, index: int, resolution_ms: int) -> list[Tick]:
    """Split a bar into ticks: open, then low and high in the bar's order, then close.

    The ticks are spaced at 0, 25, 50 and 75 % of ``resolution_ms`` after the bar's open time.
    A tick whose price equals the tick before it in the same bar is dropped, so a flat bar
    yields one tick. The open tick is always kept, even when it repeats the previous close.
    """
    if bar.close >= bar.open:
        path = (("open", bar.open), ("low", bar.low), ("high", bar.high), ("close", bar.close))
    else:
        path = (("open", bar.open), ("high", bar.high), ("low", bar.low), ("close", bar.close))

    ticks: list[Tick] = []
    for (kind, price), offset_percent in zip(path, _TICK_OFFSETS_PERCENT, strict=True):
        if ticks and price == ticks[-1].price:
            continue
        time_ms = bar.time_ms + resolution_ms * offset_percent // 100
        ticks.append(Tick(time_ms=time_ms, price=price, bar_index=index, kind=kind))
    return ticks


def infer_resolution_ms(bars: Sequence[Bar]) -> int | None:
    """Return the smallest positive step between consecutive bars, or None for a single bar."""
    steps = (later.time_ms - earlier.time_ms for earlier, later in pairwise(bars))
    return min((step for step in steps if step > 0), default=None)


class Replay:
    """A sequence of bars replayed as ticks, with summary figures for the whole range."""

    def __init__(
        self, bars: Sequence[Bar], *, resolution_ms: int | None = None, name: str = ""
    ) -> None:
        if not bars:
            raise InvalidConfigError("bars", "a replay needs at least one bar")
        _check_increasing(bars)

        inferred_ms = infer_resolution_ms(bars)
        resolution_ms = resolution_ms or inferred_ms
        if resolution_ms is None or resolution_ms <= 0:
            raise InvalidConfigError(
                "resolution_ms",
                "cannot infer the bar resolution from a single bar: pass resolution_ms",
            )
        self.bars: tuple[Bar, ...] = tuple(bars)
        self.resolution_ms = resolution_ms
        self.name = name
        self._tick_count: int | None = None

    @classmethod
    def from_episode(cls, name: str) -> Replay:
        """Load a shipped episode by name (see ``axisor.market.episodes.EPISODES``)."""
        episode = get_episode(name)
        bars = load_bars(episode_path(episode))
        return cls(bars, resolution_ms=episode.resolution_s * 1000, name=episode.name)

    @classmethod
    def from_csv(cls, path: str | pathlib.Path, *, resolution_ms: int | None = None) -> Replay:
        """Load a CSV (or .csv.gz) file, inferring the resolution unless it is given."""
        return cls(load_bars(path), resolution_ms=resolution_ms, name=str(path))

    def __repr__(self) -> str:
        return (
            f"Replay(name={self.name!r}, bars={len(self.bars)}, resolution_ms="
            f"{self.resolution_ms}, start={format_time_ms(self.start_ms)})"
        )

    def __len__(self) -> int:
        """Return the number of ticks that ``ticks()`` yields."""
        if self._tick_count is None:
            self._tick_count = sum(1 for _ in self.ticks())
        return self._tick_count

    def ticks(self) -> Iterator[Tick]:
        """Yield every tick of every bar in time order."""
        for index, bar in enumerate(self.bars):
            yield from bar_ticks(bar, index, self.resolution_ms)

    @property
    def first_price(self) -> Decimal:
        """Open price of the first bar, USD per BTC."""
        return self.bars[0].open

    @property
    def min_low(self) -> Decimal:
        """Lowest low over all bars, USD per BTC."""
        return min(bar.low for bar in self.bars)

    @property
    def max_high(self) -> Decimal:
        """Highest high over all bars, USD per BTC."""
        return max(bar.high for bar in self.bars)

    @property
    def start_ms(self) -> int:
        """Open time of the first bar, epoch milliseconds."""
        return self.bars[0].time_ms

    @property
    def end_ms(self) -> int:
        """Close time of the last bar (its open time plus the resolution), epoch milliseconds."""
        return self.bars[-1].time_ms + self.resolution_ms

    def window(self, start_ms: int | None = None, end_ms: int | None = None) -> Replay:
        """Return a replay of the bars whose open time is in [start_ms, end_ms).

        A bound left as None is open. The resolution is kept, so a window of one bar works.
        """
        low_ms = self.start_ms if start_ms is None else start_ms
        high_ms = self.end_ms if end_ms is None else end_ms
        bars = [bar for bar in self.bars if low_ms <= bar.time_ms < high_ms]
        if not bars:
            covered = f"{format_time_ms(self.start_ms)} to {format_time_ms(self.end_ms)}"
            raise InvalidConfigError(
                "window",
                f"no bar opens between {format_time_ms(low_ms)} and {format_time_ms(high_ms)}. "
                f"Choose times within {self.name or 'the replay'}, which covers {covered}",
            )
        return Replay(bars, resolution_ms=self.resolution_ms, name=self.name)


def _check_increasing(bars: Sequence[Bar]) -> None:
    for index, (earlier, later) in enumerate(pairwise(bars), start=1):
        if later.time_ms <= earlier.time_ms:
            raise InvalidConfigError(
                "bars",
                f"bar {index} opens at {format_time_ms(later.time_ms)}, not after bar "
                f"{index - 1} at {format_time_ms(earlier.time_ms)}: sort the bars by time",
            )
