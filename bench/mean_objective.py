"""Which objective for the device mean: squared error or Tweedie, by backtest.

  python bench/mean_objective.py [--devices 300]

The mean is what the portfolio adds up, so it is judged where it is used:
on the first `--devices` devices of each season's fleet (the files
bench/forecasting.py generates), the rolling-origin backtest (14 origins at
10:00 UTC, trained before the first) of the engine with its mean model
trained with each objective. Scored per device (RMSE and WAPE of the mean,
its bias) and on the total of the devices with a reading in each interval
(WAPE and bias of the summed means). The quantile models are the same in
both runs (same seed), so only the mean differs.

Writes bench/results/mean_objective.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import machine  # noqa: E402
from forecasting import SEASON_DAYS, SEASONS, fleet_files, log, subset  # noqa: E402

from intraday.forecasting import backtest  # noqa: E402
from intraday.forecasting.features import Rows  # noqa: E402
from intraday.forecasting.model import TrainingConfig, fit  # noqa: E402

OBJECTIVES = ("regression", "tweedie")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=300)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mean_objective.json"))
    args = ap.parse_args()
    results: dict = {"machine": machine(), "devices": args.devices, "origins": 14, "seasons": {}}
    for season, end in SEASONS.items():
        data = subset(backtest.load_data(*fleet_files(2000, SEASON_DAYS, end, name=f"season-{end:%Y-%m-%d}")),
                      args.devices)
        panel, weather = data.panel, data.temperature
        idx = backtest.origin_indices(panel, 14, panel.per_day, "10:00")
        D, H = len(panel.device_ids), panel.per_day
        rows = Rows.grid(np.repeat(np.arange(D), len(idx)), np.tile(idx, D), H)
        actual = data.actual[rows.device, rows.target].reshape(D, len(idx), H)
        results["seasons"][season] = {}
        for objective in OBJECTIVES:
            started = time.monotonic()
            model = fit(backtest._truncated(panel, idx[0]), weather, replace(TrainingConfig(),
                                                                           mean_objective=objective))
            mean = model.predict_rows(panel, rows, weather).mean.reshape(D, len(idx), H)
            ok = ~np.isnan(actual)
            err = mean[ok] - actual[ok]
            total = np.where(ok, mean, 0.0).sum(axis=0)
            y = np.where(ok, actual, 0.0).sum(axis=0)
            r = {
                "device_mean_rmse_kw": float(np.sqrt(np.mean(err**2))),
                "device_mean_wape": float(np.abs(err).sum() / actual[ok].sum()),
                "device_mean_bias": float(mean[ok].sum() / actual[ok].sum() - 1),
                "portfolio_wape": float(np.abs(total - y).sum() / y.sum()),
                "portfolio_bias": float(total.sum() / y.sum() - 1),
                "seconds": round(time.monotonic() - started, 1),
            }
            results["seasons"][season][objective] = r
            log(f"{season} {objective}: {json.dumps(r)}")
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"machine: {results['machine']}")
    print(f"{'season':<7} {'objective':<11} {'dev RMSE kW':>11} {'dev WAPE':>8} {'dev bias':>8} "
          f"{'pf WAPE':>8} {'pf bias':>8}")
    for season, by in results["seasons"].items():
        for objective, r in by.items():
            print(f"{season:<7} {objective:<11} {r['device_mean_rmse_kw']:11.3f} "
                  f"{r['device_mean_wape']:8.1%} {r['device_mean_bias']:+8.1%} "
                  f"{r['portfolio_wape']:8.1%} {r['portfolio_bias']:+8.1%}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
