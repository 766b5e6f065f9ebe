"""Fixtures shared by the unit tests: an empty chDB telemetry store of the
test's own, and for the forecasting tests a small generated fleet in the
backtest's file format, loaded, and a small model trained on it."""

from datetime import UTC, datetime, timedelta

import pytest

from intraday.forecasting import backtest
from intraday.forecasting.model import TrainingConfig, fit
from intraday.telemetry.loader import write_fleet

END = datetime(2026, 2, 1, tzinfo=UTC)
SMALL = TrainingConfig(train_rows=80_000, calibration_rows=20_000, calibration_days=2, num_trees=40,
                       tail_trees=25, learning_rate=0.15)


@pytest.fixture
def empty_store(tmp_path):
    """A telemetry store on chDB in the test's directory, migrated, empty."""
    from intraday.telemetry.store import ChdbBackend, TelemetryStore

    store = TelemetryStore(ChdbBackend(tmp_path / "chdb"))
    store.migrate()
    yield store
    store.close()


@pytest.fixture(scope="session")
def fleet_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet") / "fleet.parquet"
    write_fleet(out, 8, END - timedelta(days=16), END, seed=11)  # with its duplicated messages
    return out, out.with_name("fleet.devices.parquet"), out.with_name("fleet.weather.parquet")


@pytest.fixture(scope="session")
def data(fleet_files):
    return backtest.load_data(*fleet_files)


@pytest.fixture(scope="session")
def model(data):
    return fit(data.panel, data.temperature, SMALL)
