"""Value types of the forecasting domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np

from intraday.timeutil import QUARTER_HOUR, isoformat_z, to_utc

QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class TelemetryWindow:
    """A device's mean power (kW) per quarter-hour on a regular grid.

    `values[i]` is the interval starting at `start + i * 15 min`; NaN marks a
    gap (no measurement), so gaps are explicit rather than missing rows.
    Values are held at float32 precision (a tenth of a milliwatt at 1 kW),
    so a window shipped as float32 (the fleet path's binary windows) is the
    same window as one read as JSON (the actor's).

    A window `cut` from a longer one keeps what the features need of the
    part it dropped: where the device's first reading was (`first_reading`,
    relative to this start, negative when before it) and how many of the
    dropped intervals had none (`missing_before`).
    """

    device_id: str
    start: datetime
    values: np.ndarray
    first_reading: int | None = None
    missing_before: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", to_utc(self.start))
        values = np.asarray(self.values, dtype=np.float64)
        object.__setattr__(self, "values", values.astype(np.float32).astype(np.float64))

    @property
    def end(self) -> datetime:
        """Exclusive end: the start of the first interval not covered."""
        return self.start + len(self.values) * QUARTER_HOUR

    @property
    def missing(self) -> int:
        """Intervals without a reading, those cut off included."""
        return int(np.isnan(self.values).sum()) + self.missing_before

    @property
    def is_cut(self) -> bool:
        return self.first_reading is not None

    def first_index(self) -> int:
        """The index of the device's first reading (negative: before this
        window's start; len(values): none at all)."""
        if self.first_reading is not None:
            return self.first_reading
        ok = ~np.isnan(self.values)
        return int(ok.argmax()) if ok.any() else len(self.values)

    def cut(self, i: int) -> TelemetryWindow:
        """The window from index `i` on, remembering what came before."""
        if i <= 0:
            return self
        first = self.first_index()
        return TelemetryWindow(self.device_id, self.start + i * QUARTER_HOUR, self.values[i:],
                               first_reading=first - i if first < len(self.values) else len(self.values) - i,
                               missing_before=self.missing_before + int(np.isnan(self.values[:i]).sum()))

    def index_of(self, t: datetime) -> int:
        return int((to_utc(t) - self.start) / QUARTER_HOUR)

    def until(self, end: datetime) -> TelemetryWindow:
        """The intervals that start before `end`."""
        n = max(0, min(len(self.values), self.index_of(end)))
        return TelemetryWindow(self.device_id, self.start, self.values[:n])

    def merged(self, other: TelemetryWindow, keep_intervals: int) -> TelemetryWindow:
        """This window extended by `other` (newer values win where both have
        data), trimmed to the most recent `keep_intervals` intervals."""
        start = min(self.start, other.start)
        end = max(self.end, other.end)
        out = np.full(int((end - start) / QUARTER_HOUR), np.nan)
        for w in (self, other):
            i = int((w.start - start) / QUARTER_HOUR)
            seg = out[i : i + len(w.values)]
            np.copyto(seg, w.values, where=~np.isnan(w.values))
        out = out[-keep_intervals:]
        return TelemetryWindow(self.device_id, end - len(out) * QUARTER_HOUR, out)


@dataclass(frozen=True)
class Forecast:
    """P10/P50/P90 and the expected value (`mean`) of mean power (kW) per
    interval, from `forecast_start`. The means add up across devices; the
    quantiles do not (see `portfolio.py`)."""

    device_id: str
    forecast_start: datetime
    model_version: str
    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray
    mean: np.ndarray
    data_window_start: datetime
    data_window_end: datetime
    # How much history the forecast stood on, and notes a trader should see
    # (a short history, the fallback model).
    history_days: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def horizon_intervals(self) -> int:
        return len(self.p50)

    def to_dict(self) -> dict[str, Any]:
        """The wire form shared by workflow output, pub/sub and the API."""
        bounds = interval_bounds(self.forecast_start, self.horizon_intervals)
        return {
            "device_id": self.device_id,
            "forecast_start": isoformat_z(self.forecast_start),
            "horizon_intervals": self.horizon_intervals,
            "model_version": self.model_version,
            "unit": "kW",
            "data_window": {
                "start": isoformat_z(self.data_window_start),
                "end": isoformat_z(self.data_window_end),
            },
            "history_days": None if self.history_days is None else round(float(self.history_days), 2),
            "notes": list(self.notes),
            "intervals": [
                {
                    "interval_start": s,
                    "interval_end": e,
                    "p10": a,
                    "p50": b,
                    "p90": c,
                    "mean": m,
                }
                for (s, e), a, b, c, m in zip(bounds, self.p10.tolist(), self.p50.tolist(),
                                              self.p90.tolist(), self.mean.tolist(), strict=True)
            ],
        }


    def to_result(self, forecast_id: str, missing_intervals: int | None, requested_by: str,
                  requested_at: str, trace_id: str | None = None) -> dict[str, Any]:
        """The wire form as a request's result: with its id, the gaps of the
        data window, who asked and the trace that made it (what the workflow
        returns, the audit store serves and `forecasts` carries)."""
        d = self.to_dict()
        d["data_window"]["missing_intervals"] = missing_intervals
        return {"forecast_id": forecast_id, **d, "requested_by": requested_by, "requested_at": requested_at,
                "trace_id": trace_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Forecast:
        """The inverse of `to_dict` (what a consumer of the wire form holds)."""
        intervals = d["intervals"]

        def column(name: str) -> np.ndarray:
            return np.array([i[name] for i in intervals], dtype=np.float64)

        return cls(
            device_id=d["device_id"],
            forecast_start=datetime.fromisoformat(d["forecast_start"]),
            model_version=d["model_version"],
            p10=column("p10"), p50=column("p50"), p90=column("p90"), mean=column("mean"),
            data_window_start=datetime.fromisoformat(d["data_window"]["start"]),
            data_window_end=datetime.fromisoformat(d["data_window"]["end"]),
            history_days=d.get("history_days"),
            notes=tuple(d.get("notes", ())),
        )


@lru_cache(maxsize=64)
def interval_bounds(start: datetime, intervals: int) -> tuple[tuple[str, str], ...]:
    """(start, end) of each quarter-hour from `start`, as wire timestamps:
    the same for every device of a batch, so formatted once."""
    starts = [start + i * QUARTER_HOUR for i in range(intervals + 1)]
    text = [isoformat_z(t) for t in starts]
    return tuple(zip(text[:-1], text[1:], strict=True))


@dataclass(frozen=True)
class PortfolioForecast:
    """The total of a set of devices per interval (kW): `mean`, the sum of
    the device means (what adds up), and quantiles of the total's
    distribution at `levels` (rows of `quantiles`), from which any level is
    read by `quantile`. See `portfolio.py` for how the band is built."""

    forecast_start: datetime
    model_version: str
    device_ids: tuple[str, ...]
    mean: np.ndarray
    levels: np.ndarray
    quantiles: np.ndarray  # (levels, intervals), non-decreasing down the levels
    notes: tuple[str, ...] = ()

    def quantile(self, level: float) -> np.ndarray:
        """The total's `level` quantile per interval, interpolated between
        the levels held (and held flat beyond them)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"a quantile level lies strictly between 0 and 1, not {level}")
        k = int(np.clip(np.searchsorted(self.levels, level) - 1, 0, max(len(self.levels) - 2, 0)))
        if len(self.levels) == 1:
            return np.asarray(self.quantiles[0].copy())
        lo, hi = self.levels[k], self.levels[k + 1]
        w = float(np.clip((level - lo) / (hi - lo), 0.0, 1.0))
        return np.asarray((1 - w) * self.quantiles[k] + w * self.quantiles[k + 1])

    @property
    def p10(self) -> np.ndarray:
        return self.quantile(0.1)

    @property
    def p50(self) -> np.ndarray:
        return self.quantile(0.5)

    @property
    def p90(self) -> np.ndarray:
        return self.quantile(0.9)

    @property
    def horizon_intervals(self) -> int:
        return len(self.mean)

    def to_dict(self, table: bool = False) -> dict[str, Any]:
        """The wire form: per interval p10/p50/p90 and mean; with `table`,
        also every level held (`levels`, `quantile_table`), from which
        `from_dict` restores the forecast and any quantile of the total."""
        starts = [self.forecast_start + i * QUARTER_HOUR for i in range(self.horizon_intervals)]
        extra = {"levels": [float(x) for x in self.levels],
                 "quantile_table": self.quantiles.tolist()} if table else {}
        return {
            **extra,
            "forecast_start": isoformat_z(self.forecast_start),
            "horizon_intervals": self.horizon_intervals,
            "model_version": self.model_version,
            "devices": len(self.device_ids),
            "unit": "kW",
            "notes": list(self.notes),
            "intervals": [
                {"interval_start": isoformat_z(s), "interval_end": isoformat_z(s + QUARTER_HOUR),
                 "p10": float(a), "p50": float(b), "p90": float(c), "mean": float(m)}
                for s, a, b, c, m in zip(starts, self.p10, self.p50, self.p90, self.mean, strict=True)
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], device_ids: tuple[str, ...] = ()) -> PortfolioForecast:
        """The inverse of `to_dict`: exact with the quantile table, else from
        p10/p50/p90 (levels between them interpolated)."""
        intervals = d["intervals"]
        mean = np.array([i["mean"] for i in intervals], dtype=np.float64)
        if "quantile_table" in d:
            levels = np.array(d["levels"], dtype=np.float64)
            table = np.array(d["quantile_table"], dtype=np.float64).reshape(len(levels), len(mean))
        else:
            levels = np.array([0.1, 0.5, 0.9])
            table = np.array([[i[k] for i in intervals] for k in ("p10", "p50", "p90")], dtype=np.float64)
        return cls(datetime.fromisoformat(d["forecast_start"]), d["model_version"], tuple(device_ids),
                   mean, levels, table, tuple(d.get("notes", ())))


@dataclass(frozen=True)
class FleetWindow:
    """Mean power (kW) of many devices on one quarter-hour grid:
    `values[d, i]` is device `device_ids[d]` in the interval starting at
    `start + i * 15 min`, NaN where no measurement arrived."""

    device_ids: np.ndarray
    start: datetime
    values: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", to_utc(self.start))

    @property
    def end(self) -> datetime:
        return self.start + int(self.values.shape[1]) * QUARTER_HOUR

    def device(self, row: int) -> TelemetryWindow:
        return TelemetryWindow(str(self.device_ids[row]), self.start, self.values[row])
