"""Registry of the historical BTC price episodes shipped inside the package.

The CSV files live in the ``episodes/`` data folder beside this module. Their provenance (source
repository, commit, licence and the changes made) is in ``episodes/SOURCES.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
import pathlib
from dataclasses import dataclass

from axisor.errors import InvalidConfigError

_PACKAGE = "axisor.market"
_DATA_FOLDER = "episodes"

# Paths handed out by episode_path, and the as_file contexts that keep them valid until exit.
_paths: dict[str, pathlib.Path] = {}
_exit_stack = contextlib.ExitStack()
atexit.register(_exit_stack.close)


@dataclass(frozen=True)
class Episode:
    """A shipped candle file: Binance spot BTC/USDT standing in for BTC/USD."""

    name: str
    filename: str
    resolution_s: int
    title: str
    description: str


_ALL_EPISODES = (
    Episode(
        name="2021-05-19",
        filename="btcusd-1m-2021-05-19.csv",
        resolution_s=60,
        title="May 2021 crash",
        description="From 46,686 on 05-17 down to 30,000 at 13:10 UTC on 2021-05-19.",
    ),
    Episode(
        name="2020-03-12",
        filename="btcusd-30m-2020-03-12.csv",
        resolution_s=1800,
        title="March 2020 COVID crash",
        description="Both legs of the crash, down to 3,782.13 at 02:00 UTC on 2020-03-13.",
    ),
    Episode(
        name="2022-11-08",
        filename="btcusd-5m-2022-11-08.csv",
        resolution_s=300,
        title="FTX collapse",
        description="From about 20.6k on 11-08 down to 15,588 at 23:05 UTC on 2022-11-09.",
    ),
    Episode(
        name="2024-08-05",
        filename="btcusd-1m-2024-08-05.csv",
        resolution_s=60,
        title="August 2024 carry-trade unwind",
        description="From about 61k on 08-04 down to 49,000 at 06:24 UTC on 2024-08-05.",
    ),
    Episode(
        name="2020-06-08-calm",
        filename="btcusd-1m-2020-06-08-calm.csv",
        resolution_s=60,
        title="Quiet market, June 2020",
        description="Three quiet days near 9.7k with daily ranges of 1.7 % to 3.1 %.",
    ),
    Episode(
        name="2021-12-04",
        filename="btcusd-1m-2021-12-04.csv",
        resolution_s=60,
        title="December 2021 weekend flash crash",
        description="From about 52.3k at 04:30 UTC to 42,000.30 at 05:27 UTC on 2021-12-04.",
    ),
    Episode(
        name="2021-09-07",
        filename="btcusd-3m-2021-09-07.csv",
        resolution_s=180,
        title="El Salvador legal-tender day",
        description="From about 51k at 13:30 UTC to 42,843.05 at 15:09 UTC on 2021-09-07.",
    ),
    Episode(
        name="2022-05-09",
        filename="btcusd-5m-2022-05-09.csv",
        resolution_s=300,
        title="Terra/LUNA collapse",
        description="From about 36.1k on 05-07 down to 26,700 at 05:15 UTC on 2022-05-12.",
    ),
)

EPISODES: dict[str, Episode] = {episode.name: episode for episode in _ALL_EPISODES}


def get_episode(name: str) -> Episode:
    """Look up a shipped episode by name, raising InvalidConfigError for an unknown name."""
    try:
        return EPISODES[name]
    except KeyError:
        choices = ", ".join(EPISODES)
        raise InvalidConfigError(
            "episode", f"unknown episode {name!r}; choose one of: {choices}"
        ) from None


def episode_path(episode: Episode) -> pathlib.Path:
    """Return a filesystem path to the episode's CSV, valid until the interpreter exits.

    From a wheel or a checkout this is the file inside the package. When the package is imported
    from a zip archive, ``as_file`` extracts a temporary copy, which is removed at exit.
    """
    cached = _paths.get(episode.filename)
    if cached is not None:
        return cached

    resource = importlib.resources.files(_PACKAGE) / _DATA_FOLDER / episode.filename
    path = pathlib.Path(_exit_stack.enter_context(importlib.resources.as_file(resource)))
    _paths[episode.filename] = path
    return path
