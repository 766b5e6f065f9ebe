"""The backtest's scores and report: each method's forecasts against the
actuals, the portfolio's totals and their band, the rolling recalibration
of the bands, origin by origin."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from intraday.forecasting import metrics, portfolio, recalibration
from intraday.forecasting.features import Panel
from intraday.forecasting.model import QuantileModel, device_locations
from intraday.forecasting.recalibration import Factors
from intraday.timeutil import isoformat_z

if TYPE_CHECKING:
    from intraday.forecasting.backtest import BacktestData

REPORT_SCHEMA = 3  # 2: the mean, the portfolio section; 3: the rolling recalibration
PORTFOLIO_LEVELS = (0.1, 0.5, 0.9)


def origin_days(panel: Panel, idx: list[int]) -> list[str]:
    """The UTC dates (ISO) of forecast starts."""
    return [str(d) for d in pd.DatetimeIndex([panel.timestamp(o) for o in idx]).strftime("%Y-%m-%d")]


def rolling_factors(model: QuantileModel, first: np.ndarray, actual: np.ndarray, locations: np.ndarray,
                    idx: list[int], horizon: int, days: list[str], totals: dict[str, Any] | None = None,
                    ) -> tuple[list[Factors], recalibration.Window]:
    """Per origin, the recalibration factors from the model's scored days
    before the first origin (its calibration span's, and any it was
    scored on since) and the origins before it whose every actual was in
    by then, scored against the first calibration's bands `first` (4,
    devices, origins, steps): P10, P50, P90, mean. Also the window with
    every origin's scores added (what the model would serve with next).
    `totals`: portfolio_forecasts of `first`, when the caller has them."""
    window = recalibration.Window([recalibration.Day.from_dict(d.to_dict())
                                   for d in model.recalibration.days if d.day < days[0]])
    if totals is None:
        totals, _ = portfolio_forecasts({"engine": first}, actual, model, locations)
    total, actual_total = totals["engine"], totals["actual"]
    D = first.shape[1]
    blocks = -(-horizon // model.block_steps)
    steps = np.arange(horizon)

    def score(j: int) -> None:
        window.add(recalibration.device_day(days[j], actual[:, j], first[0, :, j], first[1, :, j],
                                            first[2, :, j], steps, model.block_steps, blocks))
        if model.portfolio is not None:
            window.add(recalibration.portfolio_day(days[j], D, actual_total[j], total[0, j], total[1, j],
                                                   total[2, j], model.portfolio.block_steps, blocks))

    scored, out = 0, []
    for k, origin in enumerate(idx):
        while scored < k and idx[scored] + horizon <= origin:
            score(scored)
            scored += 1
        out.append(window.factors(before=days[k]))
    for j in range(scored, len(idx)):
        score(j)
    return out, window


def rescaled(first: np.ndarray, factors: list[Factors], block_steps: int) -> np.ndarray:
    """The cube with each origin's P10 and P90 rescaled by its factors."""
    out = first.copy()
    block = np.arange(first.shape[-1]) // block_steps
    for k, f in enumerate(factors):
        lo, hi = f.device_tails(block)
        out[0, :, k], out[2, :, k] = recalibration.widen(first[0, :, k], first[1, :, k], first[2, :, k],
                                                         lo, hi)
    return out


def recalibration_report(first: np.ndarray, rescaled: np.ndarray, actual: np.ndarray,
                          first_total: np.ndarray, totals: dict[str, np.ndarray], factors: list[Factors],
                          days: list[str], devices: int) -> dict[str, Any]:
    """The bands before and after the rolling recalibration, and its factors per origin."""
    def coverage(c: np.ndarray, y: np.ndarray) -> float | None:
        ok = ~np.isnan(y) & ~np.isnan(c[1])
        return float(((y >= c[0]) & (y <= c[2]))[ok].mean()) if ok.any() else None

    def mean_tails(where: np.ndarray | None) -> list[float] | None:
        return None if where is None else [round(float(x), 3) for x in np.asarray(where).mean(axis=0)]

    return {
        "method": "split-conformal on a rolling window of the last "
                  f"{recalibration.WINDOW_DAYS} scored days (the model's calibration span, then the "
                  "origins whose actuals were all in), per 6-hour block; factors scale the distance of "
                  "P10 and P90 from the median",
        "device_coverage": {"first_calibration": coverage(first, actual),
                            "rolling": coverage(rescaled, actual)},
        "portfolio_coverage": {"first_calibration": coverage(first_total, totals["actual"]),
                               "rolling": coverage(totals["engine"], totals["actual"])},
        "per_origin": [{"origin_day": d, "window_days": len(f.days),
                        "window": [f.days[0], f.days[-1]] if f.days else None,
                        "device": mean_tails(f.device), "portfolio": mean_tails(f.portfolio_tails(devices))}
                       for d, f in zip(days, factors, strict=True)],
    }


