"""Which model structure: decided by backtest, on the same splits.

  python bench/model_choice.py [--devices 200]

On the first `--devices` devices of the 10,000 x 30-day bench fleet, the
rolling-origin backtest (14 origins at 10:00 UTC, each model trained on the
data before the first origin) of:

- **global, horizon feature**: one model per quantile for all devices and
  all 96 steps (what the engine does);
- **per device**: the same features and training, one model set per device
  on that device's rows only;
- **global, direct per 6 h block**: one model set per block of 24 steps,
  each trained on its block's rows (the direct multi-horizon strategy at a
  size that can still be served; one model per step would be 288 boosters).

Writes bench/results/model_choice.json and prints a table.
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
from forecasting import fleet_files, subset  # noqa: E402

from intraday.forecasting import backtest, metrics  # noqa: E402
from intraday.forecasting.features import DAY, Rows  # noqa: E402
from intraday.forecasting.model import TrainingConfig, fit  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "model_choice.json"))
    args = ap.parse_args()
    data = subset(backtest.load_data(*fleet_files(10_000, 30)), args.devices)
    panel, weather = data.panel, data.temperature
    idx = backtest.origin_indices(panel, 14, DAY, "10:00")
    train = backtest._truncated(panel, idx[0])
    D, n_origins = len(panel.device_ids), len(idx)
    rows = Rows.grid(np.repeat(np.arange(D), n_origins), np.tile(idx, D), DAY)
    actual = panel.power[rows.device, rows.target]
    config = TrainingConfig()
    results: dict = {"machine": machine(), "devices": D, "origins": n_origins, "variants": {}}

    def score(name: str, p10, p50, p90, seconds: float, models: int) -> None:
        ok = ~np.isnan(actual) & ~np.isnan(p50)
        s = metrics.scores(actual[ok], p10[ok], p50[ok], p90[ok])
        results["variants"][name] = {**s, "train_seconds": round(seconds, 1), "model_sets": models,
                                     "cells_forecast": int((~np.isnan(p50)).sum())}
        log(f"{name}: WAPE {s['wape']:.3f} pinball {s['pinball_mean']:.4f} "
            f"coverage {s['coverage_p10_p90']:.3f} ({seconds:.0f} s)")

    t = time.monotonic()
    model = fit(train, weather, config)
    p = model.predict_rows(panel, rows, weather)
    score("global_horizon_feature", p.p10, p.p50, p.p90, time.monotonic() - t, 1)

    t = time.monotonic()
    out = np.full((3, len(rows)), np.nan)
    per_device = replace(config, train_rows=max(20_000, config.train_rows // D),
                         calibration_rows=max(5_000, config.calibration_rows // D), min_data_in_leaf=50)
    one = Rows.grid(np.zeros(n_origins, np.int64), idx, DAY)  # every origin of a one-device panel
    for d in range(D):
        own, own_weather = _device(panel, d), _weather(weather, d)
        m = fit(backtest._truncated(own, idx[0]), own_weather, per_device)
        q = m.predict_rows(own, one, own_weather)
        sel = rows.device == d
        out[:, sel] = np.stack([q.p10, q.p50, q.p90])
        if d % 20 == 0:
            log(f"  per device: {d + 1}/{D}")
    score("per_device", *out, time.monotonic() - t, D)

    t = time.monotonic()
    out = np.full((3, len(rows)), np.nan)
    block = DAY // 4
    for b in range(4):
        m = fit(train, weather, replace(config, horizon=(b + 1) * block, horizon_from=b * block))
        sel = rows.horizon // block == b
        part = Rows(rows.device[sel], rows.origin[sel], rows.horizon[sel])
        q = m.predict_rows(panel, part, weather)
        out[:, sel] = np.stack([q.p10, q.p50, q.p90])
    score("global_direct_6h_blocks", *out, time.monotonic() - t, 4)

    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"{'variant':<26} {'WAPE':>7} {'pinball':>8} {'P10-P90':>8} {'train s':>8} {'model sets':>10}")
    for name, v in results["variants"].items():
        print(f"{name:<26} {v['wape']:7.1%} {v['pinball_mean']:8.4f} {v['coverage_p10_p90']:8.1%} "
              f"{v['train_seconds']:8.0f} {v['model_sets']:>10}")
    print(f"wrote {args.out}")


def _device(panel, d: int):
    attrs = None if panel.attributes is None else panel.attributes.iloc[d : d + 1].reset_index(drop=True)
    temp = None if panel.outdoor_temp is None else panel.outdoor_temp[d : d + 1]
    return type(panel)(panel.device_ids[d : d + 1], panel.start, panel.power[d : d + 1], temp, attrs)


def _weather(weather, d: int):
    return type(weather)(weather.location[d : d + 1], weather.runs, weather.values)


if __name__ == "__main__":
    main()
