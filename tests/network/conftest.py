"""The network faults' session (INTRADAY_TOXIPROXY=on): one stack with
Toxiproxy on its links, from tests/stack.py."""

from tests.stack import gateway, pg, pytest_collection_modifyitems, rds, stack  # noqa: F401
