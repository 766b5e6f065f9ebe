"""Features of a forecast row: one device, one `forecast_start`, one interval
of the horizon.

Everything here is pure NumPy over a `Panel` (many devices on one regular
grid: quarter-hours when serving, any step that divides a day in backtests
and training), so the same code builds millions of training rows, a fleet's
batch and one device's 96 rows on the hot path. Features keep their meaning
in time whatever the step: "1 day ago", "the last 4 hours", "lead in hours".

No look-ahead: a row whose forecast starts at grid index `origin` reads power
and observed temperature only at indices `< origin` (and `>= history_start`,
which training uses to simulate short histories). The temperature for the
target interval is the *issued forecast* the caller passes in, as known at
`forecast_start`. Calendar and static attributes are known in advance.

Power features are divided by the device's `scale` (its mean power over the
last 7 days before `forecast_start`), so one global model serves a 2 kW house
and a 15 kW apartment block; predictions are multiplied back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from intraday.timeutil import INTERVALS_PER_DAY, to_utc

if TYPE_CHECKING:
    from intraday.forecasting.temperature import TemperatureSource

# Steps of the serving grid (quarter-hours); a Panel of another step has its
# own (`Panel.per_day`, `per_hour`).
DAY = INTERVALS_PER_DAY
WEEK = 7 * DAY
SCALE_DAYS = 7
MIN_HISTORY_HOURS = 12  # fewer valid readings than 12 h's worth in the week before forecast_start: none
MIN_HISTORY_INTERVALS = MIN_HISTORY_HOURS * DAY // 24
SERVING_STEP_MINUTES = 15  # the market's delivery interval: the serving grid
STEPS_MINUTES = (5, 10, 15, 20, 30, 60)  # grid steps the engine takes: they divide a day and an hour
SHORT_HISTORY_DAYS = 7.0  # below this a forecast says so, and its band comes from short-history calibration
STUCK_MIN_RUN = 8  # this many identical quarter-hours (2 h) at a level the device does not hold: stuck
STUCK_TOP_PERCENTILE = 99.0  # a device's full power, for the stuck rule ...
STUCK_TOP_SHARE = 0.9  # ... the share of it at which a plateau is taken as running flat out ...
STUCK_LOW_SHARE = 0.05  # ... and below which as standby (a stuck reading that low costs little)
HEATING_BASE_C = 15.0  # heating-degree base for the daily mean temperature
SCALE_FLOOR_KW = 0.01

# Local time of a country's devices (calendar features); devices of other
# countries use UTC and no public holidays.
COUNTRY_TZ = {
    "DE": "Europe/Berlin", "AT": "Europe/Vienna", "CH": "Europe/Zurich", "NL": "Europe/Amsterdam",
    "BE": "Europe/Brussels", "FR": "Europe/Paris", "DK": "Europe/Copenhagen", "PL": "Europe/Warsaw",
    "CZ": "Europe/Prague", "IT": "Europe/Rome", "ES": "Europe/Madrid", "SE": "Europe/Stockholm",
    "NO": "Europe/Oslo", "FI": "Europe/Helsinki", "GB": "Europe/London", "IE": "Europe/Dublin",
}

# Static attributes: numeric ones as given, categorical ones coded by the
# vocabulary learned in training (unknown values -> missing).
NUMERIC_ATTRIBUTES = ("rated_power_kw", "heated_area_m2", "setpoint_c")
CATEGORICAL_ATTRIBUTES = ("building_type", "heat_pump_type", "location")

ORIGIN_FEATURES = (
    "lead_hours", "last", "mean_1h", "mean_4h", "mean_24h", "std_24h", "history_days", "missing_24h",
    "temp_obs_last", "temp_obs_24h", "temp_obs_7d",
)
ROW_FEATURES = (
    "time_of_day_h", "weekday", "holiday", "lag_1d", "lag_1d_smooth", "lag_2d", "lag_7d",
    "profile_mean", "profile_smooth", "profile_std", "profile_max",
    "temp_fc", "temp_fc_24h", "hdd_fc", "hdd_fc_24h", "temp_change_1d",
    "hdd_ratio_1d", "hdd_ratio_7d", "level_weather", "lag_1d_weather", "profile_weather",
)
FEATURES = ORIGIN_FEATURES + ROW_FEATURES + NUMERIC_ATTRIBUTES + CATEGORICAL_ATTRIBUTES
FEATURE_VERSION = 3  # 3: lead and time of day in hours, so any grid step means the same


@dataclass(frozen=True)
class Panel:
    """Power (kW) of many devices on one regular grid of `step_minutes`
    (quarter-hours unless said otherwise), with what is known about each device.

    `power[d, i]` is device `device_ids[d]` in the interval starting at
    `start + i * step`, NaN where no (trusted) reading exists.
    `outdoor_temp[d, i]` is the *observed* temperature at its location.
    `attributes` has one row per device with the static columns, `country`
    included; missing columns are simply unknown.
    """

    device_ids: np.ndarray
    start: datetime
    power: np.ndarray
    outdoor_temp: np.ndarray | None = None
    attributes: pd.DataFrame | None = None
    countries: np.ndarray | None = None  # per device; default: attributes["country"], else DE
    step_minutes: int = SERVING_STEP_MINUTES
    # Per device, the index of its first reading when the panel was cut from
    # longer windows (negative: before `start`); None: read from `power`.
    first_reading: np.ndarray | None = None
    _cum: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", to_utc(self.start))
        object.__setattr__(self, "power", np.asarray(self.power, dtype=np.float64))
        if self.power.ndim != 2 or self.power.shape[0] != len(self.device_ids):
            raise ValueError(f"power must be (devices, intervals), got {self.power.shape}")
        if self.step_minutes not in STEPS_MINUTES:
            raise ValueError(f"a grid step of {self.step_minutes} min: the engine takes {STEPS_MINUTES} min")

    @property
    def intervals(self) -> int:
        return int(self.power.shape[1])

    @property
    def step(self) -> timedelta:
        return timedelta(minutes=self.step_minutes)

    @property
    def per_hour(self) -> int:
        return 60 // self.step_minutes

    @property
    def per_day(self) -> int:
        return 1440 // self.step_minutes

    def timestamp(self, i: int) -> datetime:
        return self.start + int(i) * self.step

    def index_of(self, t: datetime) -> int:
        return int((to_utc(t) - self.start) / self.step)

    def cumulative(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per device, prefix sums of values, squares and counts of a series
        ('power' or 'outdoor_temp') with a leading zero column, so the mean
        of [a, b) is (s[b] - s[a]) / (n[b] - n[a])."""
        if name not in self._cum:
            x = self.power if name == "power" else self.outdoor_temp
            assert x is not None, "no outdoor_temp in this panel"
            ok = ~np.isnan(x)
            z = np.where(ok, x, 0.0)
            shape = (x.shape[0], x.shape[1] + 1)
            out = (np.zeros(shape), np.zeros(shape), np.zeros(shape, np.int64))
            np.cumsum(z, axis=1, out=out[0][:, 1:])
            np.cumsum(z * z, axis=1, out=out[1][:, 1:])
            np.cumsum(ok, axis=1, out=out[2][:, 1:])
            self._cum[name] = out
        cum: tuple[np.ndarray, np.ndarray, np.ndarray] = self._cum[name]
        return cum

    def first_valid(self) -> np.ndarray:
        """Per device, the index of its first reading (intervals if none;
        negative: before `start`, in a panel cut from longer windows)."""
        if self.first_reading is not None:
            return self.first_reading
        if "first" not in self._cum:
            ok = ~np.isnan(self.power)
            self._cum["first"] = np.where(ok.any(axis=1), ok.argmax(axis=1), self.intervals)
        first: np.ndarray = self._cum["first"]
        return first


