"""The backtest's input contract and report, and the train / models commands."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from intraday import cli
from intraday.config import get_settings
from intraday.errors import InvalidRequest
from intraday.forecasting import backtest
from intraday.forecasting.backtest import METHODS
from intraday.telemetry.loader import write_fleet

END = datetime(2026, 2, 1, tzinfo=UTC)


def readings(freq: str, days: float = 1.0, devices=("a", "b")) -> pd.DataFrame:
    t = pd.date_range("2026-01-01", periods=int(days * pd.Timedelta("1D") / pd.Timedelta(freq)), freq=freq,
                      tz="UTC")
    rng = np.random.default_rng(0)
    return pd.concat([pd.DataFrame({"device_id": d, "timestamp": t, "power": rng.uniform(0, 3, len(t))})
                      for d in devices], ignore_index=True)


def test_finer_readings_are_averaged_to_the_quarter_hour(tmp_path):
    df = readings("5min")
    df.to_csv(tmp_path / "r.csv", index=False)
    data = backtest.load_data(tmp_path / "r.csv")
    assert data.resampled_from == "5 min" and data.panel.step_minutes == 15
    assert data.panel.power.shape == (2, 96)
    first = df[df.device_id == "b"].power.to_numpy()[:3].mean()
    assert data.panel.power[1, 0] == pytest.approx(first)


@pytest.mark.parametrize("mutate, message", [
    (lambda df: pd.concat([df, df.iloc[[5]].assign(power=9.5)]), "1 \\(device_id, timestamp\\) keys have "
     "readings that differ, e.g. a at 2026-01-01T01:15:00Z: power [0-9.]+ vs 9.5"),
    (lambda df: df.drop(columns="power"), "missing column\\(s\\) power"),
    (lambda df: df.assign(power=df.power.astype(object).where(df.index != 3, "12,5")), "non-numeric 'power'"),
    (lambda df: df.assign(power=-df.power), "negative power"),
    (lambda df: df.assign(timestamp="yesterday"), "not timestamps"),
    (lambda df: df.iloc[:0], "no rows"),
])
def test_unusable_input_is_refused_with_a_reason(tmp_path, mutate, message):
    mutate(readings("15min")).to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(InvalidRequest, match=message):
        backtest.load_data(tmp_path / "r.csv")


@pytest.mark.parametrize("step, freq, message", [
    ("1h", "15min", "1h apart|60 min apart .*coarser than the 15-min grid asked for.*use --freq 60min"),
    ("2h", None, "2 h apart .*hourly data is the coarsest"),
    ("45min", None, "45 min apart .*steps that divide an hour"),
    ("15min", "45min", "--freq 45min: the step must divide an hour"),
    ("15min", "soon", "--freq 'soon': not a duration"),
])
def test_a_grid_the_engine_cannot_forecast_is_refused(tmp_path, step, freq, message):
    readings(step, days=2).to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(InvalidRequest, match=message):
        backtest.load_data(tmp_path / "r.csv", freq=freq)


@pytest.mark.parametrize("step, freq, expected", [
    ("30min", None, 30), ("1h", None, 60), ("20min", None, 20), ("5min", None, 15), ("5min", "5min", 5),
    ("10min", "30min", 30), ("15min", "1h", 60),
])
def test_the_grid_is_the_data_s_own_step_or_the_one_asked_for(tmp_path, step, freq, expected):
    df = readings(step, days=2)
    df.to_csv(tmp_path / "r.csv", index=False)
    data = backtest.load_data(tmp_path / "r.csv", freq=freq)
    panel = data.panel
    assert panel.step_minutes == expected and panel.intervals == 2 * 24 * 60 // expected
    # Each cell is the mean of the readings inside it, so the energy is kept.
    per_cell = expected // (pd.Timedelta(step) // pd.Timedelta("1min"))
    a = df[df.device_id == "a"].power.to_numpy()
    np.testing.assert_allclose(panel.power[0], a.reshape(-1, max(per_cell, 1)).mean(axis=1), rtol=1e-12)
    assert (data.resampled_from is None) == (per_cell <= 1)


def test_exact_duplicates_are_dropped_and_counted(tmp_path):
    df = readings("15min")
    pd.concat([df, df.iloc[[3, 7, 7]]]).to_csv(tmp_path / "r.csv", index=False)
    data = backtest.load_data(tmp_path / "r.csv")
    assert data.duplicates_dropped == 3
    assert data.panel.power.shape == (2, 96) and data.readings == len(df)
    np.testing.assert_allclose(data.panel.power[0], df[df.device_id == "a"].power.to_numpy(), rtol=1e-12)


def test_too_little_data_for_the_origins_is_refused(tmp_path):
    readings("15min", days=8).to_parquet(tmp_path / "r.parquet")
    data = backtest.load_data(tmp_path / "r.parquet")
    with pytest.raises(InvalidRequest, match="before the first origin"):
        backtest.origin_indices(data.panel, 3, 96, "10:00")
    with pytest.raises(InvalidRequest, match="HH:MM"):
        backtest.origin_indices(data.panel, 1, 96, "ten")


@pytest.fixture(scope="module")
def fleet_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("bt") / "fleet.parquet"
    write_fleet(out, 5, END - timedelta(days=14), END, seed=4)  # with its faults: duplicates, stuck, gaps
    return out


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("INTRADAY_DATA_DIR", str(tmp_path))
    # No gateway there: `train` and `models list` work on the stores here,
    # whatever stack runs beside the tests.
    monkeypatch.setenv("INTRADAY_GATEWAY_URL", "http://127.0.0.1:9")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


SMALL = ["--train-rows", "40000", "--trees", "30"]


def test_backtest_writes_the_report_forecasts_and_plot(fleet_file, tmp_path, capsys):
    weather = fleet_file.with_name("fleet.weather.parquet")
    out = tmp_path / "report.json"
    cli.main(["backtest", "--data", str(fleet_file), "--weather", str(weather), "--out", str(out),
              "--forecasts-out", str(tmp_path / "f.parquet"), "--portfolio-out", str(tmp_path / "pf.parquet"),
              "--plot", str(tmp_path / "p.png"),
              "--origins", "3", "--issue-time", "06:30", *SMALL])
    report = json.loads(out.read_text())
    assert report["schema_version"] == 3
    # Each origin's bands rescaled by the days scored before it: the
    # model's calibration span, then the earlier origins once their
    # actuals were in (one more each day, up to a week).
    recal = report["recalibration"]
    windows = [o["window_days"] for o in recal["per_origin"]]
    assert windows == sorted(windows) and windows[0] >= 1 and windows[-1] <= 7
    assert all(o["window"][1] < o["origin_day"] for o in recal["per_origin"])  # never the day forecast
    assert recal["per_origin"][1]["window"][1] == recal["per_origin"][0]["origin_day"]
    for level in ("device_coverage", "portfolio_coverage"):
        assert 0 < recal[level]["first_calibration"] < 1 and 0 < recal[level]["rolling"] < 1
    # The generator's file as written: repeated messages dropped and counted.
    raw = pd.read_parquet(fleet_file)
    assert report["data"]["duplicates_dropped"] == raw.duplicated().sum() > 0
    assert set(report["methods"]) == set(METHODS)
    assert [o[11:16] for o in report["setup"]["origins"]] == ["06:30"] * 3
    assert report["setup"]["origins"][-1] == "2026-01-30T06:30:00Z"  # the last whose horizon fits
    for name, m in report["methods"].items():
        assert set(m["per_device"]) == {f"hp-000{i}" for i in range(1, 6)}
        o = m["overall"]
        assert o["rows"] == report["cells"]["scored"] > 0
        assert 0 < o["wape"] < 2 and o["mae"] <= o["rmse"]
        has_band = name not in ("seasonal_naive_day", "seasonal_naive_week")
        assert (o["coverage_p10_p90"] is not None) == has_band
    f = pd.read_parquet(tmp_path / "f.parquet")
    assert list(f.columns) == ["device_id", "origin", "timestamp", "p10", "p50", "p90", "mean", "actual"]
    assert len(f) == 5 * 3 * 96
    assert ((f.timestamp - f.origin) / pd.Timedelta("15min")).between(0, 95).all()
    assert (f.p10 <= f.p50).all() and (f.p50 <= f.p90).all() and (f["mean"] >= 0).all()

    # The portfolio: per origin and interval, the total of the devices with
    # a reading there; its mean is the sum of theirs.
    pf = pd.read_parquet(tmp_path / "pf.parquet")
    assert list(pf.columns) == ["origin", "timestamp", "mean", "p10", "p50", "p90", "actual", "devices"]
    assert len(pf) == 3 * 96
    reported = f[f.actual.notna()].groupby(["origin", "timestamp"])
    joined = pf.set_index(["origin", "timestamp"]).join(reported["mean"].sum().rename("device_means"))
    joined = joined.join(reported["actual"].sum().rename("device_actuals")).join(reported.size().rename("n"))
    np.testing.assert_allclose(joined["mean"], joined["device_means"], rtol=1e-9)
    np.testing.assert_allclose(joined["actual"], joined["device_actuals"], rtol=1e-9)
    assert (joined["devices"] == joined["n"]).all()
    assert (pf.p10 <= pf.p50).all() and (pf.p50 <= pf.p90).all() and (pf.p10 >= 0).all()
    # The portfolio band is narrower than the sum of the device bands
    # (errors partly cancel) and wider than zero.
    device_band = f[f.actual.notna()].assign(w=f.p90 - f.p10).groupby(["origin", "timestamp"])["w"].sum()
    assert 0 < (pf.p90 - pf.p10).sum() < device_band.sum()
    portfolio = report["portfolio"]
    assert set(portfolio["methods"]) == set(backtest.PORTFOLIO_METHODS)
    assert portfolio["devices"] == 5 and portfolio["cells"]["scored"] > 0
    for m in portfolio["methods"].values():
        assert m["rows"] == portfolio["cells"]["scored"]
        assert 0 < m["wape"] < 2 and -1 < m["bias"] < 1
    engine = portfolio["methods"]["engine"]
    assert engine["bias"] == pytest.approx(pf["mean"].sum() / pf["actual"].sum() - 1)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert "engine" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--freq", "15min"], "coarser than the 15-min grid"),
    (["--horizon", "49"], "--horizon 49: must be 1..48 steps of 60 min"),
])
def test_backtest_cli_refuses_bad_input_with_exit_2(tmp_path, capsys, args, message):
    readings("1h", days=20).to_csv(tmp_path / "hourly.csv", index=False)
    with pytest.raises(SystemExit) as e:
        cli.main(["backtest", "--data", str(tmp_path / "hourly.csv"), "--out", str(tmp_path / "r.json"),
                  *args])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("freq", ["30min", "60min"])
def test_half_hourly_and_hourly_meters_round_trip_through_backtest_and_training(
        fleet_file, tmp_path, data_dir, capsys, freq):
    """A settlement-period meter: the generated fleet averaged to 30 or 60
    min, backtested and trained on its own grid, the features meaning the
    same in time (one day of steps ahead, the issue time on the grid)."""
    step = pd.Timedelta(freq)
    raw = pd.read_parquet(fleet_file).drop_duplicates()
    meter = (raw.assign(timestamp=raw.timestamp.dt.floor(step))
             .groupby(["device_id", "timestamp"], as_index=False)["power"].mean())
    meter.to_parquet(tmp_path / "meter.parquet")
    weather = fleet_file.with_name("fleet.weather.parquet")
    devices = fleet_file.with_name("fleet.devices.parquet")
    out = tmp_path / "report.json"
    cli.main(["backtest", "--data", str(tmp_path / "meter.parquet"), "--weather", str(weather),
              "--devices", str(devices), "--out", str(out), "--forecasts-out", str(tmp_path / "f.parquet"),
              "--portfolio-out", str(tmp_path / "pf.parquet"), "--origins", "2", "--issue-time", "09:00",
              *SMALL])
    assert "engine" in capsys.readouterr().out
    report = json.loads(out.read_text())
    per_day = pd.Timedelta("1D") // step
    assert report["data"]["freq"] == freq and report["data"]["resampled_from"] is None
    assert report["setup"]["horizon_intervals"] == per_day
    assert [o[11:16] for o in report["setup"]["origins"]] == ["09:00"] * 2
    f = pd.read_parquet(tmp_path / "f.parquet")
    assert len(f) == 5 * 2 * per_day
    assert ((f.timestamp - f.origin) / step).between(0, per_day - 1).all()
    assert (f.timestamp.dt.floor(step) == f.timestamp).all()
    # actual is the meter's value as given
    joined = f.merge(meter, on=["device_id", "timestamp"], how="left")
    np.testing.assert_allclose(joined["actual"], joined["power"], rtol=1e-12)
    assert (f.p10 <= f.p50).all() and (f.p50 <= f.p90).all()
    engine, naive = report["methods"]["engine"]["overall"], report["methods"]["seasonal_naive_day"]["overall"]
    assert engine["wape"] < naive["wape"]  # it learned something on the coarser grid
    pf = pd.read_parquet(tmp_path / "pf.parquet")
    assert len(pf) == 2 * per_day and pf["mean"].notna().all()

    cli.main(["train", "--data", str(tmp_path / "meter.parquet"), "--weather", str(weather),
              "--devices", str(devices), *SMALL])
    version = capsys.readouterr().out.split()[1].rstrip(":")
    [m] = json.loads(_run(capsys, ["models", "list", "--json"]))["models"]
    assert m["version"] == version and m["training"]["step_minutes"] == step // pd.Timedelta("1min")
    # The service forecasts quarter-hours: such a model is not promoted.
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--data", str(tmp_path / "meter.parquet"), "--promote", *SMALL])
    assert e.value.code == 2 and "backtests only" in capsys.readouterr().err
    assert json.loads(_run(capsys, ["models", "list", "--json"]))["promoted"] is None


def test_train_stores_a_version_that_can_be_listed_and_promoted(fleet_file, data_dir, capsys):
    cli.main(["train", "--data", str(fleet_file), *SMALL])
    out = capsys.readouterr().out
    version = out.split()[1].rstrip(":")
    listing = json.loads(_run(capsys, ["models", "list", "--json"]))
    assert listing["promoted"] is None
    [m] = listing["models"]
    assert m["version"] == version
    assert m["data"]["sha256"] and m["training"]["devices"] == 5
    assert len(m["training"]["data_sha256"]) == 64
    assert m["training"]["data_end"] == "2026-02-01T00:00:00Z"
    assert (data_dir / "models" / version / "model.zip").is_file()

    assert "promoted" in _run(capsys, ["models", "promote", version])
    assert json.loads(_run(capsys, ["models", "list", "--json"]))["promoted"] == version
    with pytest.raises(SystemExit) as e:
        cli.main(["models", "promote", "20990101T000000Z-000000000000"])
    assert e.value.code == 2
    assert json.loads(_run(capsys, ["models", "list", "--json"]))["promoted"] == version


def test_train_if_none_promoted_trains_the_first_model_only(fleet_file, data_dir, capsys):
    out = _run(capsys, ["train", "--data", str(fleet_file), *SMALL, "--promote", "--if-none-promoted"])
    first = out.split()[1].rstrip(":")
    assert "promoted" in out
    assert json.loads(_run(capsys, ["models", "list", "--json"]))["promoted"] == first
    again = _run(capsys, ["train", "--data", str(fleet_file), *SMALL, "--promote", "--if-none-promoted"])
    assert again.strip() == f"model {first} is served already: nothing trained"
    listing = json.loads(_run(capsys, ["models", "list", "--json"]))
    assert listing["promoted"] == first and len(listing["models"]) == 1


def _run(capsys, argv: list[str]) -> str:
    cli.main(argv)
    return capsys.readouterr().out


def test_train_reads_the_telemetry_store_when_no_file_is_given(data_dir, capsys):
    from intraday.forecasting.temperature import IssuedForecasts
    from intraday.telemetry.loader import load_fleet
    from intraday.telemetry.store import TelemetryStore
    from intraday.timeutil import floor_quarter_hour

    end = floor_quarter_hour(datetime.now(UTC))
    store = TelemetryStore.from_settings(get_settings())
    store.migrate()
    try:
        load_fleet(store, 4, end - timedelta(days=12), end, seed=9)
        data = backtest.from_store(store, end - timedelta(days=12), end)
    finally:
        store.close()
    assert list(data.panel.device_ids) == ["hp-0001", "hp-0002", "hp-0003", "hp-0004"]
    assert data.panel.power.shape == (4, 12 * 96)
    assert np.isfinite(data.panel.outdoor_temp).mean() > 0.99
    assert isinstance(data.temperature, IssuedForecasts) and len(data.temperature.runs) == 24
    assert list(data.panel.attributes["device_id"]) == list(data.panel.device_ids)

    cli.main(["train", "--days", "12", *SMALL])
    assert "model " in capsys.readouterr().out
    listing = json.loads(_run(capsys, ["models", "list", "--json"]))
    [m] = listing["models"]
    assert m["data"] == {"telemetry_store": "chdb", "days": 12}
    assert m["training"]["devices"] == 4 and m["training"]["data_end"][:16] == end.isoformat()[:16]


def test_train_with_held_out_days_promotes_only_a_better_model(fleet_file, data_dir, capsys):
    """What `make up` runs first and the training workflow does: the model
    learns before the held-out days, meets the served one there, and is
    promoted only if its portfolio forecast is better, or when forced."""
    args = ["train", "--data", str(fleet_file), *SMALL, "--holdout-days", "2", "--promote"]
    first = _run(capsys, args)
    assert "kept the champion" not in first and ": promoted" in first
    version = first.split()[1].rstrip(":")
    assert "champion baseline" in first and "better: portfolio pinball" in first
    # It serves bands rescaled by the days it was scored on, the held-out ones the newest.
    assert "bands served rescaled by their last" in first and "totals of ~" in first
    listing = json.loads(_run(capsys, ["models", "list", "--json"]))
    assert listing["promoted"] == version
    [m] = listing["models"]
    assert m["training"]["holdout"]["days"] == 2
    assert m["training"]["data_end"] == m["training"]["holdout"]["first_forecast_start"]
    # The same data again: the same model, so no better than the champion.
    again = _run(capsys, args)
    assert "kept the champion" in again and "not better: portfolio pinball" in again
    assert json.loads(_run(capsys, ["models", "list", "--json"]))["promoted"] == version
    forced = _run(capsys, [*args, "--force"])
    assert "training" in forced and "forced; portfolio pinball" in forced
    assert json.loads(_run(capsys, ["models", "list", "--json"]))["promoted"] == forced.split()[1].rstrip(":")


def test_every_device_due_has_a_forecast_from_the_model_its_profile_or_its_peers(fleet_file):
    """A meter silent for the ten days before the origins (its own profile
    from the days it read) and a device that starts reading at the second
    origin (its peers): neither is left out of the forecasts or the
    portfolio."""
    from dataclasses import replace

    from intraday.forecasting.features import Panel
    from intraday.forecasting.model import TrainingConfig

    data = backtest.load_data(fleet_file, fleet_file.with_name("fleet.devices.parquet"),
                              fleet_file.with_name("fleet.weather.parquet"))
    p, day = data.panel, data.panel.per_day
    idx = backtest.origin_indices(p, 3, day, "10:00")
    power, observed = p.power.copy(), data.actual.copy()
    for values in (power, observed):
        values[0, 3 * day:] = np.nan  # silent from day 3 on ...
        values[0, idx[-1] :] = data.actual[0, idx[-1] :]  # ... and back for the last day forecast
        values[1, : idx[1]] = np.nan  # new at the second origin
    gappy = replace(data, panel=Panel(p.device_ids, p.start, power, p.outdoor_temp, p.attributes, p.countries,
                                      p.step_minutes), observed=observed)
    config = TrainingConfig(horizon=day, train_rows=40_000, calibration_rows=10_000, calibration_days=2,
                            num_trees=20, tail_trees=10)
    res = backtest.run(gappy, origins=3, config=config, peer=False)
    assert res.report["fallback"] == {"own_profile": 3, "peers": 2, "still_missing": 0}
    engine = res.cube["engine"]
    due = ~np.isnan(res.actual)
    assert due[0].any() and due[1, 1:].all()
    assert not np.isnan(engine[:, due]).any()
    assert (engine[0][due] <= engine[1][due]).all() and (engine[1][due] <= engine[2][due]).all()
    # In the portfolio too: every device with a reading in an interval is in its total.
    pf = res.portfolio
    assert (pf["devices"].to_numpy() == due.sum(axis=0).ravel()).all()
    # The newcomer's forecast is its peers' scaled by rated power, not zero.
    assert engine[3, 1, 1:].mean() > 0
