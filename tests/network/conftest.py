"""Network faults: the stack of tests/stack.py started with
INTRADAY_TOXIPROXY=on (`make test` sets it for this directory's own
session), Toxiproxy on its links (tests/network/toxics.py)."""

from tests.stack import gateway, pg, rds, stack  # noqa: F401
