"""Part "speed" of bench/forecasting.py: training, a fleet forecast and a
single device's, timed on generated fleets of growing size."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import summary
from forecasting_common import fleet_files, log, subset

from intraday.forecasting import backtest, engine
from intraday.forecasting.features import DAY, Rows, design_matrix
from intraday.forecasting.model import QuantileModel, TrainingConfig, fit
from intraday.forecasting.types import TelemetryWindow

ROOT = Path(__file__).resolve().parents[1]


def speed(args: argparse.Namespace, results: dict) -> None:
    """Parts 1-7: training, inference and the backtest on the 10,000-device fleet."""
    results["fleet"] = {"devices": args.devices, "days": args.days}
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


def print_speed(results: dict) -> None:
    n = results["fleet_batch"]["devices"]
    panel_devices = results["backtest_whole_fleet"]["devices"]
    e = results["backtest"]["overall"]
    print(f"training: {results['training']['seconds']} s on {n:,} devices "
          f"({results['training']['rows']:,} rows), artifact {results['training']['artifact_mb']} MB")
    for name in ("lightgbm", "compiled"):
        s, f = results["single_device"][name], results["fleet_batch"][name]
        print(f"{name:>9}: one device p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms; "
              f"fleet batch {f['devices_per_s']:,} devices/s")
    print(f"compiled trees: largest difference {results['compiled_trees']['max_abs_difference_raw']:.2g}")
    print(f"backtest ({results['backtest']['devices']:,} devices, 14 origins):")
    for name, o in e.items():
        cov = f"{o['coverage_p10_p90']:.1%}" if o["coverage_p10_p90"] is not None else "-"
        print(f"  {name:<22} WAPE {o['wape']:.1%}  pinball {o['pinball_mean']:.4f}  P10-P90 {cov}")
    print(f"backtest, whole fleet ({panel_devices:,} devices, without mlforecast):")
    for name, o in results["backtest_whole_fleet"]["overall"].items():
        cov = f"{o['coverage_p10_p90']:.1%}" if o["coverage_p10_p90"] is not None else "-"
        print(f"  {name:<22} WAPE {o['wape']:.1%}  pinball {o['pinball_mean']:.4f}  P10-P90 {cov}")
