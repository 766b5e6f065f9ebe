"""One forecast, or a fleet's in one call: the trained model where one is
served, the seasonal baseline where none is.

This is what a DeviceActor calls on the hot path; it does no I/O. The caller
passes the device's telemetry window, its static attributes and the outdoor
temperature at its location on the window's grid: observations before
`forecast_start`, the latest issued forecast after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np

from intraday.errors import InsufficientHistory
from intraday.forecasting import baseline, fallback, portfolio
from intraday.forecasting.features import (
    DAY,
    MIN_HISTORY_INTERVALS,
    SCALE_DAYS,
    SHORT_HISTORY_DAYS,
    Panel,
    Rows,
)
from intraday.forecasting.model import QuantileModel
from intraday.forecasting.temperature import TemperatureSeries
from intraday.forecasting.types import Forecast, PortfolioForecast, TelemetryWindow
from intraday.timeutil import QUARTER_HOUR, to_utc

# The oldest reading the model's features read: SCALE_DAYS (the scale, the
# 7-day lag and profile) and a day for the +-30 min smoothing (a fleet shard
# is shipped only these days of its windows).
READ_DAYS = SCALE_DAYS + 1

FALLBACK_NOTE = "fallback: seasonal baseline, no trained model is served"
UNCALIBRATED_NOTE = ("no portfolio calibration (seasonal fallback): the band is the sum of the device "
                     "bands, far wider than the total's")


@dataclass(frozen=True)
class NeedsWholeWindow:
    """The result for a device given a cut window (TelemetryWindow.cut) that
    the model cannot forecast: its fallback, its own daily profile, reads
    the whole window; the caller forecasts it again from that."""

    device_id: str


def model_version(model: QuantileModel | None) -> str:
    return model.manifest.get("version", "unversioned") if model is not None else baseline.MODEL_VERSION


def forecast(
    model: QuantileModel | None,
    window: TelemetryWindow,
    forecast_start: datetime,
    horizon_intervals: int,
    attributes: dict[str, Any] | None = None,
    temperature: np.ndarray | None = None,
    baseline_days: int = 14,
) -> Forecast:
    """P10/P50/P90 and the mean for one device. `temperature[i]` is the
    outdoor temperature of interval `window.start + i * 15 min`, covering at
    least the horizon (NaN where unknown); None: no temperature at all."""
    (result,) = forecast_many(model, [window], forecast_start, horizon_intervals, [attributes],
                              [temperature], baseline_days)
    if isinstance(result, InsufficientHistory):
        raise result
    assert isinstance(result, Forecast)  # NeedsWholeWindow comes only of cut windows
    return result


def profile_forecast(window: TelemetryWindow, forecast_start: datetime, horizon_intervals: int,
                     version: str) -> Forecast | None:
    """A device the model cannot forecast but whose window holds enough of
    its own readings: its daily profile (fallback.own_profile), with a
    note. None when even that is too little."""
    origin = window.index_of(forecast_start)
    past = window.values[: max(origin, 0)]
    midnight = window.start.replace(hour=0, minute=0, second=0, microsecond=0)
    first = int((window.start - midnight) / QUARTER_HOUR)  # the window's first quarter-hour of the day
    table = fallback.own_profile(past, first, horizon_intervals, DAY)
    if table is None:
        return None
    ok = ~np.isnan(past)
    last = window.start + int(np.flatnonzero(ok)[-1] + 1) * QUARTER_HOUR
    return Forecast(
        device_id=window.device_id, forecast_start=forecast_start, model_version=version,
        p10=table[0], p50=table[1], p90=table[2], mean=table[3],
        data_window_start=window.start, data_window_end=min(window.end, forecast_start),
        history_days=float(ok.sum() / DAY),
        notes=(fallback.profile_note(f"{last:%Y-%m-%dT%H:%MZ}", ok.sum() / DAY),))


def from_peers(results: list[Any], windows: list[TelemetryWindow],
               attributes: Sequence[dict[str, Any] | None], forecast_start: datetime, version: str) -> None:
    """Devices left without a forecast (InsufficientHistory) get one from
    the model's forecasts of the others in `results` (fallback.from_peers),
    in place; with too few peers they keep their InsufficientHistory."""
    model_made = [i for i, r in enumerate(results) if isinstance(r, Forecast) and not _is_fallback(r)]
    if len(model_made) < fallback.MIN_PEERS:
        return
    peers = np.stack([[getattr(results[i], k) for i in model_made] for k in ("p10", "p50", "p90", "mean")])
    rated = np.array([_rated(attributes[i]) or np.nan for i in model_made], float)
    for i, r in enumerate(results):
        if not isinstance(r, InsufficientHistory):
            continue
        own = _rated(attributes[i])
        table = fallback.from_peers(peers, fallback.rated_ratio(own, rated))
        if table is None:
            continue
        scaled = own is not None and bool(np.isfinite(rated).any())
        results[i] = Forecast(
            device_id=windows[i].device_id, forecast_start=forecast_start, model_version=version,
            p10=table[0], p50=table[1], p90=table[2], mean=table[3],
            data_window_start=windows[i].start, data_window_end=min(windows[i].end, forecast_start),
            history_days=float(np.sum(~np.isnan(windows[i].values)) / DAY),
            notes=(fallback.peer_note(len(model_made), scaled),))


def _is_fallback(f: Forecast) -> bool:
    return fallback.made_by_fallback(f.notes)


def _rated(attributes: dict[str, Any] | None) -> float | None:
    raw = (attributes or {}).get("rated_power_kw")
    try:
        value = float(raw)  # type: ignore[arg-type]  # None raises TypeError: not rated
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def forecast_many(
    model: QuantileModel | None,
    windows: list[TelemetryWindow],
    forecast_start: datetime,
    horizon_intervals: int,
    attributes: Sequence[dict[str, Any] | None],
    temperature: list[np.ndarray | None],
    baseline_days: int = 14,
    peers: bool = True,
) -> list[Forecast | InsufficientHistory | NeedsWholeWindow]:
    """`forecast` for many devices in one batch, and the same numbers bit
    for bit whatever the batch (features and trees work row by row): a
    Forecast per device, or the InsufficientHistory it would raise. Windows
    that share a start and length go through the model together. The one
    exception: a device with too few readings of its own for any forecast
    gets its peers' in the batch (fallback.from_peers), when there are
    enough of them (`peers=False`: the caller calls `from_peers` itself).
    Given cut windows, a device the model cannot forecast comes back as
    NeedsWholeWindow."""
    forecast_start = to_utc(forecast_start)
    out: list[Forecast | InsufficientHistory | NeedsWholeWindow | None] = [None] * len(windows)
    if model is None:
        for i, w in enumerate(windows):
            try:
                f = baseline.seasonal_quantiles(w, forecast_start, horizon_intervals, days=baseline_days)
                out[i] = replace(f, notes=(FALLBACK_NOTE,))
            except InsufficientHistory as e:
                out[i] = profile_forecast(w, forecast_start, horizon_intervals, baseline.MODEL_VERSION) or e
        return out  # type: ignore[return-value]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, w in enumerate(windows):
        groups.setdefault((w.start, len(w.values), temperature[i] is not None), []).append(i)
    for (*_, has_temp), members in groups.items():
        for i, result in zip(members, _batch(model, [windows[i] for i in members], forecast_start,
                                             horizon_intervals, [attributes[i] or {} for i in members],
                                             [t for i in members if (t := temperature[i]) is not None]
                                             if has_temp else None),
                             strict=True):
            out[i] = result
    if peers:
        from_peers(out, windows, attributes, forecast_start, model_version(model))
    return out  # type: ignore[return-value]


def _batch(model: QuantileModel, windows: list[TelemetryWindow], forecast_start: datetime,
           horizon_intervals: int, attributes: list[dict[str, Any]],
           temperature: list[np.ndarray] | None) -> list[Forecast | InsufficientHistory | NeedsWholeWindow]:
    """Devices whose windows share one grid, all with or all without temperature."""
    # The features read nothing older than READ_DAYS before the start: the
    # panel holds only that (a window cut there remembers where the device's
    # first reading was), whether the window came whole (an actor's) or
    # already cut (a fleet shard's, shipped that way): the same panel, the
    # same numbers bit for bit.
    first = max(windows[0].index_of(forecast_start) - READ_DAYS * DAY, 0)
    whole = windows
    windows = [w.cut(first) for w in windows]
    first_window = windows[0]
    n, length = len(windows), len(first_window.values)
    origin = first_window.index_of(forecast_start)
    temp = None
    if temperature is not None:
        width = max(len(t) for t in temperature) - first
        temp = np.full((n, width), np.nan)
        for d, t in enumerate(temperature):
            temp[d, : len(t) - first] = t[first:]
    panel = Panel(np.array([w.device_id for w in windows]), first_window.start,
                  np.stack([w.values for w in windows]), None if temp is None else temp[:, :length],
                  countries=np.array([a.get("country") or "DE" for a in attributes]),
                  first_reading=np.array([w.first_index() for w in windows], dtype=np.int64))
    source = TemperatureSeries(np.arange(n, dtype=np.int64), temp) if temp is not None else None
    static = np.vstack([model.vocabulary.encode_one(a) for a in attributes])
    p = model.predict_rows(panel, Rows.grid(np.arange(n), np.full(n, origin), horizon_intervals),
                           source, static)
    shape = (n, horizon_intervals)
    p10, p50, p90, mean = (x.reshape(shape) for x in (p.p10, p.p50, p.p90, p.mean))
    history_days = p.history_days.reshape(shape)[:, 0]
    results: list[Forecast | InsufficientHistory | NeedsWholeWindow] = []
    for d, (window, uncut) in enumerate(zip(windows, whole, strict=True)):
        if np.isnan(p50[d]).any():
            if uncut.is_cut:  # its own profile needs the whole window (the caller fetches it)
                results.append(NeedsWholeWindow(window.device_id))
                continue
            at = uncut.index_of(forecast_start)
            seen = int(np.sum(~np.isnan(uncut.values[max(at - SCALE_DAYS * DAY, 0) : at])))
            results.append(profile_forecast(uncut, forecast_start, horizon_intervals, model_version(model))
                           or InsufficientHistory(
                f"device {uncut.device_id!r}: {seen} quarter-hour readings in the 7 days before "
                f"{forecast_start:%Y-%m-%dT%H:%MZ} and {int(np.sum(~np.isnan(uncut.values[:at])))} in "
                f"its window; a forecast needs at least {MIN_HISTORY_INTERVALS}"))
            continue
        history = float(history_days[d])
        notes: tuple[str, ...] = ()
        if history < SHORT_HISTORY_DAYS:
            notes += (f"short history: {history:.1f} days of readings; the band is calibrated on "
                      "forecasts with short histories and is wider",)
        ahead = None if temp is None else temp[d, origin : origin + horizon_intervals]
        if ahead is None or np.isnan(ahead).all():
            notes += ("no temperature forecast for the horizon: the forecast cannot react to the weather",)
        elif np.isnan(ahead).any():
            first_gap = int(np.argmax(np.isnan(ahead)))
            until = f" (to {forecast_start + first_gap * QUARTER_HOUR:%Y-%m-%dT%H:%MZ})" if first_gap else ""
            notes += (f"temperature forecast for {(~np.isnan(ahead)).sum() / 4:g} of the "
                      f"{horizon_intervals / 4:g} h ahead only{until}: beyond it the forecast cannot react "
                      "to the weather",)
        results.append(Forecast(
            device_id=window.device_id,
            forecast_start=forecast_start,
            model_version=model_version(model),
            p10=p10[d], p50=p50[d], p90=p90[d], mean=mean[d],
            data_window_start=window.start,
            data_window_end=min(window.end, forecast_start),
            history_days=history,
            notes=notes,
        ))
    return results


def until_retirement(forecast: Forecast, retired_at: str | datetime | None) -> Forecast:
    """A device retired inside the horizon draws nothing from its
    retirement on: those intervals are 0 (mean and quantiles), and a note
    says so. Unchanged when it is not retired within the horizon."""
    if not retired_at:
        return forecast
    at = to_utc(datetime.fromisoformat(retired_at) if isinstance(retired_at, str) else retired_at)
    first = max(0, -(-(at - forecast.forecast_start) // QUARTER_HOUR))  # the first interval from it on
    if first >= forecast.horizon_intervals:
        return forecast
    after = np.arange(forecast.horizon_intervals) >= first
    return replace(forecast, p10=np.where(after, 0.0, forecast.p10), p50=np.where(after, 0.0, forecast.p50),
                   p90=np.where(after, 0.0, forecast.p90), mean=np.where(after, 0.0, forecast.mean),
                   notes=(*forecast.notes, f"retired at {at:%Y-%m-%dT%H:%MZ}: "
                                                            "nothing forecast from then on"))


def forecast_fleet(
    model: QuantileModel, panel: Panel, forecast_start: datetime, horizon_intervals: int,
    temperature: TemperatureSeries | None = None,
) -> dict[str, np.ndarray]:
    """Every device of `panel` in one batch: arrays (devices, horizon) of
    p10, p50, p90 and mean (NaN rows: not enough history), and history_days."""
    origin = panel.index_of(forecast_start)
    n = len(panel.device_ids)
    p = model.predict_rows(panel, Rows.grid(np.arange(n), np.full(n, origin), horizon_intervals), temperature)
    shape = (n, horizon_intervals)
    return {"p10": p.p10.reshape(shape), "p50": p.p50.reshape(shape), "p90": p.p90.reshape(shape),
            "mean": p.mean.reshape(shape), "history_days": p.history_days.reshape(shape)[:, 0]}


def forecast_portfolio(model: QuantileModel | None, forecasts: list[Forecast],
                       locations: list[str] | None = None) -> PortfolioForecast:
    """The total of the devices' `forecasts` (one forecast start and
    horizon): the sum of their means, and the quantiles of the total from
    the model's portfolio calibration, given each device's location (its
    errors move with its neighbours'). Without a calibrated model (the
    seasonal fallback) the band is the sum of the device bands and says so."""
    if not forecasts:
        raise ValueError("a portfolio needs at least one device forecast")
    first = forecasts[0]
    if any(f.forecast_start != first.forecast_start or f.horizon_intervals != first.horizon_intervals
           for f in forecasts):
        raise ValueError("the device forecasts of a portfolio must share forecast_start and horizon")
    part = portfolio_partial(model, forecasts, locations)
    versions = sorted({f.model_version for f in forecasts})
    return portfolio_from(model, part, first.forecast_start, tuple(f.device_id for f in forecasts), versions)


def portfolio_partial(model: QuantileModel | None, forecasts: list[Forecast],
                      locations: list[str] | None = None) -> portfolio.Partial:
    """What these device forecasts contribute to a total (see portfolio.Partial):
    a fleet forecast adds up its shards' partials."""
    stack = {k: np.stack([getattr(f, k) for f in forecasts]) for k in ("p10", "p50", "p90", "mean")}
    where = np.array(locations if locations is not None else [""] * len(forecasts), dtype=object)
    return portfolio.partial(model.portfolio if model is not None else None, stack["mean"], stack["p10"],
                             stack["p50"], stack["p90"], where)


def portfolio_from(model: QuantileModel | None, part: portfolio.Partial, forecast_start: datetime,
                   device_ids: tuple[str, ...], versions: list[str]) -> PortfolioForecast:
    """The PortfolioForecast of a total from its Partial; `versions` are the
    model versions of the device forecasts in it."""
    notes: tuple[str, ...] = ()
    if len(versions) > 1:
        notes += (f"device forecasts from {len(versions)} model versions: {', '.join(versions)}",)
    calibration = model.portfolio if model is not None else None
    if calibration is None:
        levels = np.array([0.1, 0.5, 0.9])
        mean, table = part.mean.copy(), part.quantile_sums.copy()
        notes += (UNCALIBRATED_NOTE,)
    else:
        assert model is not None  # calibration is the model's
        levels = portfolio.LEVELS
        # Rescaled by the recent days' scores of a total of this size, when
        # the model's window has them (recalibration.py).
        mean, table = portfolio.quantiles_of(calibration, part, levels,
                                             model.factors.portfolio_tails(len(device_ids)))
    return PortfolioForecast(forecast_start, model_version(model), device_ids, mean, levels, table, notes)
