"""Tests of the shipped price episodes, the CSV loader and the bar-to-tick replay."""

from __future__ import annotations

import gzip
import importlib.resources
import pathlib
import re
from datetime import datetime
from decimal import Decimal
from itertools import pairwise

import pytest

from axisor.errors import InvalidConfigError, PriceDataError
from axisor.market import EPISODES, Bar, Replay, bar_ticks, episode_path, get_episode, load_bars

HEADER = "timestamp,open,high,low,close,volume"
GOOD_ROW = "2021-05-17T00:00:00Z,40000,40100,39900,40050,1.5"
MINUTE_MS = 60_000

# name: (rows, min low, max high, first candle, last candle), as in episodes/SOURCES.md.
EPISODE_FIGURES = {
    "2021-05-19": (5561, "30000", "46686", "2021-05-17T00:00:00Z", "2021-05-20T20:40:00Z"),
    "2020-03-12": (720, "3782.13", "9188", "2020-03-05T00:00:00Z", "2020-03-19T23:30:00Z"),
    "2022-11-08": (1728, "15588", "21365.27", "2022-11-06T00:00:00Z", "2022-11-11T23:55:00Z"),
    "2024-08-05": (5760, "49000", "62198.22", "2024-08-03T00:00:00Z", "2024-08-06T23:59:00Z"),
    "2020-06-08-calm": (4320, "9570", "9992.72", "2020-06-08T00:00:00Z", "2020-06-10T23:59:00Z"),
    "2021-12-04": (4320, "42000.3", "57600", "2021-12-03T00:00:00Z", "2021-12-05T23:59:00Z"),
    "2021-09-07": (1440, "42843.05", "52920", "2021-09-06T00:00:00Z", "2021-09-08T23:57:00Z"),
    "2022-05-09": (2016, "26700", "36146.3", "2022-05-07T00:00:00Z", "2022-05-13T23:55:00Z"),
}


def write_csv(tmp_path: pathlib.Path, *rows: str, header: str = HEADER) -> pathlib.Path:
    path = tmp_path / "prices.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def iso_ms(text: str) -> int:
    """Convert a whole-second ISO-8601 UTC time to epoch milliseconds."""
    return int(datetime.fromisoformat(text).timestamp()) * 1000


def make_bar(open_: str, high: str, low: str, close: str, time_ms: int = 0) -> Bar:
    return Bar(
        time_ms=time_ms,
        open=Decimal(open_),
        high=Decimal(high),
        low=Decimal(low),
        close=Decimal(close),
        volume=Decimal(0),
    )


# Shipped episodes


def test_registry_lists_eight_episodes():
    assert set(EPISODES) == set(EPISODE_FIGURES)


@pytest.mark.parametrize("name", sorted(EPISODE_FIGURES))
def test_episode_matches_sources_figures(name):
    rows, min_low, max_high, first, last = EPISODE_FIGURES[name]
    replay = Replay.from_episode(name)

    assert len(replay.bars) == rows
    assert replay.min_low == Decimal(min_low)
    assert replay.max_high == Decimal(max_high)
    assert replay.start_ms == iso_ms(first)
    assert replay.bars[-1].time_ms == iso_ms(last)


@pytest.mark.parametrize("name", sorted(EPISODE_FIGURES))
def test_episode_has_no_missing_candles(name):
    episode = get_episode(name)
    bars = load_bars(episode_path(episode))
    steps_ms = {later.time_ms - earlier.time_ms for earlier, later in pairwise(bars)}

    assert steps_ms == {episode.resolution_s * 1000}


@pytest.mark.parametrize("name", sorted(EPISODE_FIGURES))
def test_episode_resolution_is_inferred(name):
    episode = get_episode(name)
    replay = Replay.from_csv(episode_path(episode))

    assert replay.resolution_ms == episode.resolution_s * 1000


def test_sources_table_matches_files():
    """Each row of the summary table in episodes/SOURCES.md agrees with its CSV file."""
    sources = importlib.resources.files("axisor.market") / "episodes" / "SOURCES.md"
    table_rows = re.findall(r"^\| `(btcusd-[^`]+\.csv)` \|(.*)\|$", sources.read_text(), re.M)
    by_file = {episode.filename: episode for episode in EPISODES.values()}

    assert {filename for filename, _ in table_rows} == set(by_file)
    for filename, cells in table_rows:
        _, _, rows, first, last, min_low, max_high = (cell.strip() for cell in cells.split("|"))
        replay = Replay.from_episode(by_file[filename].name)
        assert len(replay.bars) == int(rows), filename
        assert replay.start_ms == iso_ms(first), filename
        assert replay.bars[-1].time_ms == iso_ms(last), filename
        assert replay.min_low == Decimal(min_low), filename
        assert replay.max_high == Decimal(max_high), filename