def stuck_min_run(step_minutes: int) -> int:
    """Identical readings in a row that make a stuck sensor: 2 h of them,
    and at least 4 (an hourly meter repeats two values more easily)."""
    return max(STUCK_MIN_RUN * 15 // step_minutes, 4)


def drop_stuck(power: np.ndarray, min_run: int = STUCK_MIN_RUN) -> tuple[np.ndarray, int]:
    """Power with stuck-sensor readings set to NaN, and how many were.

    A sensor that hangs repeats its last value, usually one the device only
    passed through. `min_run` identical readings in a row are taken for a
    stuck sensor unless the value is a level the device genuinely holds:
    its standby floor (zero, or anything under 5 % of its full power), its
    full power (the top of its range), or a
    plateau it returns to elsewhere (a fixed-speed compressor cycling on and
    off, at least `min_run` more readings at exactly that value). The first
    reading of a stuck run is kept."""
    power = np.array(power, dtype=np.float64, copy=True)
    d, n = power.shape
    if n < min_run:
        return power, 0
    empty = np.isnan(power).all(axis=1, keepdims=True)
    floor = np.nanpercentile(np.where(empty, 0.0, power), 5, axis=1)
    top = np.nanpercentile(np.where(empty, 0.0, power), STUCK_TOP_PERCENTILE, axis=1)
    # Runs of equal neighbours on the flattened matrix; a NaN column between
    # devices breaks every run at the row boundary (NaN != NaN).
    flat = np.concatenate([power, np.full((d, 1), np.nan)], axis=1).ravel()
    same = flat[1:] == flat[:-1]
    edges = np.diff(np.concatenate([[0], same.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # same[starts:ends] True
    long = (ends - starts + 1) >= min_run
    width = n + 1
    stuck = []
    for s, e in zip(starts[long], ends[long], strict=True):
        row, value = s // width, flat[s]
        low = max(floor[row] * 1.05 + 1e-3, STUCK_LOW_SHARE * top[row])
        if value <= low or value >= STUCK_TOP_SHARE * top[row]:
            continue
        elsewhere = np.count_nonzero(power[row] == value) - (e - s + 1)
        if elsewhere < min_run:
            stuck.append((s, e))
    for s, e in stuck:
        flat[s + 1 : e + 1] = np.nan
    marked = sum(e - s for s, e in stuck)
    return flat.reshape(d, width)[:, :n].copy(), marked


@lru_cache(maxsize=64)
def _calendar_year(country: str, year: int) -> np.ndarray:
    """(3, quarter-hours of the UTC year): local time of day in hours (to the
    quarter-hour), weekday (0 = Monday) and public-holiday flag, computed
    once per country and year (so a forecast on the hot path only indexes
    into it)."""
    t = pd.date_range(pd.Timestamp(year=year, month=1, day=1, tz="UTC"),
                      pd.Timestamp(year=year + 1, month=1, day=1, tz="UTC"), freq="15min", inclusive="left")
    tz = COUNTRY_TZ.get(country)
    local = t.tz_convert(ZoneInfo(tz)) if tz else t
    out = np.empty((3, len(t)), dtype=np.float32)
    out[0] = local.hour + (local.minute // 15) / 4
    out[1] = local.weekday
    out[2] = 0
    if tz:
        import holidays

        days = holidays.country_holidays(country, years=[year - 1, year, year + 1])
        out[2] = np.isin(local.tz_localize(None).normalize().to_numpy().astype("datetime64[D]"),
                         np.array(sorted(days.keys()), dtype="datetime64[D]"))
    return out


def calendar(country: str, times: np.ndarray) -> np.ndarray:
    """(3, n) calendar of UTC interval starts `times` (datetime64[m]), each
    taken at its quarter-hour."""
    years = times.astype("datetime64[Y]")
    out = np.empty((3, len(times)), np.float32)
    for y in np.unique(years):
        sel = years == y
        first = y.astype("datetime64[m]")
        out[:, sel] = _calendar_year(country, int(str(y)))[:, (times[sel] - first).astype(np.int64) // 15]
    return out


@dataclass(frozen=True)
class Vocabulary:
    """Codes of the categorical attributes, fixed at training time."""

    values: dict[str, list[str]]

    @classmethod
    def learn(cls, attributes: pd.DataFrame | None) -> Vocabulary:
        values = {}
        for col in CATEGORICAL_ATTRIBUTES:
            if attributes is not None and col in attributes:
                values[col] = sorted(str(v) for v in attributes[col].dropna().unique())
            else:
                values[col] = []
        return cls(values)

    def encode_one(self, attributes: dict[str, Any]) -> np.ndarray:
        """(1, numeric + categorical) of one device, without pandas (the hot path)."""
        out = np.full((1, len(NUMERIC_ATTRIBUTES) + len(CATEGORICAL_ATTRIBUTES)), np.nan, np.float32)
        for j, col in enumerate(NUMERIC_ATTRIBUTES):
            try:
                out[0, j] = float(attributes[col])
            except (KeyError, TypeError, ValueError):
                pass
        for j, col in enumerate(CATEGORICAL_ATTRIBUTES, start=len(NUMERIC_ATTRIBUTES)):
            value = attributes.get(col)
            if value is not None and str(value) in self.values[col]:
                out[0, j] = self.values[col].index(str(value))
        return out

    def encode(self, attributes: pd.DataFrame | None, n: int) -> np.ndarray:
        """(n, numeric + categorical) float32 of the static attributes."""
        out = np.full((n, len(NUMERIC_ATTRIBUTES) + len(CATEGORICAL_ATTRIBUTES)), np.nan, np.float32)
        if attributes is None:
            return out
        for j, col in enumerate(NUMERIC_ATTRIBUTES):
            if col in attributes:
                out[:, j] = pd.to_numeric(attributes[col], errors="coerce").to_numpy(np.float32)
        for j, col in enumerate(CATEGORICAL_ATTRIBUTES, start=len(NUMERIC_ATTRIBUTES)):
            if col in attributes:
                codes = {v: k for k, v in enumerate(self.values[col])}
                out[:, j] = [codes.get(str(v), np.nan) for v in attributes[col]]
        return out


@dataclass
class Rows:
    """Forecast rows: device row in the panel, grid index of its
    `forecast_start`, step of the horizon, and where its usable history
    begins (0 = all of the panel)."""

    device: np.ndarray
    origin: np.ndarray
    horizon: np.ndarray
    # None: all of the panel (zeros, set in __post_init__).
    history_start: np.ndarray = None  # type: ignore[assignment]
    _pair: np.ndarray | None = field(default=None, repr=False)
    _pair_first: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.device = np.asarray(self.device, np.int64)
        self.origin = np.asarray(self.origin, np.int64)
        self.horizon = np.asarray(self.horizon, np.int64)
        if self.history_start is None:
            self.history_start = np.zeros_like(self.origin)
        self.history_start = np.asarray(self.history_start, np.int64)

    def __len__(self) -> int:
        return len(self.origin)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """The distinct (device, origin, history_start) of the rows and,
        per row, its pair (None: every row is its own). Features of the
        forecast start are computed once per pair."""
        if self._pair is not None:
            first = self._pair_first
            return self.device[first], self.origin[first], self.history_start[first], self._pair
        return self.device, self.origin, self.history_start, None

    @property
    def target(self) -> np.ndarray:
        target: np.ndarray = self.origin + self.horizon
        return target

    @classmethod
    def grid(cls, devices: np.ndarray, origins: np.ndarray, horizon: int) -> Rows:
        """Every step of `horizon` for each (device, origin) pair."""
        devices, origins = np.asarray(devices), np.asarray(origins)
        h = np.arange(horizon)
        return cls(np.repeat(devices, horizon), np.repeat(origins, horizon), np.tile(h, len(origins)),
                   _pair=np.repeat(np.arange(len(origins)), horizon),
                   _pair_first=np.arange(len(origins)) * horizon)


def _clip(x: Any, lo: Any, hi: Any) -> Any:
    """np.clip without its Python-level overhead (hot path: one device)."""
    return np.minimum(np.maximum(x, lo), hi)


def _window_mean(cum: tuple[np.ndarray, np.ndarray, np.ndarray], dev: np.ndarray, a: np.ndarray,
                 b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s, q, n = cum
    cnt = n[dev, b] - n[dev, a]
    total = s[dev, b] - s[dev, a]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, total / np.maximum(cnt, 1), np.nan)
        var = np.where(cnt > 1, (q[dev, b] - q[dev, a]) / np.maximum(cnt, 1) - mean * mean, np.nan)
    return mean, np.sqrt(np.maximum(var, 0.0)), cnt


def _gather(x: np.ndarray, dev: np.ndarray, idx: np.ndarray, lo: np.ndarray | int,
            hi: np.ndarray) -> np.ndarray:
    """x[dev, idx] where lo <= idx < hi (and inside x), else NaN."""
    ok = (idx >= lo) & (idx < np.minimum(hi, x.shape[1]))
    out = x[dev, _clip(idx, 0, x.shape[1] - 1)]
    return np.where(ok, out, np.nan)


def _scales(panel: Panel, dev: np.ndarray, origin: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Mean power over the last SCALE_DAYS before each origin (NaN when
    fewer than MIN_HISTORY_INTERVALS readings exist in that span)."""
    a = _clip(np.maximum(origin - SCALE_DAYS * panel.per_day, lo), 0, panel.intervals)
    b = _clip(origin, 0, panel.intervals)
    mean, _, cnt = _window_mean(panel.cumulative("power"), dev, a, b)
    enough = MIN_HISTORY_HOURS * panel.per_hour
    return np.where(cnt >= enough, np.maximum(mean, SCALE_FLOOR_KW), np.nan)


def design_matrix(
    panel: Panel, rows: Rows, vocabulary: Vocabulary, temperature: TemperatureSource | None = None,
    static: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(X, scale): float32 features in FEATURES order and each row's scale.

    `temperature` gives the issued temperature forecast for a target
    interval as known at the row's origin (no source: unknown); `static`
    the encoded attributes per panel device (computed if not given)."""
    n = len(rows)
    dev, origin, h, lo = rows.device, rows.origin, rows.horizon, rows.history_start
    target = origin + h
    # Column-major: features are written one column at a time.
    X = np.empty((n, len(FEATURES)), dtype=np.float32, order="F")
    col = {name: j for j, name in enumerate(FEATURES)}

    pdev, porigin, plo, pair = rows.pairs()
    start, scale, fc24 = _start_features(panel, pdev, porigin, plo, temperature)
    if pair is not None:
        start, scale, fc24 = start[pair], scale[pair], fc24[pair]
    X[:, 1 : len(ORIGIN_FEATURES)] = start
    X[:, col["lead_hours"]] = h / panel.per_hour

    # Calendar of the target interval in the device's local time.
    country_names, country = np.unique(_countries(panel), return_inverse=True)
    country = country[dev]
    times = np.datetime64(panel.start.replace(tzinfo=None), "m") + target * panel.step_minutes
    cal = np.empty((3, n), np.float32)
    for c, name in enumerate(country_names):
        sel = country == c
        cal[:, sel] = calendar(str(name), times[sel])
    X[:, col["time_of_day_h"]] = cal[0]
    X[:, col["weekday"]] = cal[1]
    X[:, col["holiday"]] = cal[2]

    # The same time of day on earlier days: the latest day whose value is
    # known at forecast_start is k1 = 1 + h // (steps per day) days back.
    day, half_hour = panel.per_day, 30 // panel.step_minutes
    k1 = 1 + h // day
    p, T = panel.power, panel.intervals
    cum = panel.cumulative("power")
    X[:, col["lag_1d"]] = _gather(p, dev, target - day * k1, lo, origin) / scale
    X[:, col["lag_2d"]] = _gather(p, dev, target - day * (k1 + 1), lo, origin) / scale
    X[:, col["lag_7d"]] = _gather(p, dev, target - 7 * day, lo, origin) / scale
    with np.errstate(invalid="ignore"), _quiet():
        # days[k]: the target's quarter-hour k days before the latest known
        # day; smooth[k]: the mean of the same +-30 min (known part only),
        # which evens out on/off cycling.
        back = [target - day * (k1 + k) for k in range(7)]
        days = np.stack([_gather(p, dev, t, lo, origin) for t in back])
        smooth = []
        for t in back:
            a = _clip(np.maximum(t - half_hour, lo), 0, T)
            smooth.append(_window_mean(cum, dev, a, _clip(np.minimum(t + half_hour + 1, origin), a, T))[0])
        X[:, col["lag_1d_smooth"]] = smooth[0] / scale
        X[:, col["profile_mean"]] = np.nanmean(days, axis=0) / scale
        X[:, col["profile_smooth"]] = np.nanmean(smooth, axis=0) / scale
        X[:, col["profile_std"]] = np.nanstd(days, axis=0) / scale
        X[:, col["profile_max"]] = np.nanmax(days, axis=0) / scale

    temp_fc = temperature.forecast(dev, origin, target) if temperature is not None else np.full(n, np.nan)
    if panel.outdoor_temp is not None:
        temp_lag = _gather(panel.outdoor_temp, dev, target - day * k1, 0, origin)
    else:
        temp_lag = np.full(n, np.nan)
    X[:, col["temp_fc"]] = temp_fc
    X[:, col["temp_fc_24h"]] = fc24
    X[:, col["hdd_fc"]] = np.maximum(HEATING_BASE_C + 3.0 - temp_fc, 0.0)
    X[:, col["hdd_fc_24h"]] = np.maximum(HEATING_BASE_C - fc24, 0.0)
    X[:, col["temp_change_1d"]] = temp_fc - temp_lag
    # Heating demand follows heating degrees, and trees do not multiply: the
    # recent levels rescaled by tomorrow's heating degrees over those seen.
    hdd_next = np.maximum(HEATING_BASE_C - fc24, 1.0)
    ratio_1d = hdd_next / np.maximum(HEATING_BASE_C - X[:, col["temp_obs_24h"]], 1.0)
    ratio_7d = hdd_next / np.maximum(HEATING_BASE_C - X[:, col["temp_obs_7d"]], 1.0)
    X[:, col["hdd_ratio_1d"]] = ratio_1d
    X[:, col["hdd_ratio_7d"]] = ratio_7d
    X[:, col["level_weather"]] = X[:, col["mean_24h"]] * ratio_1d
    X[:, col["lag_1d_weather"]] = X[:, col["lag_1d_smooth"]] * ratio_1d
    X[:, col["profile_weather"]] = X[:, col["profile_smooth"]] * ratio_7d

    if static is None:
        static = vocabulary.encode(panel.attributes, len(panel.device_ids))
    X[:, len(ORIGIN_FEATURES) + len(ROW_FEATURES):] = static[dev]
    return X, scale


def _start_features(
    panel: Panel, dev: np.ndarray, origin: np.ndarray, lo: np.ndarray, temperature: TemperatureSource | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What is known at each forecast start: ORIGIN_FEATURES after
    "horizon" (power ones in units of the scale), the scale, and the mean
    temperature forecast over the first day."""
    P, T = len(origin), panel.intervals
    out = np.empty((P, len(ORIGIN_FEATURES) - 1))
    col = {name: j - 1 for j, name in enumerate(ORIGIN_FEATURES)}
    scale = _scales(panel, dev, origin, lo)
    cum = panel.cumulative("power")
    b = _clip(origin, 0, T)

    def recent(k: int, series: tuple[np.ndarray, np.ndarray, np.ndarray] = cum,
               floor: np.ndarray = lo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _window_mean(series, dev, _clip(np.maximum(origin - k, floor), 0, T), b)

    hour, day = panel.per_hour, panel.per_day
    # The last reading, if it is at most an hour old.
    last = np.full(P, np.nan)
    for back in range(hour, 0, -1):
        v = _gather(panel.power, dev, origin - back, lo, origin)
        last = np.where(np.isnan(v), last, v)
    out[:, col["last"]] = last / scale
    out[:, col["mean_1h"]] = recent(hour)[0] / scale
    out[:, col["mean_4h"]] = recent(4 * hour)[0] / scale
    m24, s24, c24 = recent(day)
    out[:, col["mean_24h"]] = m24 / scale
    out[:, col["std_24h"]] = s24 / scale
    out[:, col["missing_24h"]] = 1.0 - c24 / day
    first = panel.first_valid()[dev]
    # Training's simulated short histories start at lo; a first reading
    # before a cut panel's start (negative) counts as it is.
    first = np.where(first < 0, first, np.maximum(first, lo))
    out[:, col["history_days"]] = _clip((origin - first) / day, 0, 28)
    if panel.outdoor_temp is not None:
        tcum, zero = panel.cumulative("outdoor_temp"), np.zeros_like(lo)
        out[:, col["temp_obs_last"]] = recent(hour, tcum, zero)[0]
        out[:, col["temp_obs_24h"]] = recent(day, tcum, zero)[0]
        out[:, col["temp_obs_7d"]] = recent(7 * day, tcum, zero)[0]
    else:
        out[:, [col["temp_obs_last"], col["temp_obs_24h"], col["temp_obs_7d"]]] = np.nan
    if temperature is None:
        fc24 = np.full(P, np.nan)
    else:
        # The forecast's mean over the first day of the horizon, from 8
        # points 3 h apart (from 1.5 h ahead).
        points = [temperature.forecast(dev, origin, origin + (90 + 180 * k) // panel.step_minutes)
                  for k in range(8)]
        with _quiet():
            fc24 = np.nanmean(points, axis=0)
    return out, scale, fc24


class _quiet:
    """Silence NumPy's 'mean of empty slice' warnings (all-NaN columns are
    expected: a new device has no week-old lag)."""

    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._w.__exit__(*exc)


def _countries(panel: Panel) -> np.ndarray:
    if panel.countries is not None:
        return panel.countries
    if panel.attributes is not None and "country" in panel.attributes:
        return panel.attributes["country"].fillna("").astype(str).to_numpy()
    return np.full(len(panel.device_ids), "DE", dtype=object)
