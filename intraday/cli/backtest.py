"""`backtest`: the engine on files, out of sample, against the baselines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from intraday.cli.common import _fail, _stderr, _table, _working

if TYPE_CHECKING:
    from intraday.forecasting.backtest import BacktestData
    from intraday.forecasting.features import Panel
    from intraday.forecasting.model import TrainingConfig


def _training_config(args: argparse.Namespace, horizon: int) -> TrainingConfig:
    from intraday.forecasting.model import TrainingConfig

    if args.train_rows < 10_000 or args.trees < 10:
        _fail("--train-rows must be at least 10000 and --trees at least 10")
    return TrainingConfig(horizon=horizon, train_rows=args.train_rows, num_trees=args.trees,
                          tail_trees=max(10, args.trees // 2))


def _load_backtest_data(args: argparse.Namespace) -> BacktestData:
    from intraday.errors import InvalidRequest
    from intraday.forecasting import backtest

    data_path = Path(args.data)
    devices = Path(args.devices) if args.devices else None
    weather = Path(args.weather) if args.weather else None
    # The generator writes <stem>.devices.parquet beside the readings.
    beside = data_path.with_name(data_path.name.split(".")[0] + ".devices.parquet")
    if devices is None and beside.exists():
        devices = beside
    try:
        data = backtest.load_data(data_path, devices, weather, args.freq)
    except InvalidRequest as e:
        _fail(str(e), 2)
    panel = data.panel
    _stderr(f"{data_path}: {len(panel.device_ids):,} devices, "
            f"{data.readings:,} {panel.step_minutes}-min values, {panel.intervals / panel.per_day:.1f} days "
            f"from {panel.start:%Y-%m-%d %H:%M} UTC"
            + (f", averaged from {data.resampled_from}" if data.resampled_from else "")
            + (f", {data.duplicates_dropped:,} exact duplicates dropped" if data.duplicates_dropped else "")
            + (f", {data.stuck_dropped:,} stuck readings kept out of the features" if data.stuck_dropped
               else "")
            + (f"; devices {devices}" if devices else "") + (f"; weather {weather}" if weather else ""))
    return data


def _horizon(args: argparse.Namespace, panel: Panel) -> int:
    """--horizon in steps of the data's grid: one day of them by default, two at most."""
    if args.horizon is None:
        return panel.per_day
    if not 1 <= args.horizon <= 2 * panel.per_day:
        _fail(f"--horizon {args.horizon}: must be 1..{2 * panel.per_day} steps of {panel.step_minutes} min "
              "(up to two days)", 2)
    return int(args.horizon)


def cmd_backtest(args: argparse.Namespace) -> None:
    from intraday.errors import InvalidRequest
    from intraday.forecasting import backtest

    if args.origins < 1:
        _fail("--origins must be at least 1", 2)
    data = _load_backtest_data(args)
    horizon = _horizon(args, data.panel)
    try:
        with _working("backtesting"):
            result = backtest.run(data, horizon=horizon, origins=args.origins, issue_time=args.issue_time,
                                  config=_training_config(args, horizon), peer=not args.no_peer,
                                  progress=_stderr, source={"file": args.data, "weather": args.weather})
    except InvalidRequest as e:
        _fail(str(e), 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.report, indent=1))
    if args.forecasts_out:
        result.forecasts.to_parquet(args.forecasts_out, index=False)
    if args.portfolio_out:
        result.portfolio.to_parquet(args.portfolio_out, index=False)
    if args.plot:
        from intraday.forecasting.plot import forecast_bands

        forecast_bands(result.forecasts, Path(args.plot), portfolio=result.portfolio,
                       title=f"engine forecasts at {args.issue_time} UTC, last origins")
    r = result.report
    print(f"{r['cells']['scored']:,} of {r['cells']['total']:,} device-intervals scored over "
          f"{len(r['setup']['origins'])} origins ({r['setup']['origins'][0][:10]} .. "
          f"{r['setup']['origins'][-1][:10]} at {args.issue_time} UTC)")
    rows = []
    for name, m in r["methods"].items():
        o = m["overall"]
        cov = f"{o['coverage_p10_p90']:.1%}" if o["coverage_p10_p90"] is not None else "-"
        width = f"{o['mean_band_width_kw']:.3f}" if o["mean_band_width_kw"] is not None else "-"
        rows.append([name, f"{o['wape']:.1%}", f"{o['mae']:.3f}", f"{o['rmse']:.3f}",
                     f"{o['pinball_mean']:.4f}", cov, width])
    _table(["method", "WAPE", "MAE kW", "RMSE kW", "pinball", "P10-P90", "width kW"], rows,
           title="devices", right=(1, 2, 3, 4, 5, 6))
    pf = r["portfolio"]
    rows = []
    for name, o in pf["methods"].items():
        cov = f"{o['coverage_p10_p90']:.1%}" if o["coverage_p10_p90"] is not None else "-"
        width = f"{o['mean_band_width_kw']:.1f}" if o["mean_band_width_kw"] is not None else "-"
        rows.append([name, f"{o['wape']:.1%}", f"{o['bias']:+.1%}", f"{o['pinball_mean']:.3f}", cov, width])
    _table(["method", "WAPE", "bias", "pinball", "P10-P90", "width kW"], rows, right=(1, 2, 3, 4, 5),
           title=f"portfolio: the total of {pf['devices']:,} devices, {pf['cells']['scored']:,} intervals "
                 "scored (WAPE and bias of the mean)")
    print(f"report: {out}" + (f"; forecasts: {args.forecasts_out}" if args.forecasts_out else "")
          + (f"; portfolio: {args.portfolio_out}" if args.portfolio_out else "")
          + (f"; plot: {args.plot}" if args.plot else ""))
