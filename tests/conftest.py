"""Fixtures for the suites on the real local stack (tests/integration,
tests/faults): one stack for the whole session, from tests/stack.py."""

from tests.stack import gateway, pg, pytest_collection_modifyitems, rds, stack  # noqa: F401
