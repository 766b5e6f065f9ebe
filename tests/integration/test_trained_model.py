"""A trained model through the whole path: `intraday train --promote`, then
forecasts served by it (named in the result and the audit row), its artifact
cached in Redis, and `intraday warm`."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta

from intraday.timeutil import floor_quarter_hour, isoformat_z
from tests.integration.conftest import ROOT


def intraday(env: dict, *args: str) -> str:
    r = subprocess.run([str(ROOT / ".venv/bin/intraday"), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"intraday {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def forecast(gateway, device: str, start: datetime) -> dict:
    r = gateway.post("/forecast/intraday", params={"wait": "true"},
                     json={"device_id": device, "forecast_start": isoformat_z(start)})
    assert r.status_code == 200, r.text
    return r.json()["result"]


def test_a_promoted_model_serves_forecasts(stack, gateway, pg, rds, tmp_path):
    env, data_dir = stack["env"], stack["data_dir"]
    start = floor_quarter_hour(datetime.now(UTC)) + timedelta(hours=2)
    before = forecast(gateway, "hp-0005", start)
    assert before["model_version"] == "baseline"

    data = tmp_path / "fleet.parquet"
    intraday(env, "fleet", "generate", "--devices", "24", "--days", "14", "--faults", "none",
             "--out", str(data))
    out = intraday(env, "train", "--data", str(data), "--train-rows", "40000", "--trees", "30", "--promote")
    version = out.split()[1].rstrip(":")
    assert "promoted" in out
    try:
        time.sleep(1.5)  # the forecaster re-reads the pointer every second in this stack
        result = forecast(gateway, "hp-0005", start)
        assert result["model_version"] == version
        # The same request under a newly promoted model is a new forecast.
        assert result["forecast_id"] != before["forecast_id"]
        assert result["notes"] == [] and result["history_days"] >= 7
        for i in result["intervals"]:
            assert 0 <= i["p10"] <= i["p50"] <= i["p90"] and i["mean"] >= 0
        audited = pg.execute("SELECT model_version FROM forecast_requests WHERE request_id = %s",
                             (result["forecast_id"],)).fetchone()[0]
        assert audited == version

        # The artifact is cached in the state store (Redis) for other replicas.
        assert rds.hget(f"forecaster||model-artifact-{version}", "data") is not None

        warm = intraday(env, "warm", "--top", "3", "--device", "hp-0020")
        assert f"model {version}" in warm and "4 device actors warm" in warm
        assert rds.hget("forecaster||DeviceActor||hp-0020||device", "data") is not None
    finally:
        (data_dir / "models" / "PROMOTED").unlink()
