"""Live accuracy on the running stack: published forecasts whose horizon is
over are scored against the readings that came after them, once; the
scores reach `GET /scores`, the forecaster's metrics and `intraday status`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest

from intraday.timeutil import floor_quarter_hour, isoformat_z
from tests.stack import app_headers, intraday

DEVICES = ["hp-0011", "hp-0012", "hp-0013", "hp-0014", "hp-0015"]


def _readings(stack, device: str, start: datetime, end: datetime) -> np.ndarray:
    r = httpx.get(f"http://127.0.0.1:8002/devices/{device}/window", headers=app_headers(stack), timeout=30,
                  params={"start": isoformat_z(start), "end": isoformat_z(end)})
    assert r.status_code == 200, r.text
    return np.array([np.nan if v is None else v for v in r.json()["values"]], float)


@pytest.fixture(scope="module")
def published(gateway):
    """A fleet forecast and a device forecast made two days ago (backcasts
    from the data before then, as they were published then), and one for
    the next day, not due."""
    start = floor_quarter_hour(datetime.now(UTC)) - timedelta(days=2)
    fleet = gateway.post("/forecast/fleet", params={"wait": "true"},
                         json={"devices": DEVICES, "forecast_start": isoformat_z(start), "horizon_hours": 24})
    assert fleet.status_code == 200, fleet.text
    own = gateway.post("/forecast/intraday", params={"wait": "true"}, json={
        "device_id": "hp-0016", "forecast_start": isoformat_z(start), "horizon_hours": 12})
    assert own.status_code == 200, own.text
    ahead = gateway.post("/forecast/intraday", params={"wait": "true"},
                         json={"device_id": "hp-0017", "horizon_hours": 3})
    assert ahead.status_code == 200, ahead.text
    return {"start": start, "fleet": fleet.json()["result"], "own": own.json()["result"],
            "ahead": ahead.json()["forecast_id"]}


def _sums(pg, fid: str, level: str) -> dict:
    row = pg.execute("SELECT sum(cells), sum(actual), sum(abs_error_mean), sum(error_mean), sum(inside),"
                     " sum(abs_error_p50) FROM forecast_scores WHERE forecast_id = %s AND level = %s",
                     (fid, level)).fetchone()
    return dict(zip(("cells", "actual", "abs_error_mean", "error_mean", "inside", "abs_error_p50"), row,
                    strict=True))


def test_a_published_fleet_forecast_is_scored_against_its_readings(stack, gateway, pg, published):
    r = gateway.post("/scores/run")
    assert r.status_code == 200, r.text
    assert r.json()["by_kind"]["fleet"] >= 1 and r.json()["by_kind"]["device"] >= 1
    fleet = published["fleet"]
    fid, start = fleet["forecast_id"], published["start"]
    end = start + timedelta(hours=24)

    # The total, scored where every device reported, against the sum of
    # the readings the telemetry service serves.
    actual = np.vstack([_readings(stack, d, start, end) for d in DEVICES])
    total = actual.sum(axis=0)  # NaN where a device has a gap
    pf = fleet["portfolio"]["intervals"]
    mean = np.array([i["mean"] for i in pf])
    p10, p90 = np.array([i["p10"] for i in pf]), np.array([i["p90"] for i in pf])
    ok = ~np.isnan(total)
    assert ok.sum() > 48, "the demo fleet has readings for most of the day"
    got = _sums(pg, fid, "portfolio")
    assert got["cells"] == ok.sum()
    assert got["actual"] == pytest.approx(total[ok].sum(), rel=1e-9)
    assert got["abs_error_mean"] == pytest.approx(np.abs(total[ok] - mean[ok]).sum(), rel=1e-9)
    assert got["error_mean"] == pytest.approx((mean[ok] - total[ok]).sum(), rel=1e-9, abs=1e-9)
    assert got["inside"] == int(((total[ok] >= p10[ok]) & (total[ok] <= p90[ok])).sum())

    # Each device forecast it summed, where its device reported.
    device = _sums(pg, fid, "device")
    assert device["cells"] == int((~np.isnan(actual)).sum())
    scoring = pg.execute("SELECT kind, devices, cells, cells_missing, forecast_end FROM forecast_scorings"
                         " WHERE forecast_id = %s", (fid,)).fetchone()
    assert scoring == ("fleet", len(DEVICES), device["cells"], int(np.isnan(actual).sum()), end)

    # A device forecast made on its own: the device level only.
    own = published["own"]["forecast_id"]
    assert _sums(pg, own, "portfolio")["cells"] is None
    readings = _readings(stack, "hp-0016", start, start + timedelta(hours=12))
    p50 = np.array([i["p50"] for i in published["own"]["intervals"]])
    have = ~np.isnan(readings)
    got = _sums(pg, own, "device")
    assert got["cells"] == have.sum()
    assert got["abs_error_p50"] == pytest.approx(np.abs(readings[have] - p50[have]).sum(), rel=1e-9)

    # Not over yet: not scored.
    assert pg.execute("SELECT count(*) FROM forecast_scorings WHERE forecast_id = %s",
                      (published["ahead"],)).fetchone()[0] == 0


def test_a_forecast_is_scored_once(gateway, pg, published):
    gateway.post("/scores/run")
    fid = published["fleet"]["forecast_id"]
    rows = pg.execute("SELECT count(*) FROM forecast_scores WHERE forecast_id = %s", (fid,)).fetchone()[0]
    again = gateway.post("/scores/run")
    assert again.status_code == 200 and again.json()["scored"] == 0
    assert pg.execute("SELECT count(*) FROM forecast_scores WHERE forecast_id = %s",
                      (fid,)).fetchone()[0] == rows


def test_the_weeks_scores_reach_the_api_the_metrics_and_status(stack, gateway, pg, published):
    gateway.post("/scores/run")
    r = gateway.get("/scores")
    assert r.status_code == 200, r.text
    body = r.json()
    live = body["live"]
    assert live["forecasts"] >= 2
    days = {d["day"] for d in live["days"]}
    start = published["start"]
    assert start.date().isoformat() in days
    # The week pooled: what the recorded sums of every scored row give.
    cells, inside, actual, error = pg.execute(
        "SELECT sum(cells), sum(inside), sum(actual), sum(error_mean) FROM forecast_scores"
        " WHERE level = 'portfolio' AND day BETWEEN %s AND %s", (live["from"], live["to"])).fetchone()
    week = live["week"]["portfolio"]
    assert week["cells"] == cells and week["coverage"] == pytest.approx(inside / cells)
    assert week["bias"] == pytest.approx(error / actual)
    assert [b["block"] for b in live["blocks"]["portfolio"]] == [0, 1, 2, 3]
    assert sum(b["cells"] for b in live["blocks"]["portfolio"]) == cells
    assert isinstance(live["alerts"], list)
    assert body["model_version"] == "baseline" and body["training"] is None

    # The forecaster's gauges: the same week.
    metrics = httpx.get("http://127.0.0.1:8001/metrics", timeout=10).text
    line = next(x for x in metrics.splitlines()
                if x.startswith('intraday_live_score{level="portfolio",measure="coverage"}'))
    assert float(line.split()[-1]) == pytest.approx(week["coverage"])

    # `intraday status` prints them.
    out = intraday(stack["env"], "status")
    assert "live accuracy" in out and "last 7 days" in out and f"{100 * week['coverage']:.1f} %" in out


def test_scoring_needs_the_admin_scope(stack, gateway):
    r = httpx.post("http://127.0.0.1:8000/scores/run", timeout=10)
    assert r.status_code == 401
    assert gateway.get("/scores").status_code == 200


@pytest.fixture
def model_to_three_days_ago(stack, tmp_path):
    """A small model trained on a generated fleet like the demo one whose
    data ends three days ago, promoted; forecasts after that are out of
    sample for it."""
    data, end = tmp_path / "fleet.parquet", floor_quarter_hour(datetime.now(UTC)) - timedelta(days=3)
    intraday(stack["env"], "fleet", "generate", "--devices", "24", "--days", "14", "--faults", "none",
             "--end", isoformat_z(end), "--out", str(data))
    out = intraday(stack["env"], "train", "--data", str(data), "--train-rows", "40000", "--trees", "30",
                   "--promote")
    version = out.split()[1].rstrip(":")
    try:
        yield version, end
    finally:
        (stack["data_dir"] / "models" / "PROMOTED").unlink()


def test_scored_fleet_forecasts_move_the_served_models_bands(stack, gateway, pg, model_to_three_days_ago):
    version, trained_to = model_to_three_days_ago
    start = trained_to + timedelta(days=1)

    def fleet_at(at: datetime) -> dict:
        r = gateway.post("/forecast/fleet", params={"wait": "true"}, json={
            "devices": DEVICES, "forecast_start": isoformat_z(at), "horizon_hours": 24})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["model_version"] == version
        return r.json()["result"]

    time.sleep(1.5)  # the test stack's forecasters re-read the promoted version every second
    first = fleet_at(start)
    scaled = first["portfolio"]["recalibration"]
    assert trained_to - timedelta(hours=1) <= datetime.fromisoformat(scaled["trained_to"]) <= trained_to
    assert len(scaled["device"]) == scaled["device_blocks"]
    assert start.date().isoformat() not in scaled["days"]
    assert gateway.post("/scores/run").json()["by_kind"]["fleet"] >= 1

    # Its day is in the model's scored days, with a score for every device
    # cell it was scored on (all made by the model here) in each tail.
    day, forecasts, stored = pg.execute(
        "SELECT day, forecasts, scores FROM live_recalibration WHERE model_version = %s",
        (version,)).fetchone()
    assert (day, forecasts) == (start.date(), 1)
    cells = _sums(pg, first["forecast_id"], "device")["cells"]
    assert sum(block[0][-1] for block in stored["device"]) == cells
    assert list(stored["portfolio"]) == [str(3 ** 1)]  # 5 devices: the size class 3

    # The next fleet forecast is scaled with that day in its window.
    later = fleet_at(start + timedelta(hours=12))
    assert start.date().isoformat() in later["portfolio"]["recalibration"]["days"]
