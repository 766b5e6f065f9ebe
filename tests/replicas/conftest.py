"""Two replicas: the stack of tests/stack.py started with
INTRADAY_REPLICAS=2 (`make test` sets it for this directory's own
session): two forecasters and two gateways, as two pods of each."""

from tests.stack import gateway, pg, rds, stack  # noqa: F401
