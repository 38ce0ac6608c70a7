"""A mock LN Markets v3 server on loopback, backed by a paper venue, with injectable faults."""

from axisor.mockexchange.faults import MockFaults
from axisor.mockexchange.server import MockExchange, RequestRecord, run_mock_exchange

__all__ = ["MockExchange", "MockFaults", "RequestRecord", "run_mock_exchange"]
