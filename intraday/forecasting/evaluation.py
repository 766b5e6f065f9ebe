"""Champion and challenger: train a candidate on the data before a held-out
span, score it and the served model on the same held-out cells, and decide.

What is judged is what the trader buys: the **portfolio** (the total of the
devices with a reading in each cell), by the mean of its P10/P50/P90 pinball
losses, and only by more than noise: the candidate's daily portfolio losses
must be lower than the champion's by a one-sided Diebold-Mariano test at
PROMOTION_ALPHA. Device scores are recorded beside it, not decided on.

The held-out span is the last `holdout_days` daily forecasts (at
`ISSUE_TIME`, a day ahead each) of the training window. The candidate learns
only from data before the first of them, and that model is what is
promoted, so tomorrow's challenger is scored on days today's champion never
saw. A champion trained on some of the held-out days (one trained on a whole
window, by `intraday train`) is scored only on the days after its data where
there are any; where there are none its score is in-sample, which favours
it, and the record says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from intraday.errors import InvalidRequest
from intraday.forecasting import backtest, backtest_report, baseline, metrics
from intraday.forecasting.features import Rows
from intraday.forecasting.model import Progress, QuantileModel, TrainingConfig, device_locations, fit
from intraday.forecasting.recalibration import NO_FACTORS, Factors
from intraday.timeutil import isoformat_z

ISSUE_TIME = "10:00"
DECIDED_ON = "portfolio pinball_mean"  # lower is better ...
# ... by more than noise: a one-sided Diebold-Mariano test on the daily
# portfolio pinball losses of the held-out days must find the candidate's
# lower at this level (a week of days is little evidence; a tenth is the
# chance of promoting an equal model by luck the desk accepts).
PROMOTION_ALPHA = 0.10
TEST = ("Diebold-Mariano, one-sided, Harvey-Leybourne-Newbold small-sample correction, "
        "on the daily portfolio pinball loss of the held-out days")


def holdout_origins(data: backtest.BacktestData, days: int, horizon: int) -> list[int]:
    """Grid indices of the held-out forecasts: the last `days` days' at
    ISSUE_TIME whose horizon ends inside the data."""
    return backtest.origin_indices(data.panel, days, horizon, ISSUE_TIME)


MIN_TRAINING_DAYS = 10  # a week of lags for the features, two days to train on, one to calibrate


def check_coverage(data: backtest.BacktestData, holdout_days: int) -> None:
    """InvalidRequest, with the reason, when the window holds readings on too
    few days to train on and hold `holdout_days` out (a window before the
    fleet's data, or one the telemetry has gaps through)."""
    panel = data.panel
    days = panel.intervals // panel.per_day
    seen = ~np.isnan(panel.power[:, : days * panel.per_day]).all(axis=0)
    covered = int(seen.reshape(days, panel.per_day).any(axis=1).sum()) if days else 0
    need = MIN_TRAINING_DAYS + holdout_days
    if covered < need:
        raise InvalidRequest(
            f"the training window {isoformat_z(panel.timestamp(0))} .. "
            f"{isoformat_z(panel.timestamp(panel.intervals))} has readings on {covered} of the window's "
            f"{days} days; training needs at least {need} ({MIN_TRAINING_DAYS} + {holdout_days} held out)")


def train_candidate(data: backtest.BacktestData, config: TrainingConfig, holdout_days: int,
                    progress: Progress | None = None) -> tuple[QuantileModel, list[int]]:
    """A model trained on the data before the held-out span (on all of it
    with `holdout_days` 0), and the held-out origins."""
    check_coverage(data, holdout_days)
    origins = holdout_origins(data, holdout_days, config.horizon) if holdout_days else []
    end = origins[0] if origins else data.panel.intervals
    model = fit(backtest._truncated(data.panel, end), data.temperature, config, progress)
    if origins:
        model.manifest["training"]["holdout"] = {
            "days": holdout_days, "first_forecast_start": isoformat_z(data.panel.timestamp(origins[0])),
            "last_forecast_start": isoformat_z(data.panel.timestamp(origins[-1]))}
        # The held-out days are out of sample for it: its bands are served
        # rescaled by how it did on them (recalibration.py).
        first, actual = _cube(model, data, origins, config.horizon, NO_FACTORS), _actual(data, origins,
                                                                                          config.horizon)
        _, window = backtest_report.rolling_factors(model, first, actual, device_locations(data.panel),
                                                    origins,
                                             config.horizon, backtest_report.origin_days(data.panel, origins))
        model.rescore(window)
    model.manifest.setdefault("validation", {})["recalibration"] = model.factors.summary()
    return model, origins


def _actual(data: backtest.BacktestData, origins: list[int], horizon: int) -> np.ndarray:
    """(devices, origins, horizon) readings."""
    D = len(data.panel.device_ids)
    target = Rows.grid(np.repeat(np.arange(D), len(origins)), np.tile(np.array(origins), D), horizon)
    return np.asarray(data.actual[target.device, target.target].reshape(D, len(origins), horizon))


def _cube(model: QuantileModel | None, data: backtest.BacktestData, origins: list[int],
          horizon: int, factors: Factors | None = None) -> np.ndarray:
    """(4, devices, origins, horizon) P10, P50, P90, mean; the seasonal
    fallback's for no model (what is served when none is promoted)."""
    panel = data.panel
    D, n = len(panel.device_ids), len(origins)
    if model is None:
        cube = np.empty((4, D, n, horizon))
        for k, o in enumerate(origins):
            cube[:, :, k, :] = baseline.seasonal_quantile_matrix(panel.power, o, horizon,
                                                                 per_day=panel.per_day)[0]
        return cube
    rows = Rows.grid(np.repeat(np.arange(D), n), np.tile(np.array(origins), D), horizon)
    pred = model.predict_rows(panel, rows, data.temperature, factors=factors)
    return np.stack([pred.p10, pred.p50, pred.p90, pred.mean]).reshape(4, D, n, horizon)


def _trained_until(model: QuantileModel | None) -> datetime | None:
    end = (model.manifest.get("training", {}).get("data_end") if model is not None else None)
    return datetime.fromisoformat(end.replace("Z", "+00:00")) if end else None


@dataclass
class Evaluation:
    origins: list[str]  # the held-out forecast starts both were scored at
    candidate: dict[str, Any]  # {"portfolio": scores, "devices": scores}
    champion: dict[str, Any]
    champion_in_sample: bool  # the champion had seen every held-out day in training
    test: dict[str, Any] | None = None  # the Diebold-Mariano test on the daily portfolio pinball losses

    def to_dict(self) -> dict[str, Any]:
        return {"decided_on": DECIDED_ON, "origins": self.origins, "candidate": self.candidate,
                "champion": self.champion, "champion_in_sample": self.champion_in_sample,
                "test": self.test}


def evaluate(candidate: QuantileModel, champion: QuantileModel | None, data: backtest.BacktestData,
             origins: list[int], horizon: int) -> Evaluation:
    """Both models on the same held-out cells: those with a reading and a
    forecast of each (the champion's days restricted as the module says)."""
    if not origins:
        raise InvalidRequest("no held-out days to evaluate on")
    panel = data.panel
    until = _trained_until(champion)
    fresh = [o for o in origins if until is None or panel.timestamp(o) >= until]
    in_sample = not fresh
    use = fresh or origins
    actual = _actual(data, use, horizon)
    locations = device_locations(panel)
    days = backtest_report.origin_days(panel, use)

    def rolling(model: QuantileModel | None) -> tuple[np.ndarray, list[Any] | None]:
        """Each held-out day's forecasts as they would have been served:
        bands rescaled by the days scored before it."""
        first = _cube(model, data, use, horizon, NO_FACTORS)
        if model is None:
            return first, None
        factors, _ = backtest_report.rolling_factors(model, first, actual, locations, use, horizon, days)
        return (backtest_report.rescaled(first, factors, model.block_steps),
                [f.portfolio_tails(len(panel.device_ids)) for f in factors])

    (cand, cand_factors), (champ, champ_factors) = rolling(candidate), rolling(champion)
    members = ~np.isnan(actual) & ~np.isnan(cand[3]) & ~np.isnan(champ[3])

    def scored(cube: np.ndarray, model: QuantileModel | None, factors: list[Any] | None) -> dict[str, Any]:
        totals, _ = backtest_report.portfolio_forecasts({"engine": cube}, actual, model, locations, members,
                                                        factors)
        y, t = totals["actual"], totals["engine"]
        ok = ~np.isnan(y) & ~np.isnan(t).any(axis=0)
        daily = metrics.daily_pinball(np.where(ok, y, np.nan), t[0], t[1], t[2])
        return {"portfolio": metrics.portfolio_scores(y[ok], *(t[k][ok] for k in range(4))),
                "devices": metrics.scores(actual[members], *(cube[k][members] for k in range(4))),
                "daily_portfolio_pinball": [None if np.isnan(v) else round(float(v), 6) for v in daily]}

    new, old = scored(cand, candidate, cand_factors), scored(champ, champion, champ_factors)
    test = metrics.diebold_mariano(np.array(new["daily_portfolio_pinball"], float),
                                   np.array(old["daily_portfolio_pinball"], float))
    return Evaluation([isoformat_z(panel.timestamp(o)) for o in use], new, old, in_sample,
                      {"name": TEST, "alpha": PROMOTION_ALPHA, **test})


def decide(evaluation: Evaluation, force: bool = False) -> tuple[bool, str]:
    """(promote?, why): a lower portfolio pinball loss wins only when the
    Diebold-Mariano test on the held-out days' daily losses finds it lower
    at PROMOTION_ALPHA; `force` promotes whatever the scores."""
    new = evaluation.candidate["portfolio"].get("pinball_mean")
    old = evaluation.champion["portfolio"].get("pinball_mean")
    p = (evaluation.test or {}).get("p_value")
    if new is None or old is None:
        verdict, better = "no held-out cell could be scored", False
    else:
        change = new / old - 1.0 if old else float("inf")
        better = new < old and p is not None and p < PROMOTION_ALPHA
        evidence = (f"Diebold-Mariano p = {p:.3f} (promoted below {PROMOTION_ALPHA:g})" if p is not None
                    else "too few days for the Diebold-Mariano test")
        verdict = (f"portfolio pinball {new:.3f} vs {old:.3f} kW ({change:+.1%}) on "
                   f"{len(evaluation.origins)} held-out day(s), {evidence}"
                   + (", the champion in-sample" if evaluation.champion_in_sample else ""))
    if force:
        return True, f"forced; {verdict}"
    return better, ("better: " if better else "not better: ") + verdict