def test_episode_path_is_inside_package():
    path = episode_path(get_episode("2021-05-19"))

    assert path.is_file()
    assert path.parent.name == "episodes"
    assert path.parent.parent.name == "market"


def test_unknown_episode_lists_choices():
    with pytest.raises(InvalidConfigError) as caught:
        Replay.from_episode("2019-01-01")

    assert caught.value.field == "episode"
    assert "unknown episode '2019-01-01'" in str(caught.value)
    assert "choose one of: 2021-05-19, 2020-03-12" in str(caught.value)
    assert "2022-05-09" in str(caught.value)


# Ticks


def test_up_bar_ticks_low_before_high():
    ticks = bar_ticks(make_bar("100", "110", "90", "105", time_ms=1_000_000), 7, MINUTE_MS)

    assert [tick.kind for tick in ticks] == ["open", "low", "high", "close"]
    assert [tick.price for tick in ticks] == [Decimal(p) for p in ("100", "90", "110", "105")]
    assert [tick.time_ms for tick in ticks] == [1_000_000, 1_015_000, 1_030_000, 1_045_000]
    assert {tick.bar_index for tick in ticks} == {7}


def test_down_bar_ticks_high_before_low():
    ticks = bar_ticks(make_bar("100", "110", "90", "95"), 0, 4 * MINUTE_MS)

    assert [tick.kind for tick in ticks] == ["open", "high", "low", "close"]
    assert [tick.price for tick in ticks] == [Decimal(p) for p in ("100", "110", "90", "95")]
    assert [tick.time_ms for tick in ticks] == [0, MINUTE_MS, 2 * MINUTE_MS, 3 * MINUTE_MS]


def test_unchanged_bar_counts_as_up_bar():
    ticks = bar_ticks(make_bar("100", "110", "90", "100"), 0, MINUTE_MS)

    assert [tick.kind for tick in ticks] == ["open", "low", "high", "close"]


