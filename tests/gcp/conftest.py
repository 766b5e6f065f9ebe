"""The suite on Google Cloud's emulators: the stack of tests/stack.py, started
with INTRADAY_COMPONENTS=gcp-emulated (`make test` sets it for this
directory's own session)."""

from tests.stack import gateway, pg, rds, stack  # noqa: F401
