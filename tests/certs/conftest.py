"""Workload certificates that live a minute: the stack of tests/stack.py,
started with INTRADAY_WORKLOAD_CERT_TTL=60s (`make test` sets it for this
directory's own session), so that renewal and expiry come within minutes."""

from tests.stack import gateway, pg, rds, stack  # noqa: F401
