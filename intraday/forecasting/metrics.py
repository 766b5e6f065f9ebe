"""Forecast accuracy and calibration, computed the same way for every method."""

from __future__ import annotations

import numpy as np

from intraday.forecasting.types import QUANTILES


def pinball(actual: np.ndarray, pred: np.ndarray, q: float) -> float:
    diff = actual - pred
    return float(np.mean(np.maximum(q * diff, (q - 1) * diff)))


def scores(actual: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray,
           mean: np.ndarray | None = None) -> dict[str, float | None]:
    """MAE, RMSE, WAPE of P50; pinball loss per quantile; P10-P90 coverage
    and mean band width; with `mean`, its bias (sum of means / sum of
    actuals - 1: what a total inherits), RMSE and WAPE. A point forecast
    (p10 == p50 == p90 everywhere) has no band: its coverage and width are
    None."""
    n = len(actual)
    if n == 0:
        return {"rows": 0}
    err = actual - p50
    has_band = bool(np.any(p90 > p10))
    out: dict[str, float | None] = {
        "rows": n,
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err * err))),
        "wape": float(np.sum(np.abs(err)) / max(np.sum(np.abs(actual)), 1e-12)),
        "bias": float(np.mean(p50 - actual)),
    }
    for q, pred in zip(QUANTILES, (p10, p50, p90), strict=True):
        out[f"pinball_p{int(q * 100)}"] = pinball(actual, pred, q)
    out["pinball_mean"] = float(np.mean([out["pinball_p10"], out["pinball_p50"], out["pinball_p90"]]))
    out["coverage_p10_p90"] = float(np.mean((actual >= p10) & (actual <= p90))) if has_band else None
    out["below_p10"] = float(np.mean(actual < p10)) if has_band else None
    out["above_p90"] = float(np.mean(actual > p90)) if has_band else None
    out["mean_band_width_kw"] = float(np.mean(p90 - p10)) if has_band else None
    if mean is not None:
        total = max(np.sum(np.abs(actual)), 1e-12)
        out["mean_bias"] = float(np.sum(mean) / total - 1.0)
        out["mean_rmse"] = float(np.sqrt(np.mean((actual - mean) ** 2)))
        out["mean_wape"] = float(np.sum(np.abs(actual - mean)) / total)
    return out


def portfolio_scores(actual: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray,
                     mean: np.ndarray) -> dict[str, float | None]:
    """A total's forecast: `wape` and `bias` of the mean (what is bought),
    pinball per quantile and for the mean (the average of the three), the
    P10-P90 coverage and band width; RMSE of the mean."""
    if len(actual) == 0:
        return {"rows": 0}
    device = scores(actual, p10, p50, p90, mean)
    keep = ("rows", "pinball_p10", "pinball_p50", "pinball_p90", "pinball_mean", "coverage_p10_p90",
            "below_p10", "above_p90", "mean_band_width_kw")
    return {"rows": device["rows"], "wape": device["mean_wape"], "bias": device["mean_bias"],
            "rmse": device["mean_rmse"], "wape_p50": device["wape"],
            **{k: device[k] for k in keep if k != "rows"}}


def daily_pinball(actual: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray) -> np.ndarray:
    """(origins, steps) arrays: per origin (a day's forecast), the mean of
    its P10/P50/P90 pinball losses over the steps with an actual; NaN for a
    day without one."""
    out = np.full(actual.shape[0], np.nan)
    for o in range(actual.shape[0]):
        ok = ~np.isnan(actual[o]) & ~np.isnan(p10[o]) & ~np.isnan(p50[o]) & ~np.isnan(p90[o])
        if ok.any():
            out[o] = np.mean([pinball(actual[o][ok], p[o][ok], q)
                              for q, p in zip(QUANTILES, (p10, p50, p90), strict=True)])
    return out


def diebold_mariano(loss_candidate: np.ndarray, loss_champion: np.ndarray) -> dict[str, float | int | None]:
    """Is the candidate's loss lower than the champion's by more than noise?
    The Diebold-Mariano test on paired daily losses, one-sided, with Harvey,
    Leybourne and Newbold's small-sample correction and a Student t with
    n - 1 degrees of freedom. Day-ahead forecasts one day apart do not
    overlap (horizon h = 1 day), so the differences' variance is their
    sample variance. `p_value`: the chance of a mean difference this far
    below zero if the two were equally good; None with fewer than 2 days."""
    from scipy import stats

    d = np.asarray(loss_candidate, float) - np.asarray(loss_champion, float)
    d = d[~np.isnan(d)]
    n = len(d)
    out: dict[str, float | int | None] = {"days": n, "mean_difference": float(d.mean()) if n else None,
                                          "statistic": None, "p_value": None}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    if sd == 0.0:  # every day the same difference: certain either way
        out["p_value"] = 0.0 if d.mean() < 0 else 1.0
        return out
    statistic = d.mean() / (sd / np.sqrt(n)) * np.sqrt((n - 1) / n)  # HLN with h = 1
    out["statistic"] = float(statistic)
    out["p_value"] = float(stats.t.cdf(statistic, df=n - 1))
    return out
