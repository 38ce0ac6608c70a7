"""Historical BTC price data: the shipped episodes and their replay as ticks."""

from axisor.market.episodes import EPISODES, Episode, episode_path, get_episode
from axisor.market.replay import COLUMNS, Bar, Replay, Tick, bar_ticks, load_bars

__all__ = [
    "COLUMNS",
    "EPISODES",
    "Bar",
    "Episode",
    "Replay",
    "Tick",
    "bar_ticks",
    "episode_path",
    "get_episode",
    "load_bars",
]