def portfolio_forecasts(cube: dict[str, np.ndarray], actual: np.ndarray, model: QuantileModel | None,
                        locations: np.ndarray, members: np.ndarray | None = None,
                        factors: list[np.ndarray | None] | None = None,
                        ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per method, (4, origins, steps) P10, P50, P90 and mean of the total
    of the portfolio's members in each cell, "actual" (origins, steps) their
    summed readings, and the members (devices, origins, steps): the devices
    with a reading and an engine forecast there. The engine's band comes
    from its portfolio calibration; the other methods' totals are their
    device values summed, a device's missing value taken from the seasonal
    fallback (a cell a method still cannot fill is NaN for it). `members`
    given: those devices instead (to score two models on the same cells).
    `factors`: per origin, the engine total's recalibration (see
    recalibration.py), or None."""
    engine = cube["engine"]
    if members is None:
        members = ~np.isnan(actual) & ~np.isnan(engine[3])
    present = np.asarray(members.any(axis=0))
    out = {"actual": np.where(present, np.where(members, actual, 0.0).sum(axis=0), np.nan)}
    fallback = cube.get("seasonal_quantiles")
    for name, c in cube.items():
        if name == "engine" and model is not None and model.portfolio is not None:
            total = np.empty((4, *present.shape))
            for o in range(present.shape[0]):
                masked = [np.where(members[:, o], c[k, :, o], np.nan) for k in range(4)]
                total[3, o], total[:3, o] = portfolio.quantiles(model.portfolio, masked[3], masked[0],
                                                                masked[2], locations, PORTFOLIO_LEVELS,
                                                                factors[o] if factors else None)
        else:
            if fallback is not None:
                c = np.where(np.isnan(c), fallback, c)
            total = np.where(members[None], c, 0.0).sum(axis=1)
            total[:, (np.isnan(c) & members[None]).any(axis=(0, 1))] = np.nan
        out[name] = np.where(present[None], total, np.nan)
    return out, members


def allocated(aggregate: np.ndarray, panel: Panel, first_origin: int, scored: np.ndarray) -> np.ndarray:
    """A forecast of the whole fleet's total scaled to the devices scored in
    each cell, by their share of the fleet's mean power before the first
    origin (what a forecaster that sees only the total would do)."""
    with np.errstate(invalid="ignore"):
        level = np.nan_to_num(np.nanmean(panel.power[:, :first_origin], axis=1))
    share = np.where(scored, level[:, None, None], 0.0).sum(axis=0) / max(level.sum(), 1e-12)
    allocated: np.ndarray = aggregate * share[None]
    return allocated


def portfolio_report(totals: dict[str, np.ndarray], cube: dict[str, np.ndarray], actual: np.ndarray,
                      members: np.ndarray, model: QuantileModel | None, panel: Panel) -> dict[str, Any]:
    y = totals["actual"]
    ok = ~np.isnan(y)
    for t in totals.values():
        ok &= ~np.isnan(t).any(axis=0)
    methods = {name: metrics.portfolio_scores(y[ok], *(t[k][ok] for k in range(4)))
               for name, t in totals.items() if name != "actual"}
    engine = methods["engine"]["wape"]
    locations = device_locations(panel)
    by_location = {}
    for loc in sorted(set(locations)):
        inside = locations == loc
        if inside.sum() == len(locations):
            continue
        sub, _ = portfolio_forecasts({"engine": cube["engine"][:, inside]}, actual[inside], model,
                                     locations[inside])
        sel = ~np.isnan(sub["actual"])
        by_location[str(loc)] = {"devices": int(inside.sum()), **metrics.portfolio_scores(
            sub["actual"][sel], *(sub["engine"][k][sel] for k in range(4)))}
    return {
        "devices": int(len(panel.device_ids)),
        "scoring": "per origin and interval, the total of the devices with a reading and an engine "
                   "forecast there (forecasts and actuals alike); other methods fill a device's missing "
                   "value from the seasonal fallback; `wape` and `bias` are of the mean",
        "cells": {"total": int(ok.size), "scored": int(ok.sum()),
                  "devices_per_cell_min": int(members.sum(axis=0)[ok].min()) if ok.any() else 0},
        "methods": methods,
        "comparison": {f"engine_wape_vs_{name}": engine / wape - 1.0
                       for name, m in methods.items()
                       if name != "engine" and (wape := m.get("wape")) and engine is not None},
        "locations": by_location,
    }


def backtest_report_of(data: BacktestData, model: QuantileModel, cube: dict[str, np.ndarray],
                       actual: np.ndarray, scored: np.ndarray, idx: list[int], H: int, issue_time: str,
                       timings: dict[str, float], source: dict[str, Any] | None) -> dict[str, Any]:
    """The report `intraday backtest` writes: every method's scores, overall and per device."""
    panel = data.panel
    methods: dict[str, dict[str, Any]] = {}
    for name, c in cube.items():
        per_device = {}
        for d, device in enumerate(panel.device_ids):
            m = scored[d]
            per_device[str(device)] = metrics.scores(actual[d][m], *(c[k, d][m] for k in range(4)))
        methods[name] = {
            "overall": metrics.scores(actual[scored], *(c[k][scored] for k in range(4))),
            "per_device": per_device,
        }
    engine = methods["engine"]["overall"]["wape"]
    comparison = {
        f"engine_wape_vs_{name}": engine / m["overall"]["wape"] - 1.0
        for name, m in methods.items() if name != "engine"
    }
    return {
        "schema_version": REPORT_SCHEMA,
        "generated_at": isoformat_z(datetime.now(UTC)),
        "data": {
            **(source or {}),
            "devices": int(len(panel.device_ids)),
            "start": isoformat_z(panel.start),
            "end": isoformat_z(panel.timestamp(panel.intervals)),
            "freq": f"{panel.step_minutes}min",
            "readings": int(data.readings),
            "resampled_from": data.resampled_from,
            "stuck_readings_dropped": int(data.stuck_dropped),
            "duplicates_dropped": int(data.duplicates_dropped),
            "temperature_forecast": data.temperature is not None,
        },
        "setup": {
            "horizon_intervals": H,
            "issue_time_utc": issue_time,
            "origins": [isoformat_z(panel.timestamp(o)) for o in idx],
            "training": "each method is trained once on the data before the first origin; "
                        "at every origin, features use only data before that origin",
            "engine_model": model.manifest.get("training", {}),
        },
        "cells": {"total": int(actual.size), "scored": int(scored.sum()),
                  "no_actual": int(np.isnan(actual).sum())},
        "timings": timings,
        "methods": methods,
        "comparison": comparison,
    }