def test_repeated_price_tick_is_dropped():
    """A tick with the same price as the tick before it in the bar adds nothing and is dropped."""
    ticks = bar_ticks(make_bar("100", "110", "100", "110"), 0, MINUTE_MS)

    assert [tick.kind for tick in ticks] == ["open", "high"]
    assert [tick.time_ms for tick in ticks] == [0, MINUTE_MS // 2]


def test_flat_bar_yields_open_only():
    ticks = bar_ticks(make_bar("100", "100", "100", "100"), 3, MINUTE_MS)

    assert [(tick.kind, tick.price) for tick in ticks] == [("open", Decimal(100))]


def test_replay_ticks_in_time_order(tmp_path):
    path = write_csv(
        tmp_path,
        "2021-05-17T00:00:00Z,100,110,90,105,1",
        "2021-05-17T00:01:00Z,105,106,95,96,1",
    )
    replay = Replay.from_csv(path)
    ticks = list(replay.ticks())

    assert len(replay) == len(ticks) == 8
    assert [tick.bar_index for tick in ticks] == [0] * 4 + [1] * 4
    assert [tick.time_ms for tick in ticks] == sorted(tick.time_ms for tick in ticks)
    assert ticks[4].kind == "open"
    assert ticks[4].price == Decimal(105)


# Replay


def test_replay_summary_figures(tmp_path):
    path = write_csv(
        tmp_path,
        "2021-05-17T00:00:00Z,100,110,90,105,1",
        "2021-05-17T00:05:00Z,105,120,101,119,1",
        "2021-05-17T00:06:00Z,119,119,80,85,1",
    )
    replay = Replay.from_csv(path)

    assert replay.resolution_ms == MINUTE_MS
    assert replay.first_price == Decimal(100)
    assert replay.min_low == Decimal(80)
    assert replay.max_high == Decimal(120)
    assert replay.start_ms == iso_ms("2021-05-17T00:00:00Z")
    assert replay.end_ms == iso_ms("2021-05-17T00:07:00Z")


def test_window_selects_bars_by_open_time():
    replay = Replay.from_episode("2021-05-19")
    start_ms = iso_ms("2021-05-19T13:00:00Z")
    window = replay.window(start_ms=start_ms, end_ms=start_ms + 30 * MINUTE_MS)

    assert len(window.bars) == 30
    assert window.start_ms == start_ms
    assert window.end_ms == start_ms + 30 * MINUTE_MS
    assert window.min_low == Decimal(30000)
    assert window.resolution_ms == MINUTE_MS
    assert next(window.ticks()).bar_index == 0


def test_window_open_bounds_keep_everything():
    replay = Replay.from_episode("2021-09-07")

    assert replay.window().bars == replay.bars
    assert replay.window(start_ms=replay.start_ms, end_ms=replay.end_ms).bars == replay.bars


def test_window_of_one_bar_keeps_resolution():
    replay = Replay.from_episode("2020-03-12")
    window = replay.window(start_ms=replay.bars[-1].time_ms)

    assert len(window.bars) == 1
    assert window.resolution_ms == 30 * MINUTE_MS


def test_empty_window_names_range():
    replay = Replay.from_episode("2021-09-07")

    with pytest.raises(InvalidConfigError) as caught:
        replay.window(start_ms=0, end_ms=1000)

    assert caught.value.field == "window"
    assert "1970-01-01T00:00:00Z" in str(caught.value)
    assert "2021-09-06T00:00:00Z" in str(caught.value)


def test_single_bar_needs_resolution(tmp_path):
    path = write_csv(tmp_path, GOOD_ROW)

    with pytest.raises(InvalidConfigError) as caught:
        Replay.from_csv(path)
    assert caught.value.field == "resolution_ms"
    assert Replay.from_csv(path, resolution_ms=MINUTE_MS).end_ms == iso_ms("2021-05-17T00:01:00Z")


def test_resolution_ignores_gaps(tmp_path):
    path = write_csv(
        tmp_path,
        "2021-05-17T00:00:00Z,1,1,1,1,0",
        "2021-05-17T01:00:00Z,1,1,1,1,0",
        "2021-05-17T01:05:00Z,1,1,1,1,0",
    )

    assert Replay.from_csv(path).resolution_ms == 5 * MINUTE_MS


def test_unsorted_bars_rejected():
    bars = [make_bar("1", "1", "1", "1", time_ms=MINUTE_MS), make_bar("1", "1", "1", "1")]

    with pytest.raises(InvalidConfigError, match="bar 1 opens at 1970-01-01T00:00:00Z"):
        Replay(bars)


# Loading


@pytest.mark.parametrize(
    "stamp",
    ["2021-05-17T00:00:00Z", "2021-05-17T00:00:00+00:00", "1621209600", "1621209600000"],
)
def test_timestamp_formats_agree(tmp_path, stamp):
    bars = load_bars(write_csv(tmp_path, f"{stamp},1,1,1,1,0"))

    assert bars[0].time_ms == 1_621_209_600_000


def test_loaded_bar_keeps_exact_decimals(tmp_path):
    bars = load_bars(
        write_csv(tmp_path, "2021-05-17T00:00:00Z,46426.83,46514.75,46358.14,46506.0,121.330795")
    )

    assert bars[0] == Bar(
        time_ms=1_621_209_600_000,
        open=Decimal("46426.83"),
        high=Decimal("46514.75"),
        low=Decimal("46358.14"),
        close=Decimal("46506.0"),
        volume=Decimal("121.330795"),
    )


def test_gzip_csv_loads_like_plain(tmp_path):
    plain = episode_path(get_episode("2022-11-08"))
    packed = tmp_path / "btcusd-5m-2022-11-08.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))

    assert load_bars(packed) == load_bars(plain)
    assert len(Replay.from_csv(packed)) == len(Replay.from_episode("2022-11-08"))


def test_crlf_and_trailing_blank_lines_accepted(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_bytes(f"{HEADER}\r\n{GOOD_ROW}\r\n\r\n".encode())

    assert len(load_bars(path)) == 1


MALFORMED_ROWS = [
    # (rows after the header, expected line, field named, text that must be in the message)
    (["2021-05-17T00:00:00Z,40000,abc,39900,40050,1"], 2, "high", "high 'abc' is not a number"),
    (
        ["2021-05-17T00:00:00Z,40000,42000,41000,41500,1"],
        2,
        "low",
        "low 41000 is above open 40000: each row needs low <= min(open, close)",
    ),
    (["2021-05-17T00:00:00Z,40000,40100,39900,39800,1"], 2, "low", "low 39900 is above close"),
    (["2021-05-17T00:00:00Z,40000,40500,39900,40600,1"], 2, "high", "high 40500 is below close"),
    (["2021-05-17T00:00:00Z,40000,39990,39900,39950,1"], 2, "high", "high 39990 is below open"),
    (
        ["2021-05-17T00:02:00Z,1,1,1,1,0", "2021-05-17T00:01:00Z,1,1,1,1,0"],
        3,
        "timestamp",
        "timestamp 2021-05-17T00:01:00Z is not after the previous row's 2021-05-17T00:02:00Z: "
        "rows must be in increasing time order",
    ),
    (
        [GOOD_ROW, GOOD_ROW.replace("40050", "40060")],
        3,
        "timestamp",
        "is not after the previous row's",
    ),
    ([GOOD_ROW, "", "2021-05-17T00:01:00Z,1,x,1,1,0"], 4, "high", "high 'x' is not a number"),
    (["2021-05-17T00:00:00Z,0,1,0,1,0"], 2, "open", "open 0 is not a positive price"),
    (["2021-05-17T00:00:00Z,1,1,-5,1,0"], 2, "low", "low -5 is not a positive price"),
    (["2021-05-17T00:00:00Z,1,1,1,NaN,0"], 2, "close", "close 'NaN' is not a finite number"),
    (["2021-05-17T00:00:00Z,1,Infinity,1,1,0"], 2, "high", "high 'Infinity' is not a finite"),
    (["2021-05-17T00:00:00Z,1_000,1,1,1,0"], 2, "open", "open '1_000' is not a number"),
    (["2021-05-17T00:00:00Z,1,1,1,1,"], 2, "volume", "volume is empty"),
    (["2021-05-17T00:00:00Z,1,1,1,1,-2"], 2, "volume", "volume -2 is negative"),
    (["2021-13-01T00:00:00Z,1,1,1,1,0"], 2, "timestamp", "timestamp '2021-13-01T00:00:00Z'"),
    (["yesterday,1,1,1,1,0"], 2, "timestamp", "timestamp 'yesterday' is not a valid time"),
    (["2021-05-17T00:00:00,1,1,1,1,0"], 2, "timestamp", "is not in UTC"),
    (["2021-05-17T02:00:00+02:00,1,1,1,1,0"], 2, "timestamp", "is not in UTC"),
    (["2021-05-17T00:00:00Z,1,1,1,1"], 2, "fields", "row has 5 fields but expected 6"),
    (["2021-05-17T00:00:00Z,1,1,1,1,0,7"], 2, "fields", "row has 7 fields but expected 6"),
]


@pytest.mark.parametrize(("rows", "line", "field", "message"), MALFORMED_ROWS)
def test_malformed_row_names_line_and_field(tmp_path, rows, line, field, message):
    path = write_csv(tmp_path, *rows)

    with pytest.raises(PriceDataError) as caught:
        load_bars(path)

    assert caught.value.line == line
    assert field in caught.value.message
    assert message in caught.value.message
    assert caught.value.path == str(path)
    assert f", line {line}: " in str(caught.value)


@pytest.mark.parametrize(
    "header",
    [
        "timestamp,open,high,low,close",
        "timestamp,open,high,low,close,volume,trades",
        "time,open,high,low,close,volume",
        "timestamp,high,open,low,close,volume",
    ],
)
def test_wrong_header_names_expected_columns(tmp_path, header):
    with pytest.raises(PriceDataError) as caught:
        load_bars(write_csv(tmp_path, GOOD_ROW, header=header))

    assert caught.value.line == 1
    assert "expected the columns timestamp,open,high,low,close,volume" in caught.value.message
    assert header in caught.value.message


def test_empty_file_rejected(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")

    with pytest.raises(PriceDataError) as caught:
        load_bars(path)

    assert caught.value.line == 1
    assert "file is empty" in caught.value.message


def test_header_only_file_rejected(tmp_path):
    with pytest.raises(PriceDataError) as caught:
        load_bars(write_csv(tmp_path))

    assert caught.value.line == 2
    assert "no candle rows" in caught.value.message


def test_corrupt_gzip_rejected(tmp_path):
    path = tmp_path / "prices.csv.gz"
    path.write_bytes(b"not gzip at all")

    with pytest.raises(PriceDataError, match="cannot be read as CSV"):
        load_bars(path)
