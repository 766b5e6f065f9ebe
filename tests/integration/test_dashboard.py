"""The trader's dashboard (`/ui`) against the running stack: its data routes
ask for a key as the API does, and in headless Chromium (Debian's, through
its WebDriver) the page draws the portfolio's band, and a decision appears
after a price tick without a reload. The screenshots are kept in the test
stack's data directory (`screenshots/`)."""

from __future__ import annotations

import io
import shutil
import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from PIL import Image

from intraday.telemetry import window_batch
from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, isoformat_z
from tests.stack import api_key, dapr_headers, eventually, intraday

BAND_RGB = np.array([209, 224, 239])  # the P10-P90 fill, rgba(46, 116, 181, 0.22) on white

pytestmark = pytest.mark.skipif(shutil.which("chromedriver") is None or shutil.which("chromium") is None,
                                reason="make setup installs chromium and chromium-driver")


def _key(stack, scopes: str) -> str:
    return intraday(stack["env"], "keys", "create", f"ui-{scopes.replace(':', '-')}", "--scopes", scopes,
                    "--if-missing").strip().splitlines()[-1]


def test_the_page_is_served_and_its_data_needs_a_key_with_forecast_read(stack):
    with httpx.Client(base_url="http://127.0.0.1:8000", timeout=30) as anon:
        page = anon.get("/ui")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        script = next(line for line in page.text.splitlines() if "plotly-" in line).split('"')[1]
        js = anon.get(script)
        assert js.status_code == 200 and len(js.content) > 1_000_000 and b"plotly" in js.content[:2000]
        assert "immutable" in js.headers["cache-control"]
        assert anon.get("/ui/static/dashboard.js").status_code == 200
        assert anon.get("/ui/static/secrets.json").status_code == 422  # not a page's file name
        for path in ("/ui/api/overview", "/ui/api/events", "/ui/api/devices/hp-0001"):
            r = anon.get(path)
            assert r.status_code == 401 and "API key" in r.json()["detail"], path
        publisher = _key(stack, "prices:publish")
        r = anon.get("/ui/api/overview", headers={"authorization": f"Bearer {publisher}"})
        assert r.status_code == 403 and "forecast:read" in r.json()["detail"]
        r = anon.get("/ui/api/devices/hp-9999", headers={"authorization": f"Bearer {api_key(stack)}"})
        assert r.status_code == 404 and "hp-9999" in r.json()["detail"]


@pytest.fixture(scope="module")
def scored(gateway) -> dict:
    """The fleet's forecast of a day that is over, scored: what the live
    accuracy card shows (`GET /scores`). Made before the overview's own
    fleet forecast, which is then the newest."""
    start = floor_quarter_hour(datetime.now(UTC)) - timedelta(days=3)
    assert gateway.post("/forecast/fleet", params={"wait": "true"}, json={
        "forecast_start": isoformat_z(start), "horizon_hours": 24}).status_code == 200
    assert gateway.post("/scores/run").status_code == 200
    return gateway.get("/scores").json()["live"]


def test_the_overview_is_what_the_audit_store_and_telemetry_hold(stack, gateway, pg, scored):
    # Not from the next quarter-hour: the trading service's fleet forecasts
    # start there, and a later test wants its own made for its price move.
    start = floor_quarter_hour(datetime.now(UTC)) + timedelta(hours=3)
    r = gateway.post("/forecast/fleet", params={"wait": "true"},
                     json={"horizon_hours": 24, "forecast_start": isoformat_z(start)})
    assert r.status_code == 200, r.text
    fleet = r.json()["result"]
    o = gateway.get("/ui/api/overview").json()
    p = o["portfolio"]
    assert p["forecast_id"] == fleet["forecast_id"] and p["devices"] == 24 and len(p["intervals"]) == 96
    assert [i["p50"] for i in p["intervals"]] == [i["p50"] for i in fleet["portfolio"]["intervals"]]
    # The measured total: per quarter-hour, the sum of the devices' readings
    # (as the forecaster's windows give them), from a day before the forecast.
    start = datetime.fromisoformat(o["actuals"]["start"])
    measured = o["actuals"]["total_kw"]
    # To now: the forecast starts three hours ahead, so 21 hours and the quarter-hour under way.
    assert start == datetime.fromisoformat(p["forecast_start"]) - timedelta(hours=24)
    assert start + len(measured) * QUARTER_HOUR == floor_quarter_hour(datetime.now(UTC)) + QUARTER_HOUR
    window = httpx.post("http://127.0.0.1:3501/v1.0/invoke/telemetry/method/windows", timeout=30,
                        headers=dapr_headers(stack),
                        json={"device_ids": [f"hp-{k:04d}" for k in range(1, 25)],
                              "start": isoformat_z(start),
                              "end": isoformat_z(start + len(measured) * QUARTER_HOUR)})
    assert window.status_code == 200, window.text
    values = window_batch.decode(window.content, 24).values
    reported = ~np.isnan(values)
    assert o["actuals"]["devices"] == reported.sum(axis=0).tolist()
    assert [v is None for v in measured] == (~reported.any(axis=0)).tolist()
    got = np.array([np.nan if v is None else v for v in measured])
    summed = np.where(reported.any(axis=0), np.nansum(values, axis=0), np.nan)
    np.testing.assert_allclose(got, summed, atol=2e-3)
    assert sum(v is not None for v in measured) > 0.8 * len(measured)  # the demo fleet's last day
    assert o["model"]["versions"] >= 0 and "trainings" in o["model"]
    assert set(o["marks"]) == {"forecast", "decision", "price", "training", "scores"}
    assert o["scores"]["live"] == scored and scored["forecasts"] >= 1


