"""A user's own fleet on the running stack: the stack of tests/stack.py,
started without the demo fleet (INTRADAY_DEMO_FLEET=off; `make test` sets
it for this directory's own session), its weather connector pointed at a
local server that answers as Open-Meteo's forecast API does
(tests/openmeteo_fixture.py; this machine has no internet), pulled by its
Dapr job every 20 s."""

from collections.abc import Iterator

import pytest

from tests.openmeteo_fixture import OpenMeteo
from tests.stack import gateway, pg, rds, run_stack  # noqa: F401

PULL_EVERY_S = 20


@pytest.fixture(scope="session")
def open_meteo() -> Iterator[OpenMeteo]:
    server = OpenMeteo()
    yield server
    server.close()


@pytest.fixture(scope="session")
def stack(open_meteo) -> Iterator[dict]:
    with run_stack({"INTRADAY_WEATHER_PROVIDER_URL": open_meteo.url,
                    "INTRADAY_WEATHER_SCHEDULE": f"@every {PULL_EVERY_S}s"}) as started:
        yield started
