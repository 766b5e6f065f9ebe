"""Forecasting engine benchmark: training, inference and backtest accuracy on
the generated fleet.

  python bench/forecasting.py [--devices 10000] [--days 30] [--backtest-devices 2000]

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
Writes bench/results/forecasting.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import machine, summary  # noqa: E402

from intraday.forecasting import backtest, engine  # noqa: E402
from intraday.forecasting.features import DAY, Rows, design_matrix  # noqa: E402
from intraday.forecasting.model import QuantileModel, TrainingConfig, fit  # noqa: E402
from intraday.forecasting.types import TelemetryWindow  # noqa: E402

END = datetime(2026, 2, 1, tzinfo=UTC)  # the same cached file as bench/telemetry.py


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fleet_files(devices: int, days: int) -> tuple[Path, Path, Path]:
    stem = ROOT / ".data" / "bench" / f"fleet-{devices}x{days}-seed7"
    raw = stem.with_suffix(".parquet")
    if not raw.exists():
        log(f"generating {raw.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "intraday.cli", "fleet", "generate", "--devices", str(devices),
                        "--days", str(days), "--seed", "7", "--end", END.isoformat(), "--out", str(raw)],
                       check=True, cwd=ROOT)
    clean = Path(f"{stem}.backtest.parquet")
    if not clean.exists():
        pd.read_parquet(raw).drop_duplicates(["device_id", "timestamp"]).to_parquet(clean, index=False)
    return clean, Path(f"{stem}.devices.parquet"), Path(f"{stem}.weather.parquet")


def subset(data: backtest.BacktestData, n: int) -> backtest.BacktestData:
    p = data.panel
    panel = type(p)(p.device_ids[:n], p.start, p.power[:n],
                    None if p.outdoor_temp is None else p.outdoor_temp[:n],
                    None if p.attributes is None else p.attributes.iloc[:n].reset_index(drop=True))
    t = data.temperature
    temperature = type(t)(t.location[:n], t.runs, t.values) if hasattr(t, "runs") else t
    return backtest.BacktestData(panel, temperature, data.readings, data.resampled_from, data.stuck_dropped)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--backtest-devices", type=int, default=2_000)
    ap.add_argument("--single", type=int, default=500, help="single-device forecasts timed")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "forecasting.json"))
    args = ap.parse_args()
    results: dict = {"machine": machine(), "fleet": {"devices": args.devices, "days": args.days}}

    files = fleet_files(args.devices, args.days)
    started = time.monotonic()
    data = backtest.load_data(*files)
    panel = data.panel
    results["fleet"]["load_seconds"] = round(time.monotonic() - started, 1)
    log(f"loaded {panel.power.shape} in {results['fleet']['load_seconds']} s")

    # 2. Training on the whole fleet.
    config = TrainingConfig()
    started = time.monotonic()
    model = fit(panel, data.temperature, config, log)
    train_s = time.monotonic() - started
    artifact = model.to_bytes()
    results["training"] = {
        "seconds": round(train_s, 1), "rows": model.manifest["training"]["rows"],
        "refit": config.refit, "trees": {"p50": config.num_trees, "p10_p90": config.tail_trees},
        "num_leaves": config.num_leaves, "artifact_mb": round(len(artifact) / 1e6, 2),
        "validation": model.manifest["validation"],
    }
    log(f"trained in {train_s:.0f} s")

    # 5. Compiled trees: the same model, compiled (what the forecaster serves).
    compiled = QuantileModel.from_bytes(artifact)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        if not compiled.compile(Path(tmp)):
            raise SystemExit("compiled trees could not be built (is gcc installed?)")
        compile_s = time.perf_counter() - t
        variants = {"lightgbm": model, "compiled": compiled}

        # 3. One device, as the actor runs it.
        origin = panel.intervals - DAY  # forecast the last day
        start = panel.timestamp(origin)
        rng = np.random.default_rng(1)
        devices = rng.choice(len(panel.device_ids), min(args.single, len(panel.device_ids)), replace=False)
        weather = data.temperature
        calls = []
        for d in devices:
            window = TelemetryWindow(str(panel.device_ids[d]), panel.start, panel.power[d, :origin])
            fc = weather.forecast(np.full(DAY, d), np.full(DAY, origin), origin + np.arange(DAY))
            temps = np.concatenate([panel.outdoor_temp[d, :origin], fc])
            calls.append((window, panel.attributes.iloc[d].to_dict(), temps))
        results["single_device"] = {}
        for name, m in variants.items():
            for window, attrs, temps in calls[:20]:  # warm caches (calendar, code paths)
                engine.forecast(m, window, start, DAY, attrs, temps)
            latencies = []
            t0 = time.perf_counter()
            for window, attrs, temps in calls:
                t = time.perf_counter()
                engine.forecast(m, window, start, DAY, attrs, temps)
                latencies.append(time.perf_counter() - t)
            results["single_device"][name] = summary(latencies, time.perf_counter() - t0)
        log(f"single device: {results['single_device']}")

        # 4. The whole fleet in one call.
        n = len(panel.device_ids)
        rows = Rows.grid(np.arange(n), np.full(n, origin), DAY)
        t = time.perf_counter()
        X, _ = design_matrix(panel, rows, model.vocabulary, weather)
        features_s = time.perf_counter() - t
        results["fleet_batch"] = {"devices": n, "features_seconds": round(features_s, 3)}
        outputs = {}
        for name, m in variants.items():
            runs = []
            for _ in range(3):
                t = time.perf_counter()
                outputs[name] = engine.forecast_fleet(m, panel, start, DAY, weather)
                runs.append(time.perf_counter() - t)
            med = float(np.median(runs))
            results["fleet_batch"][name] = {"seconds_median": round(med, 3), "devices_per_s": round(n / med)}
        results["fleet_batch"]["forecast_devices"] = int(np.isfinite(outputs["compiled"]["p50"][:, 0]).sum())
        log(f"fleet batch: {results['fleet_batch']}")
        results["compiled_trees"] = {
            "tool": "treelite + tl2cgen (gcc)", "compile_seconds": round(compile_s, 1),
            "max_abs_difference_raw": float(np.max(np.abs(model.raw(X) - compiled.raw(X)))),
            "max_abs_difference_p50_kw": float(np.nanmax(np.abs(outputs["lightgbm"]["p50"]
                                                                - outputs["compiled"]["p50"]))),
            "adopted": True,
        }
    log(f"compiled trees: {results['compiled_trees']}")

    # 6. Backtest.
    bt = subset(data, args.backtest_devices)
    started = time.monotonic()
    res = backtest.run(bt, origins=14, issue_time="10:00", config=config, progress=log,
                       source={"file": str(files[0].relative_to(ROOT))})
    report = res.report
    results["backtest"] = {
        "devices": args.backtest_devices, "seconds": round(time.monotonic() - started, 1),
        "origins": report["setup"]["origins"], "cells_scored": report["cells"]["scored"],
        "timings": report["timings"],
        "overall": {k: v["overall"] for k, v in report["methods"].items()},
        "comparison": report["comparison"],
    }
    # 7. The engine and the baselines on the whole fleet (mlforecast is the
    # slow one: it runs on the subset above).
    started = time.monotonic()
    full = backtest.run(data, origins=14, issue_time="10:00", config=config, peer=False, progress=log)
    results["backtest_whole_fleet"] = {
        "devices": len(panel.device_ids), "seconds": round(time.monotonic() - started, 1),
        "cells_scored": full.report["cells"]["scored"], "timings": full.report["timings"],
        "overall": {k: v["overall"] for k, v in full.report["methods"].items()},
        "comparison": full.report["comparison"],
    }
    results["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2))

    e = results["backtest"]["overall"]
    print(f"machine: {results['machine']}")
    print(f"training: {results['training']['seconds']} s on {n:,} devices "
          f"({results['training']['rows']:,} rows), artifact {results['training']['artifact_mb']} MB")
    for name in ("lightgbm", "compiled"):
        s, f = results["single_device"][name], results["fleet_batch"][name]
        print(f"{name:>9}: one device p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms; "
              f"fleet batch {f['devices_per_s']:,} devices/s")
    print(f"compiled trees: largest difference {results['compiled_trees']['max_abs_difference_raw']:.2g}")
    print(f"backtest ({args.backtest_devices:,} devices, 14 origins):")
    for name, o in e.items():
        cov = f"{o['coverage_p10_p90']:.1%}" if o["coverage_p10_p90"] is not None else "-"
        print(f"  {name:<22} WAPE {o['wape']:.1%}  pinball {o['pinball_mean']:.4f}  P10-P90 {cov}")
    print(f"backtest, whole fleet ({len(panel.device_ids):,} devices, without mlforecast):")
    for name, o in results["backtest_whole_fleet"]["overall"].items():
        cov = f"{o['coverage_p10_p90']:.1%}" if o["coverage_p10_p90"] is not None else "-"
        print(f"  {name:<22} WAPE {o['wape']:.1%}  pinball {o['pinball_mean']:.4f}  P10-P90 {cov}")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
