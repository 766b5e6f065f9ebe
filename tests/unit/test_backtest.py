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
    assert data.resampled_from == "0 days 00:05:00"
    assert data.panel.power.shape == (2, 96)
    first = df[df.device_id == "b"].power.to_numpy()[:3].mean()
    assert data.panel.power[1, 0] == pytest.approx(first)


@pytest.mark.parametrize("mutate, message", [
    (lambda df: readings("1h"), "coarser than 15min"),
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
    assert report["schema_version"] == 2
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


def test_backtest_cli_refuses_bad_input_with_exit_2(tmp_path, capsys):
    readings("1h").to_csv(tmp_path / "hourly.csv", index=False)
    with pytest.raises(SystemExit) as e:
        cli.main(["backtest", "--data", str(tmp_path / "hourly.csv"), "--out", str(tmp_path / "r.json")])
    assert e.value.code == 2
    assert "coarser than 15min" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


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


def _run(capsys, argv: list[str]) -> str:
    cli.main(argv)
    return capsys.readouterr().out


def test_train_reads_the_telemetry_store_when_no_file_is_given(data_dir, capsys):
    from intraday.forecasting.features import IssuedForecasts
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
