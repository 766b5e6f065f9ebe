"""A user's own fleet on the running stack (issue 26), which starts empty
(no demo fleet): real Swiss heat pumps imported as a replay ending now,
a model trained and promoted on them, fleet and device forecasts, a price
tick to a decision, the dashboard drawing that fleet, and new readings
arriving after; then the registry and the weather as the API and the
topics take them, refusals with their reasons, and who changed what."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest

from intraday import messages
from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, isoformat_z
from scripts.swiss_households import SOURCE, write_files
from tests.own_fleet.conftest import PULL_EVERY_S
from tests.stack import ROOT, api_key, app_headers, dapr_headers, eventually, intraday

TELEMETRY = "http://127.0.0.1:8002"  # the app itself, with its app token (as the CLI reaches it)
swiss = pytest.mark.skipif(not (SOURCE / "load_15min.parquet").exists(),
                           reason=f"the Swiss households' data is not at {SOURCE}")


def _cli(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / ".venv/bin/intraday"), *args], cwd=ROOT, env=stack["env"],
                          capture_output=True, text=True, timeout=900)


def _key(stack, name: str, scopes: str) -> str:
    return intraday(stack["env"], "keys", "create", name, "--scopes", scopes,
                    "--if-missing").strip().splitlines()[-1]


@pytest.fixture(scope="module")
def files(stack, tmp_path_factory):
    if not (SOURCE / "load_15min.parquet").exists():
        pytest.skip(f"the Swiss households' data is not at {SOURCE}")
    return write_files(tmp_path_factory.mktemp("swiss"))


@swiss
def test_the_swiss_heat_pumps_imported_as_a_replay_ending_now(stack, files, gateway):
    args = ("import", "--devices", str(files["devices"]), "--readings", str(files["readings"]),
            "--weather", str(files["weather"]), "--shift-to-now", "--json")
    first = _cli(stack, *args)
    assert first.returncode in (0, 3), first.stderr  # 3: the real meters have a few negative readings
    summary = json.loads(first.stdout)
    assert len(summary["devices"]["added"]) == 90
    report = summary["readings"]
    assert report["inserted"] > 90 * 96 * 40 and report["status"] in ("accepted", "partial")
    assert set(report["reasons"]) <= {"negative_value"}
    assert summary["shift"]["weeks"] > 0 and summary["weather"]["observed"] > 500
    listed = gateway.get("/devices").json()
    assert len(listed) == 90 and {d["country"] for d in listed} == {"CH"}
    # Its data ends at the current quarter-hour: the newest readings are minutes old.
    now = datetime.now(UTC)
    r = httpx.get(f"{TELEMETRY}/devices/{listed[0]['device_id']}/readings", headers=app_headers(stack),
                  params={"start": isoformat_z(now - timedelta(hours=2)), "end": isoformat_z(now)})
    newest = max(datetime.fromisoformat(x["timestamp"]) for x in r.json())
    assert timedelta(0) < floor_quarter_hour(now) - newest <= timedelta(minutes=30)
    # Run again: nothing doubled, nothing changed.
    again = _cli(stack, *args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["devices"]["unchanged"] == 90
    assert json.loads(again.stdout)["readings"]["status"] == "duplicate_batch"


@swiss
def test_a_model_trained_on_them_serves_their_forecasts_and_a_price_moves_a_trade(stack, gateway, pg):
    r = gateway.post("/models/train", params={"wait": "true", "timeout": 900},
                     json={"days": 30, "holdout_days": 7, "train_rows": 300_000}, timeout=960)
    assert r.status_code == 200, r.text
    decision = r.json()["result"]
    assert decision["devices"] == 90 and decision["evaluation"]["candidate"]
    if not decision["promoted"]:  # scored worse than the fallback: recorded, then served anyway here
        r = gateway.post("/models/train", params={"wait": "true", "timeout": 900}, timeout=960,
                         json={"days": 30, "holdout_days": 7, "train_rows": 300_000, "force": True})
        decision = r.json()["result"]
    version = decision["candidate_version"]
    served = eventually(lambda: gateway.get("/models").json()["promoted"] == version, timeout=30)
    assert served
    fleet = eventually(lambda: (lambda r: r.json()["result"] if r.status_code == 200 and
                                r.json()["result"]["model_version"] == version else None)(
        gateway.post("/forecast/fleet", params={"wait": "true", "timeout": 120}, json={}, timeout=150)),
        timeout=60)
    assert fleet and fleet["portfolio"]["devices"] == 90 and not fleet["failed"]
    means = np.array([i["mean"] for i in fleet["portfolio"]["intervals"]])
    assert len(means) == 96 and np.isfinite(means).all() and 30 < means.mean() < 400  # ~108 kW on average
    device = fleet["device_forecasts"][0]["device_id"]
    one = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": device})
    assert one.status_code == 200 and one.json()["result"]["model_version"] == version
    # A price move: the trading service forecasts this portfolio and trades it.
    assert gateway.post("/prices", json={"price_eur_mwh": 90.0}).status_code == 202
    traded = eventually(lambda: pg.execute("SELECT portfolio_forecast_id FROM trade_decisions"
                                           " ORDER BY decided_at DESC LIMIT 1").fetchone(), timeout=120)
    assert traded, "the price made no decision"
    devices = pg.execute("SELECT cardinality(device_ids), failed FROM fleet_forecasts"
                         " WHERE fleet_forecast_id = %s", (traded[0],)).fetchone()
    assert devices == (90, {})


@swiss
@pytest.mark.skipif(shutil.which("chromedriver") is None or shutil.which("chromium") is None,
                    reason="make setup installs chromium and chromium-driver")
def test_the_dashboard_draws_that_fleet(stack, gateway):
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    overview = gateway.get("/ui/api/overview").json()
    assert overview["portfolio"]["devices"] == 90
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1700"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get("http://127.0.0.1:8000/ui")
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "key").is_displayed())
        driver.find_element(By.ID, "key").send_keys(api_key(stack))
        driver.find_element(By.CSS_SELECTOR, "#login button").click()
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.intraday.renders") >= 1)
        header = driver.find_element(By.TAG_NAME, "body").text
        assert "90 devices" in header and overview["portfolio"]["forecast_id"] in header
        traces = driver.execute_script(
            "return document.getElementById('portfolio-chart').data.map(t => [t.name, t.x.length])")
        assert ["P10–P90", 96] in traces, traces
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "freshness-meta").text)
        assert driver.find_element(By.ID, "freshness-meta").text.startswith("90 devices · 0 quiet")
        out = stack["data_dir"] / "screenshots"
        out.mkdir(exist_ok=True)
        driver.save_screenshot(str(out / "swiss.png"))
        pixels = np.asarray(Image.open(out / "swiss.png").convert("RGB")).reshape(-1, 3)
        assert len(np.unique(pixels[::50], axis=0)) > 200 and pixels.std() > 20
    finally:
        driver.quit()


@swiss
def test_new_readings_extend_what_the_forecasts_read(stack, gateway):
    device = gateway.get("/devices").json()[0]["device_id"]
    now = floor_quarter_hour(datetime.now(UTC))
    r = gateway.post("/readings", json={"readings": [
        {"device_id": device, "timestamp": isoformat_z(now + timedelta(minutes=m)), "power": 3.5}
        for m in (0, 5)]})
    assert r.status_code == 200 and r.json()["inserted"] == 2, r.text
    shown = gateway.get(f"/ui/api/devices/{device}").json()["actuals"]
    assert shown["values"][-1] == 3.5, shown  # the current quarter-hour, on the dashboard
    # The telemetry service's staleness: every device reported within the last half hour.
    metrics = httpx.get(f"{TELEMETRY}/metrics").text
    stale = next(line for line in metrics.splitlines()
                 if line.startswith('intraday_telemetry_stale_devices{threshold="1h"}'))
    assert float(stale.split()[-1]) == 0


@swiss
def test_a_device_retired_inside_the_horizon_leaves_the_portfolio_then(stack, gateway):
    device = gateway.get("/devices").json()[-1]["device_id"]
    start = floor_quarter_hour(datetime.now(UTC)) + timedelta(hours=1)
    at = start + timedelta(hours=6)
    r = gateway.post("/devices/retire", json={"device_ids": [device], "at": isoformat_z(at)})
    assert r.status_code == 200 and r.json()["retired"] == [device]
    assert device in {d["device_id"] for d in gateway.get("/devices").json()}  # until then

    # Past the forecaster's re-validation of its fleet list (5 s): a forecast
    # asked before would be the one recorded for this id, made before.
    time.sleep(6)
    r = gateway.post("/forecast/intraday", params={"wait": "true"},
                     json={"device_id": device, "forecast_start": isoformat_z(start)})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert any("retired at" in n for n in result["notes"]), result["notes"]
    means = [i["mean"] for i in result["intervals"]]
    assert all(m == 0 for m in means[24:]) and any(m > 0 for m in means[:24])


def test_the_registry_refuses_with_reasons_and_records_who_changed_what(stack, gateway, pg):
    reader = _key(stack, "own-reader", "forecast:read")
    body = {"devices": [{"device_id": "own-1", "latitude": 52.52, "longitude": 13.40, "rated_power_kw": 8,
                         "heat_pump_type": "air-to-water", "country": "DE"},
                        {"device_id": "own-2", "location": "Bern", "country": "CH"}]}
    before = {d["device_id"] for d in gateway.get("/devices").json()}
    with httpx.Client(base_url="http://127.0.0.1:8000", timeout=30) as http:
        r = http.post("/devices", json=body, headers={"authorization": f"Bearer {reader}"})
        assert r.status_code == 403 and "fleet:admin" in r.json()["detail"]
    bad = {"devices": [*body["devices"], {"device_id": "own-3", "location": "Bern", "setpoint_c": 80},
                       {"device_id": "own 4", "location": "Bern"}]}
    r = gateway.post("/devices", json=bad)
    assert r.status_code == 422
    rows = {(e["row"], e["reason"].split(" ")[0]) for e in r.json()["detail"]["rows"]}
    assert rows == {(3, "setpoint_c"), (4, "device_id")}
    assert {d["device_id"] for d in gateway.get("/devices").json()} == before  # nothing written
    r = gateway.post("/devices", json=body)
    assert r.status_code == 200 and r.json()["added"] == ["own-1", "own-2"], r.text
    change = pg.execute("SELECT changed_by, action, written, report FROM device_changes WHERE change_id = %s",
                        (r.json()["change_id"],)).fetchone()
    assert change[:3] == ("local", "upsert", 2)  # the key's holder
    assert change[3]["changes"][0]["fields"]["location"] == [None, "52.5N13.4E"]
    listed = {d["device_id"]: d for d in gateway.get("/devices").json()}
    assert listed["own-1"]["location"] == "52.5N13.4E" and listed["own-2"]["location"] == "Bern"
    # An update through the command line, as another holder's key would.
    csv = stack["data_dir"] / "own-update.csv"
    csv.write_text("device_id,rated_power_kw,tariff\nown-2,5.5,night\n")
    out = intraday(stack["env"], "devices", "add", str(csv))
    assert "1 updated" in out
    history = gateway.get("/devices/changes", params={"device_id": "own-2"}).json()
    assert history[0]["changes"] == [{"device_id": "own-2",
                                      "fields": {"rated_power_kw": [None, 5.5], "tariff": [None, "night"]}}]
    # The forecaster's list follows without a restart: own-2's single forecast
    # is refused for want of readings, not as an unknown device.
    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "own-2"})
    assert r.status_code == 422 and "readings" in r.json()["detail"], r.text
    # Retired: out of the fleet list and the portfolio, refused by name.
    r = gateway.post("/devices/retire", json={"device_ids": ["own-1", "own-2"]})
    assert r.status_code == 200 and r.json()["retired"] == ["own-1", "own-2"]
    assert {d["device_id"] for d in gateway.get("/devices").json()} == before
    def refused():  # within the forecaster's few seconds of re-validating its fleet list
        r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "own-2"})
        return r if r.status_code == 404 else None
    r = eventually(refused, timeout=20)
    assert r is not None and "retired" in r.json()["detail"]
    assert gateway.post("/devices/retire", json={"device_ids": ["own-9"]}).status_code == 422


def test_weather_comes_in_through_the_api_and_the_topic(stack, gateway):
    issued = floor_quarter_hour(datetime.now(UTC)).replace(minute=0)
    forecasts = [{"latitude": 46.95, "longitude": 7.45, "issued_at": isoformat_z(issued),
                  "timestamp": isoformat_z(issued + timedelta(hours=h)), "outdoor_temp_c": -3.0 + h / 2}
                 for h in range(48)]
    writer = _key(stack, "own-weather", "weather:write")
    with httpx.Client(base_url="http://127.0.0.1:8000", timeout=30,
                      headers={"authorization": f"Bearer {writer}"}) as http:
        r = http.post("/weather-forecasts", json={"forecasts": forecasts})
        assert r.status_code == 200 and r.json()["stored"] == {"forecasts": 48}, r.text
        assert r.json()["locations"] == ["46.9N7.4E"]
        bad = http.post("/weather", json={"observations": [
            {"location": "Bern", "timestamp": isoformat_z(issued), "outdoor_temp_c": 2.0},
            {"location": "Bern", "timestamp": isoformat_z(issued + timedelta(days=2)),
             "outdoor_temp_c": 2.0}]})
        assert bad.status_code == 422 and bad.json()["detail"]["rows"][0]["row"] == 2
        assert http.get("/devices").status_code == 403  # weather:write reads nothing
    # A feed on the `weather` topic (through a sidecar allowed to publish it).
    publish = "http://127.0.0.1:3500/v1.0/publish/pubsub/weather"
    observed = {"observations": [{"location": "Bern", "timestamp": isoformat_z(issued - timedelta(hours=h)),
                                  "outdoor_temp_c": 1.0 + h} for h in range(3)]}
    messages.validate("weather", observed)  # schemas/weather.schema.json: what the service stores
    assert httpx.post(publish, json=observed, headers=dapr_headers(stack)).status_code == 204
    span = {"start": isoformat_z(issued - timedelta(hours=2)), "end": isoformat_z(issued + QUARTER_HOUR),
            "as_of": isoformat_z(issued)}

    def stored():
        v = httpx.get(f"{TELEMETRY}/weather/Bern", headers=app_headers(stack), params=span).json()["values"]
        return v if v[-1] is not None else None
    values = eventually(stored, timeout=30)
    # Hourly values, read per quarter-hour.
    assert values[0] == 3.0 and values[-1] == 1.0 and values[4] == 2.0 and values[2] == 2.5
    # A message that can never be stored is dropped and kept in the ledger with its reason.
    event = {"specversion": "1.0", "id": "it-weather-bad", "source": "test", "type": "com.dapr.event.sent",
             "datacontenttype": "application/json",
             "data": {"observations": [{"location": "Bern", "outdoor_temp_c": 1}]}}
    r = httpx.post(publish, json=event, headers={**dapr_headers(stack),
                                                  "content-type": "application/cloudevents+json"})
    assert r.status_code == 204
    ledger = eventually(lambda: httpx.get(f"{TELEMETRY}/ingest/weather-invalid:it-weather-bad",
                                          headers=app_headers(stack)).json().get("report"), timeout=30)
    assert ledger["status"] == "rejected" and "timestamp" in ledger["errors"][0]


def test_the_weather_provider_is_pulled_on_schedule_for_the_devices_locations(stack, gateway, open_meteo):
    """The Open-Meteo connector: the Dapr job pulls the devices' locations by
    itself; a pull on demand says which locations it asked for and stored."""
    r = gateway.post("/devices", json={"devices": [
        {"device_id": "om-1", "latitude": 47.38, "longitude": 8.54},
        {"device_id": "om-2", "location": "Lugano"}]})  # a zone without coordinates
    assert r.status_code == 200, r.text
    since = time.time()
    assert eventually(lambda: any(q["at"] > since and "47.3500" in q["latitude"]
                                  for q in open_meteo.requests), timeout=PULL_EVERY_S * 3), \
        "the scheduled job did not ask for the new device's cell"
    pulled = httpx.post(f"{TELEMETRY}/weather/pull", headers=app_headers(stack), timeout=60)
    assert pulled.status_code == 200, pulled.text
    body = pulled.json()
    assert "47.3N8.5E" in body["locations"] and "Lugano" in body["without_coordinates"]
    assert body["stored"]["forecasts"] > 0 and "47.3N8.5E" not in body["stale"]
    asked = open_meteo.requests[-1]
    assert asked["hourly"] == "temperature_2m" and asked["timezone"] == "GMT"
    now = floor_quarter_hour(datetime.now(UTC))
    r = httpx.get(f"{TELEMETRY}/weather/47.3N8.5E", headers=app_headers(stack), params={
        "start": isoformat_z(now + timedelta(hours=1)), "end": isoformat_z(now + timedelta(hours=2)),
        "as_of": isoformat_z(datetime.now(UTC))})
    assert all(v is not None for v in r.json()["values"]) and r.json()["forecast_issued_at"]
    gateway.post("/devices/retire", json={"device_ids": ["om-1", "om-2"]})


def test_a_location_without_a_fresh_forecast_is_said_so(stack, gateway):
    now = floor_quarter_hour(datetime.now(UTC))
    assert gateway.post("/devices", json={"devices": [
        {"device_id": "stale-1", "location": "Basel", "country": "CH"}]}).status_code == 200
    readings = [{"device_id": "stale-1", "timestamp": isoformat_z(now - k * QUARTER_HOUR),
                 "power": 1.0 + k % 5} for k in range(1, 4 * 96)]
    assert gateway.post("/readings", json={"readings": readings}).status_code == 200
    issued = now - timedelta(hours=30)  # a forecast run from yesterday, the newest for Basel
    forecast = [{"location": "Basel", "issued_at": isoformat_z(issued),
                 "timestamp": isoformat_z(issued + timedelta(hours=h)), "outdoor_temp_c": 2.0}
                for h in range(72)]
    assert gateway.post("/weather-forecasts", json={"forecasts": forecast}).status_code == 200
    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "stale-1"})
    assert r.status_code == 200, r.text
    notes = " ".join(r.json()["result"]["notes"])
    assert "stale" in notes and "Basel" in notes and "30 h" in notes
    fresh = httpx.get(f"{TELEMETRY}/weather-freshness", headers=app_headers(stack)).json()
    assert "Basel" in fresh["stale"]
    metrics = httpx.get(f"{TELEMETRY}/metrics").text
    assert float(next(line for line in metrics.splitlines()
                      if line.startswith("intraday_weather_stale_locations ")).split()[-1]) >= 1
    gateway.post("/devices/retire", json={"device_ids": ["stale-1"]})


def test_devices_without_recent_readings_are_shown(stack, gateway):
    now = floor_quarter_hour(datetime.now(UTC))
    added = gateway.post("/devices", json={"devices": [{"device_id": "quiet-1", "location": "Bern"},
                                                       {"device_id": "never-1", "location": "Bern"}]})
    assert added.status_code == 200
    old = [{"device_id": "quiet-1", "timestamp": isoformat_z(now - timedelta(hours=3, minutes=15 * k)),
            "power": 1.0} for k in range(8)]
    assert gateway.post("/readings", json={"readings": old}).status_code == 200
    f = gateway.get("/devices/freshness", params={"limit": 5}).json()
    stalest = {d["device_id"]: d for d in f["stalest"]}
    assert stalest["never-1"]["age_seconds"] is None and f["never_reported"] >= 1
    # Its newest quarter-hour ended 2 h 45 min before the current one began.
    assert 2.75 * 3600 <= stalest["quiet-1"]["age_seconds"] < 3 * 3600
    assert f["quiet"]["1h"] >= 2 and f["devices"] >= 92
    assert f["stalest"][0]["device_id"] == "never-1"  # never-reporting first, then the oldest
    status = intraday(stack["env"], "status")
    assert "no recent readings" in status and "never-1 (never reported)" in status
    # Printed to a tenth of an hour: 2.8 to 3.0 h, as the quarter-hour goes on (3.0 from 12 min past).
    shown = re.search(r"quiet-1 \((\d+\.\d) h\)", status)
    assert shown and 2.7 <= float(shown[1]) <= 3.0, status
    gateway.post("/devices/retire", json={"device_ids": ["quiet-1", "never-1"]})