@pytest.fixture
def browser(stack):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1700"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def _shot(driver, stack, name: str) -> Image.Image:
    out = stack["data_dir"] / "screenshots"
    out.mkdir(exist_ok=True)
    driver.save_screenshot(str(out / f"{name}.png"))
    return Image.open(out / f"{name}.png").convert("RGB")


def _not_blank(image: Image.Image) -> None:
    pixels = np.asarray(image).reshape(-1, 3)
    colours = len(np.unique(pixels[:: max(1, len(pixels) // 200_000)], axis=0))
    assert colours > 200 and pixels.std() > 20, f"a blank-looking screenshot: {colours} colours"


def test_the_dashboard_draws_the_band_and_a_decision_arrives_live(stack, gateway, pg, browser, scored):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    week = scored["week"]
    browser.get("http://127.0.0.1:8000/ui")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "key").is_displayed())
    browser.find_element(By.ID, "key").send_keys("ik_wrong_key")
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    # A wrong key: the reason the gateway gave, and the board stays closed.
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "login-error").text)
    assert not browser.find_element(By.ID, "board").is_displayed()

    key = browser.find_element(By.ID, "key")
    key.clear()
    key.send_keys(api_key(stack))
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.intraday.renders") >= 1)
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "live").text == "live")
    # Live accuracy: the week pooled, as GET /scores has it.
    row = browser.find_element(By.CSS_SELECTOR, "#scores tbody tr.week").text
    assert f"{100 * week['portfolio']['coverage']:.1f} %" in row and \
        f"{100 * week['device']['wape']:.1f} %" in row, row
    # The band: the portfolio chart holds the P10-P90 trace over the forecast's 96 intervals, drawn.
    traces = browser.execute_script(
        "return document.getElementById('portfolio-chart').data.map(t => [t.name, t.x.length])")
    assert ["P10–P90", 96] in traces and any(name.startswith("actual") for name, _ in traces), traces
    chart = Image.open(io.BytesIO(browser.find_element(By.ID, "portfolio-chart").screenshot_as_png))
    band = np.abs(np.asarray(chart.convert("RGB")).astype(int) - BAND_RGB).sum(axis=-1) < 12
    assert band.mean() > 0.02, f"the band covers {band.mean():.1%} of the chart"

    # A price tick that moves the rule: the decision appears without a reload.
    rows = len(browser.find_elements(By.CSS_SELECTOR, "#decisions tbody tr"))
    last = pg.execute("SELECT price_eur_mwh FROM price_ticks WHERE verdict = 'move'"
                      " ORDER BY received_at DESC LIMIT 1").fetchone()
    price = round((last[0] if last else 90.0) + 41.25, 2)
    time.sleep(1.5)  # past the rule's debounce (1 s on the test stack)
    events = browser.execute_script("return window.intraday.events")
    assert gateway.post("/prices", json={"price_eur_mwh": price}).status_code == 202
    decision = eventually(lambda: pg.execute(
        "SELECT decision_id FROM trade_decisions WHERE price_eur_mwh = %s", (price,)).fetchone(), timeout=90)
    assert decision is not None, "the tick made no decision"
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, f"#decisions tbody tr[data-id='{decision[0]}']"))
    assert browser.execute_script("return window.intraday.events") > events  # it came by the event stream
    assert len(browser.find_elements(By.CSS_SELECTOR, "#decisions tbody tr")) >= min(rows + 1, 20)
    row = browser.find_element(By.CSS_SELECTOR, f"#decisions tbody tr[data-id='{decision[0]}']")
    assert f"{price:.2f}" in row.text
    moves = browser.execute_script(
        "return document.getElementById('prices-chart').data[1].y")
    assert price in moves
    # The device drill-down: a device's forecast against its readings.
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return window.intraday.device && document.getElementById('device-chart').data.length"))
    names = browser.execute_script("return document.getElementById('device-chart').data.map(t => t.name)")
    assert "actual" in names and "P10–P90" in names, names
    _not_blank(_shot(browser, stack, "dashboard"))
