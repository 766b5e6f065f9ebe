"""Forecasting engine benchmark: training, inference and backtest accuracy on
the generated fleet, for the devices and for the portfolio they add up to.

  python bench/forecasting.py [--part all|speed|seasons|real|cold] [--devices 10000] [--days 30]
                              [--backtest-devices 2000] [--sizes 30,2000]

Part "speed" (1-7 below) and part "seasons" (8) each update their keys of
bench/results/forecasting.json, so one can be re-run without the other.

1. The 10,000-device x 30-day fleet (cached under .data/bench/ by
   bench/telemetry.py or generated here), with duplicated messages dropped
   as the store drops them: the backtest's input.
2. Training time of the production model on the whole fleet (all 30 days),
   and the artifact's size.
3. Inference for one device as a DeviceActor runs it (its 30-day window,
   its location's temperatures): p50/p99 over many devices, one thread.
4. The whole fleet in one batch: devices/s (median of 3 runs).
5. Both with LightGBM's predictor and with compiled trees (treelite +
   tl2cgen, gcc), and the largest difference between the two.
6. Rolling-origin backtest (14 origins at 10:00 UTC) on the first
   `--backtest-devices` devices: the engine against seasonal naive, the
   seasonal fallback and mlforecast.
7. The same backtest on the whole fleet without mlforecast (the slow one).
8. Seasons: winter, autumn and summer fleets (60 days each, generated with
   their faults and read as written), 30 and 2,000 devices: device and
   portfolio metrics of every method over 14 origins, the band of the total
   by the calibrated method against its alternatives (summed device bands,
   independent devices, one correlation, normal shape) on the whole
   portfolio, single locations and random 30-device portfolios, and each
   aim of the portfolio issue met or missed; the 30 devices also as
   half-hourly meters (their readings averaged to 30 min).
10. The first cold week (`--part cold`, `make bench-cold`, its own file
   bench/results/cold.json): a 40-device fleet that joined in late summer,
   backtested in the first week colder than its history, and again with
   that week 6 K colder still (fleet.ColdSnap).
9. Real meters (`--part real`, `make bench-real`, its own file
   bench/results/real.json; not part of "all"): the Swiss households of
   ../shared/data, the 90 heat-pump homes and the 447 others as two
   portfolios, with the figures and aims of part 8.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import machine  # noqa: E402
from forecasting_common import fleet_files, log, pick, subset  # noqa: E402
from forecasting_speed import print_speed, speed  # noqa: E402

from intraday.forecasting import backtest, portfolio  # noqa: E402
from intraday.forecasting.model import device_locations  # noqa: E402

SEASONS = {"winter": datetime(2026, 2, 1, tzinfo=UTC), "autumn": datetime(2025, 11, 20, tzinfo=UTC),
           "summer": datetime(2025, 8, 1, tzinfo=UTC)}
SEASON_DAYS = 60
DEFAULT_OUT = str(ROOT / "bench" / "results" / "forecasting.json")
RANDOM_PORTFOLIOS = 20  # random 30-device portfolios drawn per run


DEVICE_KEYS = ("wape", "mae", "pinball_mean", "coverage_p10_p90", "mean_band_width_kw", "mean_bias")


def band_alternatives(result: backtest.BacktestResult, panel, rng: np.random.Generator) -> dict:
    """The total's P10-P90 by the calibrated method and its alternatives:
    share of totals inside it, and its width relative to the mean total, on
    the whole portfolio, each location's devices and random 30-device
    portfolios (pooled over the portfolios of a kind)."""
    from dataclasses import replace

    from scipy.stats import norm

    engine_cube, actual, cal = result.cube["engine"], result.actual, result.model.portfolio
    members = ~np.isnan(actual) & ~np.isnan(engine_cube[3])
    locations = device_locations(panel)
    blocks = len(cal.rho_fleet)
    normal = [list(norm.ppf(portfolio.LEVELS))]
    variants = {
        "calibrated": cal,
        "normal_shape": replace(cal, sizes=[1], z=normal),
        "one_correlation": replace(cal, rho_location=list(cal.rho_fleet), sizes=[1], z=normal),
        "independent": replace(cal, rho_location=[0.0] * blocks, rho_fleet=[0.0] * blocks, sizes=[1],
                               z=normal),
    }
    D = len(panel.device_ids)
    kinds = {"whole": [np.arange(D)]}
    kinds["locations"] = [np.flatnonzero(locations == loc) for loc in np.unique(locations)
                          if 2 <= (locations == loc).sum() < D]
    if D > 30:
        kinds["random_30"] = [rng.choice(D, 30, replace=False) for _ in range(RANDOM_PORTFOLIOS)]
    out: dict = {}
    for kind, groups in kinds.items():
        if not groups:
            continue
        hits: dict[str, list] = {v: [] for v in (*variants, "summed_device_bands")}
        width: dict[str, list] = {v: [] for v in hits}
        totals = []
        for g in groups:
            for o in range(actual.shape[1]):
                m = members[g, o]
                y = np.where(m, actual[g, o], 0.0).sum(axis=0)
                ok = m.any(axis=0)
                c = [np.where(m, engine_cube[k, g, o], np.nan) for k in range(4)]
                for name, v in variants.items():
                    total, (lo, hi) = portfolio.quantiles(v, c[3], c[0], c[2], locations[g], (0.1, 0.9))
                    hits[name].append(((y >= lo) & (y <= hi))[ok])
                    width[name].append((hi - lo)[ok])
                lo, hi = np.nansum(c[0], axis=0), np.nansum(c[2], axis=0)
                hits["summed_device_bands"].append(((y >= lo) & (y <= hi))[ok])
                width["summed_device_bands"].append((hi - lo)[ok])
                totals.append(np.nansum(c[3], axis=0)[ok])
        level = np.concatenate(totals).mean()
        out[kind] = {"portfolios": len(groups), "devices_each": int(np.median([len(g) for g in groups])),
                     **{name: {"coverage_p10_p90": round(float(np.concatenate(hits[name]).mean()), 4),
                               "band_width_share_of_mean":
                                   round(float(np.concatenate(width[name]).mean() / level), 4)}
                        for name in hits}}
    return out


def aims(device: dict, total: dict, missing: int) -> dict:
    """Each aim of issue 27 (honest bands) with its measured value and
    whether it is met: coverage 80 +/- 4 % at device and portfolio level,
    portfolio bias within 3 %, pinball below every baseline's for the
    portfolio and the devices, device WAPE below every baseline's, and no
    forecast missing where one is due (`missing`: cells with a reading and
    no engine forecast)."""
    e, pe = device["engine"], total["engine"]

    def below_every(scores: dict, key: str) -> tuple[float, bool]:
        others = [m[key] for k, m in scores.items() if k != "engine" and m.get(key) is not None]
        return scores["engine"][key] / min(others) - 1, all(scores["engine"][key] < o for o in others)

    out = {
        "device_coverage_80_pm_4": (e["coverage_p10_p90"], abs(e["coverage_p10_p90"] - 0.8) <= 0.04),
        "portfolio_coverage_80_pm_4": (pe["coverage_p10_p90"], abs(pe["coverage_p10_p90"] - 0.8) <= 0.04),
        "portfolio_bias_within_3pct": (pe["bias"], abs(pe["bias"]) <= 0.03),
        "portfolio_pinball_below_every_baseline": below_every(total, "pinball_mean"),
        "device_wape_below_every_baseline": below_every(device, "wape"),
        "device_pinball_below_every_baseline": below_every(device, "pinball_mean"),
        "no_forecast_missing": (missing, missing == 0),
    }
    return {k: {"value": round(float(v), 4), "met": bool(ok)} for k, (v, ok) in out.items()}


def seasons(sizes: list[int], say) -> dict:
    """Part 8: every season and size, device and portfolio, with the aims;
    the smallest size also on half-hourly meters (the same readings averaged
    to 30 min, as a settlement-period meter reports them)."""
    out: dict = {}
    for season, end in SEASONS.items():
        files = fleet_files(max(sizes), SEASON_DAYS, end, name=f"season-{end:%Y-%m-%d}")
        out[season] = {}
        runs = [(size, None) for size in sizes] + [(min(sizes), "30min")]
        loaded: dict = {}
        for size, freq in runs:
            key = str(size) if freq is None else f"{size}@{freq}"
            say(f"== {season} (data ending {end:%Y-%m-%d}), {key} devices")
            if freq not in loaded:
                loaded = {freq: backtest.load_data(*files, freq=freq)}  # one grid in memory at a time
            sub = subset(loaded[freq], size)
            started = time.monotonic()
            res = backtest.run(sub, origins=14, issue_time="10:00", progress=say,
                               source={"file": str(files[0].relative_to(ROOT))})
            out[season][key] = season_figures(res, sub, time.monotonic() - started)
            say(json.dumps(out[season][key]["aims"]))
    return out


def season_figures(res: backtest.BacktestResult, sub: backtest.BacktestData, seconds: float) -> dict:
    r = res.report
    device = {k: {x: v["overall"][x] for x in DEVICE_KEYS} for k, v in r["methods"].items()}
    total = r["portfolio"]["methods"]
    return {
        "freq": r["data"]["freq"],
        "data_end": r["data"]["end"],
        "origins": [r["setup"]["origins"][0], r["setup"]["origins"][-1]],
        "seconds": round(seconds, 1),
        "duplicates_dropped": r["data"]["duplicates_dropped"],
        "stuck_readings_dropped": r["data"]["stuck_readings_dropped"],
        "device": device,
        "portfolio": total,
        "portfolio_cells_scored": r["portfolio"]["cells"],
        "portfolio_calibration": {k: res.model.portfolio.to_dict()[k]
                                  for k in ("rho_location", "rho_fleet", "sizes")},
        "bands": band_alternatives(res, sub.panel, np.random.default_rng(3)),
        # P10-P90 coverage with the first calibration only and with the
        # rolling recalibration the figures above use (recalibration.py).
        "recalibration": {k: r["recalibration"][k] for k in ("device_coverage", "portfolio_coverage")},
        "aims": aims(device, total, int((np.isnan(res.cube["engine"][1]) & ~np.isnan(res.actual)).sum())),
    }


def print_verdict(x: dict) -> None:
    """Under a row of figures: the bands before and after the rolling
    recalibration, and the aims missed."""
    rc = x.get("recalibration")
    if rc:
        d, p = rc["device_coverage"], rc["portfolio_coverage"]
        print(f"  {'':<19}   P10-P90 coverage, first calibration -> rolling: devices "
              f"{d['first_calibration']:.1%} -> {d['rolling']:.1%}, portfolio "
              f"{p['first_calibration']:.1%} -> {p['rolling']:.1%}")
    missed = [k for k, a in x["aims"].items() if not a["met"]]
    if missed:
        print(f"  {'':<19}   missed: {', '.join(missed)}")


def real(say) -> dict:
    """Part 9: real meters. The Swiss households (../shared/data/swiss-households:
    whole-house load at 15 min, seven winter weeks of 2018, one hourly
    temperature): the 90 heat-pump homes as one portfolio, the 447 others
    as a second, 14 next-day origins each, the engine against the seasonal
    baselines and mlforecast. The data set has no issued weather forecasts:
    the observed temperature stands in for them (a perfect forecast), which
    flatters every method that reads the weather (the engine, mlforecast)."""
    from scripts.swiss_households import HEAT_PUMP, SOURCE, write_files

    if not (SOURCE / "load_15min.parquet").exists():
        say(f"real: no data at {SOURCE}; skipped")
        return {"skipped": f"no data at {SOURCE}"}
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), all_households=True)
        # A few real readings are negative (feed-in): the ingest quarantines
        # them (negative_value), so they are dropped here too.
        readings = pd.read_parquet(files["readings"])
        negative = int((readings["power"] < 0).sum())
        readings[readings["power"] >= 0].to_parquet(files["readings"], index=False)
        data = backtest.load_data(files["readings"], files["devices"], files["weather"])
    kinds = data.panel.attributes["heat_pump_type"].to_numpy()
    heat_pump = np.isin(kinds, HEAT_PUMP)
    out: dict = {"source": "swiss-households (CC BY-SA 4.0), read from ../shared/data",
                 "weather": "observed hourly temperature used as the forecast (none issued in the data)",
                 "negative_readings_dropped": negative}
    portfolios = {"heat_pumps": np.flatnonzero(heat_pump), "other_households": np.flatnonzero(~heat_pump)}
    for name, rows in portfolios.items():
        say(f"== real: {name}, {len(rows)} devices")
        sub = pick(data, rows)
        started = time.monotonic()
        res = backtest.run(sub, origins=14, issue_time="10:00", progress=say,
                           source={"file": "swiss-households/load_15min.parquet"})
        out[name] = {"devices": int(len(rows)), **season_figures(res, sub, time.monotonic() - started),
                     **beyond_history(res, sub, 14)}
        say(json.dumps(out[name]["aims"]))
    return out


# The late-summer-start fleet: 127 days ending on the first week colder
# than any before it (found in the generated weather: its mean -0.2 degC,
# the coldest earlier week's 3.4); and the same fleet with the last nine
# days another 6 K colder (a snap far beyond the history).
COLD_END = datetime(2025, 11, 27, tzinfo=UTC)
COLD_DAYS, COLD_DEVICES, COLD_ORIGINS, SNAP_KELVIN, SNAP_DAYS = 127, 40, 7, 6.0, 9


def _fleet_temperature(data: backtest.BacktestData) -> np.ndarray:
    """The devices' mean outdoor temperature per interval: observed where
    the panel holds it, else the weather file's (as known at each time)."""
    panel = data.panel
    if panel.outdoor_temp is not None:
        return np.nanmean(panel.outdoor_temp, axis=0)
    t = np.arange(panel.intervals)
    per_device = [data.temperature.forecast(np.full(len(t), d), t, t) for d in range(len(panel.device_ids))]
    return np.nanmean(np.vstack(per_device), axis=0)


