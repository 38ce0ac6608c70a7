"""Guard actions through the LN Markets REST client and the local mock of the LN Markets API."""

from __future__ import annotations

import pytest

from axisor.db.crypto import Credentials
from axisor.db.models import LedgerState
from axisor.errors import StateUnknownError
from axisor.exchange.lnmarkets.client import LNMarketsClient
from axisor.mockexchange.server import MockExchange, run_mock_exchange
from axisor.workers.guard_action import run_guard_action
from tests.guard_fixtures import CROSSING_PRICE, guard_world

CREDENTIALS = Credentials(key="lnm-test-key", secret="mock-secret", passphrase="mock-pass")


class ClientResolver:
    def __init__(self, client: LNMarketsClient) -> None:
        self.client = client

    async def for_account(self, account_id: int) -> LNMarketsClient:
        return self.client


@pytest.fixture
async def world_over_http(db, redis_url):
    """A guarded account whose worker talks HTTP to the mock; the client times out after 1 s."""
    async with guard_world(db, redis_url) as world:
        mock = MockExchange(world.venue)
        mock.register(
            str(world.account_id), CREDENTIALS.key, CREDENTIALS.secret, CREDENTIALS.passphrase
        )
        mock.faults.hold_s = 3.0
        async with (
            run_mock_exchange(mock) as base_url,
            LNMarketsClient(base_url, CREDENTIALS, timeout_s=1.0) as client,
        ):
            world.ctx.exchanges = ClientResolver(client)
            yield world, mock


async def test_timeout_after_apply_acts_once(world_over_http):
    """The exchange applies add-margin but the reply times out: the retry adds nothing more."""
    world, _mock = world_over_http
    trade, position_id = await world.open_position()
    world.venue.set_price(CROSSING_PRICE, 2_000)
    job = world.action_job(position_id)
    world.venue.faults.fail_after_apply_once("add_margin")

    with pytest.raises(StateUnknownError):
        await run_guard_action(world.ctx, job)
    rows = world.ledger_rows()
    assert rows[0].state == LedgerState.UNKNOWN.value
    assert len(world.mutations("add_margin", trade.id)) == 1

    result = await run_guard_action(world.ctx, job)

    assert result["outcome"] == "confirmed_by_reconciliation"
    assert len(world.mutations("add_margin", trade.id)) == 1
    assert world.ledger_rows()[0].state == LedgerState.CONFIRMED.value


async def test_action_over_http_signed(world_over_http):
    """A plain crossing adds margin once through signed requests the mock accepted."""
    world, mock = world_over_http
    trade, position_id = await world.open_position()
    world.venue.set_price(CROSSING_PRICE, 2_000)

    result = await run_guard_action(world.ctx, world.action_job(position_id))

    assert result["outcome"] == "margin_added"
    assert len(world.mutations("add_margin", trade.id)) == 1
    statuses = {record.status for record in mock.requests_for(str(world.account_id))}
    assert statuses == {200}
