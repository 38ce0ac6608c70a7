"""``axisor engine run``: the process that turns prices into Margin Guard jobs."""

from __future__ import annotations

import asyncio
import contextlib
import os

import click

from axisor.config import Settings

STREAM_URL_ENV = "AXISOR_LNM_STREAM_URL"


@click.group("engine")
def engine_group() -> None:
    """Run the engine: the trigger index that turns prices into Margin Guard jobs."""


@engine_group.command("run")
@click.option("--episode", help="Drive the engine from a shipped episode instead of the stream.")
@click.option(
    "--speed",
    type=float,
    default=None,
    help="With --episode: replay speed-up (60 plays a minute per second); "
    "as fast as possible when left out.",
)
@click.option(
    "--network",
    default="mainnet",
    show_default=True,
    help="LN Markets network of the price stream (mainnet or signet).",
)
@click.pass_obj
def engine_run(settings: Settings, episode: str | None, speed: float | None, network: str) -> None:
    """Run the engine until stopped (Ctrl-C or SIGTERM)."""
    from axisor.db.migrate import upgrade
    from axisor.db.session import Database
    from axisor.engine.live import LiveEngine
    from axisor.exchange.registry import account_resolver
    from axisor.redis_server import ensure_redis

    database = Database(settings.effective_database_url)
    upgrade(database)
    redis_url = ensure_redis(settings)
    feed = _replay_feed(episode, speed) if episode else _stream_feed(network)
    private = None if episode else _private_streams(settings, database, network)
    exchanges = account_resolver(database, data_dir=settings.data_dir, redis_url=redis_url)
    with contextlib.suppress(KeyboardInterrupt):
        live = LiveEngine(database, redis_url, feed, private, exchanges)
        ticks = asyncio.run(live.run())
        click.echo(f"engine stopped after {ticks} price updates", err=True)


def _replay_feed(episode: str, speed: float | None):
    from axisor.market.feed import ReplayFeed
    from axisor.market.replay import Replay

    return ReplayFeed(Replay.from_episode(episode), speed=speed)


def _stream_url(network: str) -> str:
    from axisor.market.stream import MAINNET_STREAM_URL, SIGNET_STREAM_URL

    default = SIGNET_STREAM_URL if network == "signet" else MAINNET_STREAM_URL
    return os.environ.get(STREAM_URL_ENV) or default


def _private_streams(settings: Settings, database, network: str):
    """Return one private trade stream per active linked LN Markets account."""
    from sqlalchemy import select

    from axisor.db.crypto import CredentialCipher
    from axisor.db.models import ExchangeAccount
    from axisor.engine.live import PrivateStreams
    from axisor.market.stream import StreamAccount

    cipher = CredentialCipher.from_env(data_dir=settings.data_dir)
    with database.session() as session:
        rows = session.execute(
            select(ExchangeAccount.id, ExchangeAccount.credentials_encrypted).where(
                ExchangeAccount.active.is_(True),
                ExchangeAccount.exchange == "lnmarkets",
                ExchangeAccount.credentials_encrypted.is_not(None),
            )
        ).all()
    accounts = [StreamAccount(str(row.id), cipher.decrypt(row[1])) for row in rows]
    return PrivateStreams(_stream_url(network), accounts)


def _stream_feed(network: str):
    from axisor.exchange.lnmarkets.client import LNMarketsClient
    from axisor.exchange.registry import lnm_base_url_from_env
    from axisor.market.feed import StreamFeed

    public = LNMarketsClient(lnm_base_url_from_env(), None)
    return StreamFeed(_stream_url(network), poll_ticker=public.get_ticker)