def beyond_history(res: backtest.BacktestResult, data: backtest.BacktestData, origins: int) -> dict:
    """How the portfolio's mean did on days colder than its history: the
    test days' and the history's temperatures (the fleet's mean), each
    origin's bias over its next day, and the bias pooled over the origins
    whose next day was colder than any day before the first origin (what
    trees alone cannot extrapolate to)."""
    import pandas as pd

    panel, day = data.panel, data.panel.per_day
    index = backtest.origin_indices(panel, origins, day, "10:00")
    temp = _fleet_temperature(data)
    daily = temp[: panel.intervals // day * day].reshape(-1, day)
    history = np.nanmean(daily[: index[0] // day], axis=1)
    total, actual = res.totals["engine"][3], res.totals["actual"]
    ok = ~np.isnan(total) & ~np.isnan(actual)
    mean, real = np.where(ok, total, 0.0), np.where(ok, actual, 0.0)
    ahead = np.array([np.nanmean(temp[o:o + total.shape[1]]) for o in index])
    colder = ahead < np.nanmin(history)
    return {
        "temperature_c": {
            "test_mean": round(float(np.nanmean(daily[index[0] // day:])), 2),
            # Weeks with at least 5 days of weather (the Swiss data miss a few).
            "coldest_earlier_week": round(float(
                pd.Series(history).rolling(7, min_periods=5).mean().min()), 2),
            "coldest_earlier_day": round(float(np.nanmin(history)), 2),
            "per_origin_next_day": [round(float(t), 2) for t in ahead]},
        "daily_portfolio_bias": [round(float(x), 4) for x in mean.sum(axis=1) / real.sum(axis=1) - 1],
        "colder_than_history": {
            "origins": int(colder.sum()),
            "portfolio_bias": (round(float(mean[colder].sum() / real[colder].sum() - 1), 4)
                               if colder.any() else None)},
    }


def cold(say) -> dict:
    """Part 10: the first cold week of a fleet that joined in late summer
    (`--part cold`, `make bench-cold`, bench/results/cold.json): 7 next-day
    origins in the coldest week yet, every method trained once before them."""
    from datetime import timedelta

    from intraday.telemetry import fleet
    from intraday.telemetry.loader import write_fleet

    out: dict = {"devices": COLD_DEVICES, "days": COLD_DAYS, "data_end": COLD_END.isoformat()}
    runs = {"first_cold_week": None,
            f"cold_snap_{SNAP_KELVIN:g}k": fleet.ColdSnap(COLD_END - timedelta(days=SNAP_DAYS), SNAP_KELVIN)}
    for name, snap in runs.items():
        path = ROOT / ".data" / "bench" / f"cold-{name}-{COLD_DEVICES}x{COLD_DAYS}-seed7.parquet"
        if not path.exists():
            say(f"generating {path.relative_to(ROOT)}")
            write_fleet(path, COLD_DEVICES, COLD_END - timedelta(days=COLD_DAYS), COLD_END, seed=7,
                        cold_snap=snap)
        data = backtest.load_data(path, path.with_name(path.stem + ".devices.parquet"),
                                  path.with_name(path.stem + ".weather.parquet"))
        say(f"== cold: {name}")
        started = time.monotonic()
        res = backtest.run(data, origins=COLD_ORIGINS, issue_time="10:00", progress=say,
                           source={"file": str(path.relative_to(ROOT))})
        figures = season_figures(res, data, time.monotonic() - started)
        out[name] = {**figures, **beyond_history(res, data, COLD_ORIGINS)}
        say(json.dumps(figures["aims"]))
    return out


def print_cold(r: dict) -> None:
    print(f"the first cold week ({r['devices']} devices, {r['days']} days from late summer, "
          "7 origins at 10:00 UTC):")
    for name in (k for k in r if isinstance(r[k], dict) and "aims" in r[k]):
        x = r[name]
        t, p = x["temperature_c"], x["portfolio"]
        print(f"  {name:<18} test week {t['test_mean']:+.1f} degC (coldest earlier week "
              f"{t['coldest_earlier_week']:+.1f}) | "
              f"portfolio WAPE {p['engine']['wape']:.1%} (naive day {p['seasonal_naive_day']['wape']:.1%}), "
              f"bias {p['engine']['bias']:+.1%}, "
              f"per day {', '.join(f'{b:+.0%}' for b in x['daily_portfolio_bias'])}, "
              f"pinball {p['engine']['pinball_mean']:.2f}, P10-P90 {p['engine']['coverage_p10_p90']:.1%}")
        print_verdict(x)
        print_beyond_history(x)


def print_real(r: dict) -> None:
    if "skipped" in r:
        print(f"real meters: skipped ({r['skipped']})")
        return
    print("real meters: the Swiss households (14 origins at 10:00 UTC; WAPE of P50 for devices, of the mean "
          "for the portfolio; the observed temperature as the forecast)")
    print(f"  {'portfolio':<17} {'devices':>7} | {'dev WAPE':>8} {'naive d':>7} {'naive w':>7} {'mlf':>6} "
          f"{'pinball':>7} {'cover':>6} | {'pf WAPE':>7} {'naive d':>7} {'mlf':>6} {'bias':>6} "
          f"{'pinball':>7} {'cover':>6}")
    for name in ("heat_pumps", "other_households"):
        x = r[name]
        d, p = x["device"], x["portfolio"]
        nan = {"wape": float("nan")}
        print(f"  {name:<17} {x['devices']:>7} | {d['engine']['wape']:8.1%} "
              f"{d['seasonal_naive_day']['wape']:7.1%} "
              f"{d['seasonal_naive_week']['wape']:7.1%} {d.get('mlforecast', nan)['wape']:6.1%} "
              f"{d['engine']['pinball_mean']:7.4f} {d['engine']['coverage_p10_p90']:6.1%} | "
              f"{p['engine']['wape']:7.1%} {p['seasonal_naive_day']['wape']:7.1%} "
              f"{p.get('mlforecast', nan)['wape']:6.1%} {p['engine']['bias']:+6.1%} "
              f"{p['engine']['pinball_mean']:7.3f} {p['engine']['coverage_p10_p90']:6.1%}")
        print_verdict(x)
        print_beyond_history(x)


def print_beyond_history(x: dict) -> None:
    c, t = x.get("colder_than_history"), x.get("temperature_c")
    if c and c["origins"]:
        print(f"  {'':<19}   {c['origins']} origins' next day colder than any day before them "
              f"(coldest earlier day {t['coldest_earlier_day']:+.1f} degC): portfolio bias "
              f"{c['portfolio_bias']:+.1%}")


def print_seasons(s: dict) -> None:
    print("seasons (14 origins at 10:00 UTC; WAPE of P50 for devices, of the mean for the portfolio):")
    print(f"  {'season':<7} {'devices':>11} | {'dev WAPE':>8} {'naive':>6} {'pinball':>7} {'cover':>6} | "
          f"{'pf WAPE':>7} {'naive':>6} {'mlf':>6} {'mlf agg':>7} {'bias':>6} {'cover':>6} | aims met")
    print("  (devices N@30min: the same readings averaged to half-hours)")
    for season, by_size in s.items():
        for size, r in by_size.items():
            d, p = r["device"], r["portfolio"]
            met = sum(a["met"] for a in r["aims"].values())
            mlf = p.get("mlforecast", {}).get("wape", float("nan"))
            agg = p.get("mlforecast_aggregate", {}).get("wape", float("nan"))
            print(f"  {season:<7} {size:>11} | {d['engine']['wape']:8.1%} "
                  f"{d['seasonal_naive_day']['wape']:6.1%} "
                  f"{d['engine']['pinball_mean']:7.3f} {d['engine']['coverage_p10_p90']:6.1%} | "
                  f"{p['engine']['wape']:7.1%} {p['seasonal_naive_day']['wape']:6.1%} {mlf:6.1%} {agg:7.1%} "
                  f"{p['engine']['bias']:+6.1%} {p['engine']['coverage_p10_p90']:6.1%} | "
                  f"{met}/{len(r['aims'])}")
            print_verdict(r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["all", "speed", "seasons", "real", "cold"], default="all")
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--backtest-devices", type=int, default=2_000)
    ap.add_argument("--single", type=int, default=500, help="single-device forecasts timed")
    ap.add_argument("--sizes", default="30,2000", help="fleet sizes of the seasons part")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    out_path = Path(args.out)
    results: dict = json.loads(out_path.read_text()) if out_path.exists() else {}
    results["machine"] = machine()
    if args.part in ("all", "speed"):
        speed(args, results)
    if args.part in ("all", "seasons"):
        results["seasons"] = seasons([int(x) for x in args.sizes.split(",")], log)
    if args.part == "real":  # its own file: bench/results/real.json
        out_path = Path(args.out) if args.out != DEFAULT_OUT else ROOT / "bench" / "results" / "real.json"
        results = {"machine": machine(), "real": real(log)}
    if args.part == "cold":  # its own file: bench/results/cold.json
        out_path = Path(args.out) if args.out != DEFAULT_OUT else ROOT / "bench" / "results" / "cold.json"
        results = {"machine": machine(), "cold": cold(log)}
    results["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2))
    print(f"machine: {results['machine']}")
    if args.part in ("all", "speed"):
        print_speed(results)
    if args.part in ("all", "seasons"):
        print_seasons(results["seasons"])
    if args.part == "real":
        print_real(results["real"])
    if args.part == "cold":
        print_cold(results["cold"])
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
