"""A user's own fleet on the running stack: the stack of tests/stack.py,
started without the demo fleet (INTRADAY_DEMO_FLEET=off; `make test` sets
it for this directory's own session)."""

from tests.stack import gateway, pg, rds, stack  # noqa: F401
