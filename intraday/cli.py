"""`intraday`: the operator's command line (Typer, with Rich tables and
progress; `intraday --install-completion` adds shell completion).

Commands that reach the running system go through the gateway
(INTRADAY_GATEWAY_URL) with an API key (INTRADAY_API_KEY, else the file
INTRADAY_API_KEY_FILE, default .data/api-key, which `make up` writes):
forecast, prices, devices, status, warm, and train, models, weather and
import when the stack runs. `db`, `keys` and `fleet` work on the stores
directly and are what `make up` runs before the services start;
`backtest` works on files.

\b
Exit codes (every error is one line on stderr):
  0    done
  1    failed: a service answered an error, or did not answer
  2    refused input: a wrong option or value, unusable data; nothing was changed
  3    ingest: stored, with rows quarantined (the report says which and why)
  130  interrupted (Ctrl-C)
  141  the output was closed early (`intraday devices | head`)
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import typer
from typer.exceptions import TyperException

from intraday.config import get_settings


def _fail(message: str, code: int = 1) -> None:
    print(f"intraday: {message}", file=sys.stderr)
    raise SystemExit(code)


def _console(stderr: bool = False):
    """Rich's console: colour and the terminal's width on a terminal; plain,
    wide lines into a pipe or a file (so a table is not folded to 80 columns)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, highlight=False, width=None if stream.isatty() else 250,
                   no_color=not stream.isatty())


def _table(columns: list[str], rows: list[list], title: str | None = None,
           right: tuple[int, ...] = ()) -> None:
    """A table on stdout; `right` are the indexes of numeric columns."""
    from rich import box
    from rich.table import Table

    t = Table(*columns, title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
              header_style="bold")
    for k in right:
        t.columns[k].justify = "right"
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    _console().print(t)


def _gateway() -> httpx.Client:
    """The gateway, with this user's API key (INTRADAY_API_KEY, else the
    file `make up` writes: INTRADAY_API_KEY_FILE, default .data/api-key)."""
    settings = get_settings()
    key = settings.client_api_key
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=settings.gateway_url, timeout=90, headers=headers)


def _http_error(r: httpx.Response) -> None:
    try:
        detail = r.json().get("detail") or r.json().get("error") or r.text
    except ValueError:
        detail = r.text
    _fail(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {detail}")


def cmd_forecast(args: argparse.Namespace) -> None:
    if args.fleet == (args.device_id is not None):
        _fail("name one DEVICE_ID, or --fleet [--devices ...] for a portfolio")
    body: dict = {"horizon_hours": args.horizon_hours}
    if args.fleet:
        if args.devices:
            body["devices"] = [d.strip() for d in args.devices.split(",") if d.strip()]
        path = "/forecast/fleet"
    else:
        body["device_id"] = args.device_id
        path = "/forecast/intraday"
    if args.start:
        body["forecast_start"] = args.start
    with _gateway() as gw:
        try:
            r = gw.post(path, params={"wait": str(not args.no_wait).lower()}, json=body,
                        timeout=310 if args.fleet else httpx.USE_CLIENT_DEFAULT)
        except httpx.ConnectError:
            _fail(f"gateway not reachable at {get_settings().gateway_url} (is `make up` running?)")
    if r.status_code >= 400:
        _http_error(r)
    view = r.json()
    if args.json or "result" not in view:
        print(json.dumps(view, indent=2))
        return
    if args.fleet:
        print_fleet_forecast(view["result"])
    else:
        print_forecast(view["result"])


def print_fleet_forecast(result: dict) -> None:
    pf = result["portfolio"]
    print(f"fleet forecast {result['forecast_id']}")
    print(f"  {pf['devices']} devices  model {result['model_version']}  data to {result['data_end']}"
          + (f"  ({len(result['failed'])} not forecast: see --json)" if result["failed"] else ""))
    for note in pf.get("notes", []):
        print(f"  note: {note}")
    _table(["interval (UTC)", "P10 kW", "P50 kW", "P90 kW", "mean kW"],
           [[i["interval_start"][:16], f"{i['p10']:.1f}", f"{i['p50']:.1f}", f"{i['p90']:.1f}",
             f"{i['mean']:.1f}"] for i in pf["intervals"][::4]],  # hourly rows; every interval is in --json
           title="the portfolio's total, hourly", right=(1, 2, 3, 4))


def print_forecast(result: dict) -> None:
    intervals = result["intervals"]
    p90_max = max(i["p90"] for i in intervals) or 1.0
    print(f"forecast {result['forecast_id']}")
    print(f"  device {result['device_id']}  model {result['model_version']}  "
          f"data {result['data_window']['start']} .. {result['data_window']['end']}"
          + (f"  ({result['history_days']:.1f} days of history)" if result.get("history_days") else ""))
    for note in result.get("notes", []):
        print(f"  note: {note}")
    width = 40
    rows = []
    for i in intervals[::4]:  # hourly rows; the full 96 intervals are in --json
        lo, mid, hi = (int(round(i[q] / p90_max * width)) for q in ("p10", "p50", "p90"))
        bar = " " * lo + "-" * max(mid - lo, 0) + "|" + "-" * max(hi - mid - 1, 0)
        rows.append([i["interval_start"][:16], f"{i['p10']:.3f}", f"{i['p50']:.3f}", f"{i['p90']:.3f}",
                     f"{i['mean']:.3f}", bar])
    _table(["interval (UTC)", "P10 kW", "P50 kW", "P90 kW", "mean kW", "P10 - P50 | - P90"], rows,
           right=(1, 2, 3, 4))


def cmd_prices(args: argparse.Namespace) -> None:
    """A random-walk price feed with occasional jumps, published via the gateway."""
    rng = np.random.default_rng(args.seed)
    price = args.price
    with _gateway() as gw:
        for n in range(args.count):
            if n:
                price += rng.normal(0, args.step) + (rng.random() < 0.1) * rng.normal(0, 4 * args.step)
            tick = {"price_eur_mwh": round(float(price), 2), "at": datetime.now(UTC).isoformat()}
            try:
                r = gw.post("/prices", json=tick)
            except httpx.ConnectError:
                _fail(f"gateway not reachable at {get_settings().gateway_url} (is `make up` running?)")
            if r.status_code >= 400:
                _http_error(r)
            print(f"[{n + 1}/{args.count}] {tick['at'][:19]}  {tick['price_eur_mwh']:8.2f} EUR/MWh",
                  flush=True)
            if n + 1 < args.count:
                time.sleep(args.interval)


def cmd_keys_create(args: argparse.Namespace) -> None:
    from intraday import auth
    from intraday.audit import db

    settings = get_settings()
    if args.if_missing and args.out and args.out.is_file():
        with db.connect(settings.pg_dsn) as conn:
            try:
                held = auth.verify(conn, settings.api_key_pepper, args.out.read_text().strip())
                print(f"the key in {args.out} ({held.name}, {held.key_id}) is valid", file=sys.stderr)
                return
            except auth.AuthError as e:
                print(f"the key in {args.out} is not valid ({e}): making a new one", file=sys.stderr)
    try:
        scopes = auth.parse_scopes(args.scopes)
        with db.connect(settings.pg_dsn) as conn:
            key = auth.create_key(conn, settings.api_key_pepper, args.name, scopes, args.rate)
            conn.commit()
    except ValueError as e:
        _fail(str(e), 2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.touch(mode=0o600)
        args.out.write_text(key + "\n")
    print(f"key for {args.name}, scopes {', '.join(scopes)} (shown once; only its hash is stored):",
          file=sys.stderr)
    print(key)


def cmd_keys_list(args: argparse.Namespace) -> None:
    from intraday import auth
    from intraday.audit import db

    with db.connect(get_settings().pg_dsn) as conn:
        keys = auth.list_keys(conn)
    if args.json:
        print(json.dumps(keys, default=str, indent=2))
        return
    rows = []
    for k in keys:
        state = f"revoked {k['revoked_at']:%Y-%m-%d %H:%M}" if k["revoked_at"] else "active"
        used = f"{k['last_used_at']:%Y-%m-%d %H:%M}" if k["last_used_at"] else "never"
        rate = f"{k['rate_per_minute']}/min" if k["rate_per_minute"] else "default"
        rows.append([k["key_id"], k["name"], state, used, rate, ",".join(k["scopes"])])
    _table(["key id", "holder", "state", "last used", "rate", "scopes"], rows)


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    from intraday import auth
    from intraday.audit import db

    with db.connect(get_settings().pg_dsn) as conn:
        revoked = auth.revoke(conn, args.key)
        conn.commit()
    if not revoked:
        _fail(f"no active key with id or name {args.key!r}", 2)
    print(f"revoked {', '.join(revoked)} (the gateway refuses them within "
          f"{get_settings().api_key_cache_seconds:.0f} s)")


def cmd_db_migrate(_: argparse.Namespace) -> None:
    from intraday.audit import db

    with db.connect(get_settings().pg_dsn) as conn:
        db.migrate(conn)
    print("audit schema up to date")


def _open_store(required: bool = True):
    """The telemetry store, or None when the telemetry service holds it."""
    from intraday.errors import StoreInUse
    from intraday.telemetry.store import TelemetryStore

    try:
        store = TelemetryStore.from_settings(get_settings())
    except StoreInUse as e:
        if required:
            _fail(f"{e}; stop it with `make down`, or use the running service")
        return None
    store.migrate()
    return store


_live = None  # (Progress, task id) while a long command runs on a terminal


def _stderr(line: str) -> None:
    """A progress or status line: on a terminal, the spinner's text (with the
    elapsed time); into a pipe or a log, a line of its own."""
    if _live is not None:
        from rich.markup import escape

        progress, task = _live
        progress.update(task, description=escape(line.strip()))
    else:
        print(line, file=sys.stderr, flush=True)


@contextmanager
def _working(label: str):
    """Rich's spinner and elapsed time on stderr for a long step, when stderr
    is a terminal; lines otherwise."""
    global _live
    if not sys.stderr.isatty():
        _stderr(label)
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                  console=_console(stderr=True), transient=True) as progress:
        _live = (progress, progress.add_task(label, total=None))
        try:
            yield
        finally:
            _live = None


def _fleet_args(args: argparse.Namespace):
    from intraday.telemetry import fleet
    from intraday.timeutil import floor_quarter_hour

    if args.devices < 1 or args.days < 1:
        _fail("--devices and --days must be at least 1")
    end = args.end or datetime.now(UTC)
    end = floor_quarter_hour(end)
    start = end - timedelta(days=args.days)
    faults = fleet.NO_FAULTS if args.faults == "none" else fleet.FaultRates()
    return start, end, faults


def cmd_fleet_generate(args: argparse.Namespace) -> None:
    from intraday.telemetry.loader import load_fleet, write_fleet

    start, end, faults = _fleet_args(args)
    _stderr(f"generating {args.devices:,} heat pumps x {args.days} days "
            f"({start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC), seed {args.seed}, "
            f"faults {args.faults}")
    if args.out:
        with _working("generating"):
            summary = write_fleet(Path(args.out), args.devices, start, end, args.seed, faults, _stderr)
        print(f"wrote {summary.readings:,} readings of {summary.devices:,} devices in "
              f"{summary.seconds:.1f} s: {', '.join(summary.files)}")
    else:
        store = _open_store()
        try:
            if args.if_empty and store.device_count() > 0:
                print(f"telemetry store has {store.device_count()} devices; fleet not loaded")
                return
            with _working("generating and storing"):
                summary = load_fleet(store, args.devices, start, end, args.seed, faults, _stderr)
        finally:
            store.close()
        r = summary.ingest
        print(f"loaded {summary.devices:,} devices in {summary.seconds:.1f} s: "
              f"{r.inserted:,} readings stored, {r.duplicates:,} duplicate messages dropped, "
              f"{r.already_stored:,} already stored, {r.quarantined:,} quarantined; "
              f"{summary.weather_rows:,} weather rows")
    print("faults: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in summary.faults.items()))


def cmd_ingest(args: argparse.Namespace) -> None:
    from intraday.errors import BatchConflict, InvalidRequest
    from intraday.telemetry.ingest import ingest_file

    path = Path(args.file)
    if not path.is_file():
        _fail(f"{path}: no such file")

    def progress(report) -> None:
        _stderr(f"  {report.rows:>12,} rows  inserted {report.inserted:,}  "
                f"quarantined {report.quarantined:,}")

    store = None if args.url else _open_store(required=False)
    try:
        with _working(f"ingesting {path}"):
            if store is not None:
                report = ingest_file(store, path, batch_id=args.batch_id, progress=progress).to_dict()
            else:
                report = _ingest_via_service(path, args, progress)
    except (InvalidRequest, BatchConflict) as e:
        _fail(str(e), 2)
    finally:
        if store is not None:
            store.close()
    report.pop("touched", None)
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["status"] == "duplicate_batch":
        print(f"{path}: already ingested as batch {report['batch_id']}; nothing written")
    else:
        print(f"{path}: {report['status']}: {report['rows']:,} rows, {report['inserted']:,} inserted, "
              f"{report['duplicates']:,} duplicates dropped, {report['already_stored']:,} already stored, "
              f"{report['quarantined']:,} quarantined")
        for reason, n in report["reasons"].items():
            print(f"  quarantined {n:,} x {reason}")
        for e in report["errors"]:
            print(f"  rejected: {e}")
    if report["status"] == "rejected":
        raise SystemExit(2)
    if report["quarantined"] and report["status"] != "duplicate_batch":
        raise SystemExit(3)


def _ingest_via_service(path: Path, args: argparse.Namespace, progress) -> dict:
    """Send the file chunk by chunk to the telemetry service (which owns the
    embedded store while it runs)."""
    from intraday.telemetry.ingest import file_batch_id, read_chunks

    batch_id = args.batch_id or file_batch_id(path)
    chunks = ((f"{batch_id}/{n:05d}", chunk) for n, chunk in enumerate(read_chunks(path)))
    return send_chunks(chunks, batch_id, "file", progress, args.url)


def send_chunks(chunks, batch_id: str, source: str, progress, url: str | None = None) -> dict:
    """(batch id, frame) chunks of readings to the telemetry service's
    `POST /ingest` as Parquet, in order; one report for them all."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from intraday.telemetry.ingest import IngestReport

    url = url or get_settings().telemetry_url
    total = IngestReport(batch_id=batch_id, source=source, status="duplicate_batch")
    offset = 0
    # The telemetry app answers only its sidecar's token (make up keeps it
    # in the data directory, readable by the operator of this machine).
    token = get_settings().app_api_token
    headers = {"dapr-api-token": token} if token else {}
    with httpx.Client(base_url=url, timeout=300, headers=headers) as client:
        for chunk_id, chunk in chunks:
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), buf)
            try:
                r = client.post("/ingest", content=buf.getvalue(),
                                params={"batch_id": chunk_id, "row_offset": offset},
                                headers={"content-type": "application/vnd.apache.parquet"})
            except httpx.ConnectError:
                _fail(f"telemetry service not reachable at {url}")
            # 422 with a report: the chunk was rejected as a batch; other errors stop.
            rejected = r.json().get("detail") if r.status_code == 422 else None
            if r.status_code >= 400 and not isinstance(rejected, dict):
                _http_error(r)
            total.add(IngestReport(**(rejected or r.json())))
            offset += len(chunk)
            progress(total)
    return total.to_dict()


def _training_config(args: argparse.Namespace, horizon: int):
    from intraday.forecasting.model import TrainingConfig

    if args.train_rows < 10_000 or args.trees < 10:
        _fail("--train-rows must be at least 10000 and --trees at least 10")
    return TrainingConfig(horizon=horizon, train_rows=args.train_rows, num_trees=args.trees,
                          tail_trees=max(10, args.trees // 2))


def _load_backtest_data(args: argparse.Namespace):
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


def _horizon(args: argparse.Namespace, panel) -> int:
    """--horizon in steps of the data's grid: one day of them by default, two at most."""
    if args.horizon is None:
        return panel.per_day
    if not 1 <= args.horizon <= 2 * panel.per_day:
        _fail(f"--horizon {args.horizon}: must be 1..{2 * panel.per_day} steps of {panel.step_minutes} min "
              "(up to two days)", 2)
    return args.horizon


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


def cmd_train(args: argparse.Namespace) -> None:
    from intraday.forecasting import modelstore

    if args.data is None and not args.local and _train_via_gateway(args):
        return
    if args.if_none_promoted:
        served = modelstore.default_store().promoted()
        if served:
            print(f"model {served} is served already: nothing trained")
            return
    _train_here(args)


def _train_here(args: argparse.Namespace) -> None:
    """Train on a file or the telemetry store opened here (the stack
    stopped): with --holdout-days, scored against the served model on those
    days, promoted only if better (or --force), the decision recorded."""
    from intraday.forecasting import evaluation, modelstore
    from intraday.forecasting.features import SERVING_STEP_MINUTES
    from intraday.forecasting.model import QuantileModel

    if args.data:
        data = _load_backtest_data(args)
        source = {"file": args.data, "sha256": _file_sha256(Path(args.data)), "weather": args.weather,
                  "devices": args.devices}
    else:
        if args.freq and args.freq not in ("15min", "15m", "15T"):
            _fail(f"--freq {args.freq}: the telemetry store holds quarter-hours; --freq applies to --data", 2)
        data, source = _store_training_data(args.days, args.end)
    promote = args.promote or args.force
    if promote and data.panel.step_minutes != SERVING_STEP_MINUTES:
        _fail(f"--promote: the service forecasts {SERVING_STEP_MINUTES}-min intervals and this data is "
              f"on a {data.panel.step_minutes}-min grid; the model is for backtests only "
              "(train without --promote)", 2)
    horizon = _horizon(args, data.panel)
    config = _training_config(args, horizon)
    store = modelstore.default_store()
    started = time.monotonic()
    holdout = args.holdout_days or 0
    if not 0 <= holdout <= 30:
        _fail(f"--holdout-days {holdout}: must be 0..30", 2)
    from intraday.errors import InvalidRequest

    try:
        with _working("training"):
            model, origins = evaluation.train_candidate(data, config, holdout, _stderr)
    except InvalidRequest as e:
        _fail(str(e), 2)
    # Where the training data came from (the window and its hash are in "training").
    model.manifest["data"] = source
    artifact = model.to_bytes()
    version = store.save(artifact, model.manifest)
    line = f"model {version}: trained in {time.monotonic() - started:.0f} s, {len(artifact) / 1e6:.1f} MB"
    decision = None
    if holdout:
        served = store.promoted()
        champion = QuantileModel.from_bytes(store.artifact(served)) if served else None
        scored = evaluation.evaluate(model, champion, data, origins, horizon)
        better, reason = evaluation.decide(scored, args.force)
        promote = promote and better
        decision = _record_local_training(version, served, promote, args.force, reason, scored, data)
    if promote:
        store.promote(version)
        line += ", promoted"
    v = model.manifest["validation"]["full_history"]
    print(f"{line}\n  validation: WAPE {v['wape']:.1%}, P10-P90 coverage {v['coverage_p10_p90']:.1%}"
          f"\n  bands served {_band_factors(model.factors)}"
          f"\n  store: {store.objects.url}")
    if decision is not None:
        print_training(decision)


def _band_factors(factors) -> str:
    """The rolling recalibration a model serves with, in a line."""
    def mean(f):
        return f"x{f[:, 0].mean():.2f} below, x{f[:, 1].mean():.2f} above"

    parts = [f"devices {mean(factors.device)}"] if factors.device is not None else []
    parts += [f"totals of ~{size} devices {mean(f)}" for size, f in sorted(factors.portfolio.items())]
    return (f"rescaled by their last {len(factors.days)} scored days: " + "; ".join(parts)) if parts \
        else "as calibrated (no scored days)"


def _record_local_training(version, served, promoted, forced, reason, scored, data) -> dict:
    """The decision as the training workflow records it (trigger `cli`);
    printed, and written to the audit database when it is reachable."""
    import uuid

    from intraday.audit import db
    from intraday.forecasting import baseline
    from intraday.timeutil import isoformat_z

    now = isoformat_z(datetime.now(UTC))
    row = {"training_id": f"train-cli-{uuid.uuid4().hex[:16]}", "trigger": "cli",
           "requested_by": "cli", "requested_at": now, "finished_at": now,
           "data_start": isoformat_z(data.panel.timestamp(0)),
           "data_end": isoformat_z(data.panel.timestamp(data.panel.intervals)),
           "devices": int(len(data.panel.device_ids)), "candidate_version": version,
           "champion_version": served or baseline.MODEL_VERSION, "promoted": promoted, "forced": forced,
           "reason": reason, "evaluation": scored.to_dict(), "trace_id": None}
    try:
        with db.connect(get_settings().pg_dsn) as conn:
            db.record_training(conn, row)
    except Exception as e:  # no audit database here: the decision is still printed
        _stderr(f"the decision is not recorded in the audit database: {str(e).splitlines()[0]}")
    return row


def print_training(t: dict) -> None:
    """A training's decision: what was promoted or kept, why, and both scores."""
    verdict = "promoted" if t["promoted"] else "kept the champion"
    print(f"training {t['training_id']} ({t['trigger']}): {verdict}")
    print(f"  candidate {t['candidate_version']}  champion {t['champion_version']}")
    print(f"  {t['reason']}")
    rows = []
    for role in ("candidate", "champion"):
        p = t["evaluation"][role]["portfolio"]
        cov = p.get("coverage_p10_p90")
        rows.append([role, f"{p.get('pinball_mean', float('nan')):.3f}", f"{p.get('wape', float('nan')):.1%}",
                     f"{p.get('bias', float('nan')):+.1%}", "-" if cov is None else f"{cov:.1%}"])
    _table(["", "pinball kW", "WAPE", "bias", "P10-P90"], rows, right=(1, 2, 3, 4),
           title=f"the portfolio of {t['devices']:,} devices on the held-out days")


def _train_via_gateway(args: argparse.Namespace) -> bool:
    """The training workflow of the running stack, followed until it has
    decided; False when no gateway answers (then the store is trained on
    here)."""
    with _gateway() as gw:
        try:
            gw.get("/health", timeout=2)
        except httpx.TransportError:
            return False
        if args.if_none_promoted:
            r = gw.get("/models", params={"limit": 1})
            if r.status_code >= 400:
                _http_error(r)
            if r.json()["promoted"]:
                print(f"model {r.json()['promoted']} is served already: nothing trained")
                return True
        body = {"days": args.days, "train_rows": args.train_rows, "trees": args.trees, "force": args.force}
        if args.holdout_days is not None:  # else the service's default (TrainingRequest)
            body["holdout_days"] = args.holdout_days
        if args.end:
            body["end"] = args.end
        r = gw.post("/models/train", json=body)
        if r.status_code >= 400:
            _http_error(r)
        view = r.json()
        tid = view["training_id"]
        started = time.monotonic()
        with _working(f"training {tid} on the running stack ({view['status'].lower()}); following it"):
            while view["status"] not in ("COMPLETED", "FAILED", "TERMINATED", "NOT_FOUND"):
                time.sleep(2)
                r = gw.get(f"/models/trainings/{tid}")
                if r.status_code >= 400 and r.status_code != 404:
                    _http_error(r)
                view = r.json()
                _stderr(f"training {tid}: {view['status'].lower()} after {time.monotonic() - started:.0f} s")
    if view["status"] != "COMPLETED":
        _fail(f"training {tid}: {view['status']}: {view.get('detail', '')}")
    print_training(view["result"])
    return True


def _store_training_data(days: int, until: str | None = None):
    from intraday.errors import InvalidRequest
    from intraday.forecasting import backtest
    from intraday.timeutil import floor_quarter_hour

    end = floor_quarter_hour(datetime.fromisoformat(until) if until else datetime.now(UTC))
    start = end - timedelta(days=days)
    store = _open_store()
    try:
        data = backtest.from_store(store, start, end)
    except InvalidRequest as e:
        _fail(str(e), 2)
    finally:
        store.close()
    _stderr(f"telemetry store: {len(data.panel.device_ids):,} devices, {data.readings:,} quarter-hour values "
            f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC")
    return data, {"telemetry_store": get_settings().telemetry_backend, "days": days}


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _models_listing(limit: int = 20) -> dict:
    """{promoted, models, trainings}: from the running stack, else from the
    model store and the audit database here (trainings empty without one)."""
    from intraday.audit import db
    from intraday.forecasting import modelstore

    with _gateway() as gw:
        try:
            r = gw.get("/models", params={"limit": limit})
        except httpx.TransportError:
            r = None
    if r is not None:
        if r.status_code >= 400:
            _http_error(r)
        return r.json()
    store = modelstore.default_store()
    listing = {"promoted": store.promoted(), "models": store.versions(), "trainings": []}
    try:
        with db.connect(get_settings().pg_dsn) as conn:
            listing["trainings"] = db.read_trainings(conn, limit)
    except Exception as e:  # no audit database here: versions only
        _stderr(f"no training history (audit database: {str(e).splitlines()[0]})")
    return listing


def cmd_models_list(args: argparse.Namespace) -> None:
    listing = _models_listing(args.history)
    versions, promoted = listing["models"], listing["promoted"]
    if args.json:
        print(json.dumps(listing, indent=2))
        return
    if not versions:
        print("no models stored; train one with `intraday train` (or --data FILE)")
        return
    rows = []
    for m in versions:
        t, v = m.get("training", {}), m.get("validation", {}).get("full_history", {})
        rows.append(["*" if m["version"] == promoted else "", m["version"], f"{t.get('devices', 0):,}",
                     f"{t.get('data_start', '')[:16]} .. {t.get('data_end', '')[:16]}",
                     f"{v.get('wape', float('nan')):.1%}", f"{v.get('coverage_p10_p90', float('nan')):.1%}"])
    _table(["", "version", "devices", "data (UTC)", "WAPE", "P10-P90"], rows,
           title="models (* promoted: what the forecaster serves)", right=(2, 4, 5))
    if listing["trainings"]:
        rows = []
        for t in listing["trainings"]:
            e = t["evaluation"]
            new, old = (e[role]["portfolio"].get("pinball_mean", float("nan"))
                        for role in ("candidate", "champion"))
            rows.append([t["finished_at"][:16], t["trigger"], t["candidate_version"], f"{new:.3f}",
                         t["champion_version"], f"{old:.3f}",
                         ("promoted (forced)" if t["forced"] else "promoted") if t["promoted"] else "kept"])
        _table(["finished (UTC)", "trigger", "challenger", "pinball", "champion", "pinball", "decision"],
               rows,
               title="trainings, newest first: challenger vs champion on the same held-out days "
                     "(portfolio pinball, kW)", right=(3, 5))


def cmd_models_promote(args: argparse.Namespace) -> None:
    from intraday.forecasting import modelstore

    try:
        pointer = modelstore.default_store().promote(args.version)
    except modelstore.UnknownModel as e:
        _fail(str(e), 2)
    print(f"promoted {pointer['version']} (was {pointer['previous'] or 'none'})")


def cmd_warm(args: argparse.Namespace) -> None:
    body = {"top": args.top, "days": args.days, "devices": args.device or []}
    with _gateway() as gw:
        try:
            r = gw.post("/warm", json=body, timeout=300)
        except httpx.ConnectError:
            _fail(f"gateway not reachable at {get_settings().gateway_url} (is `make up` running?)")
    if r.status_code >= 400:
        _http_error(r)
    out = r.json()
    print(f"model {out['model_version']} in memory ({out['model_loads']}); "
          f"{out['devices_warmed']} device actors warm in {out['seconds']:.1f} s")
    for device, error in out["failed"].items():
        print(f"  {device}: {error}")
    if out["failed"]:
        raise SystemExit(1)


def _local_apps() -> list[tuple[str, int, int]]:
    """(app id, app port, sidecar HTTP port) of the local stack, from dapr.yaml."""
    import yaml

    from intraday.config import REPO_ROOT

    try:
        run = yaml.safe_load((REPO_ROOT / "dapr.yaml").read_text())
        return [(a["appID"], a["appPort"], a["daprHTTPPort"]) for a in run["apps"]]
    except (OSError, KeyError, TypeError):
        return []


def _scrape(url: str) -> dict[str, float]:
    """A Prometheus text page as {'name{labels}': value}; empty when it does not answer."""
    try:
        r = httpx.get(url, timeout=2)
    except httpx.TransportError:
        return {}
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def cmd_status(args: argparse.Namespace) -> None:
    """What runs (each app and its sidecar), the served model, the fleet's
    staleness and the last decisions; exit 1 when the gateway does not answer."""
    apps = []
    for name, port, sidecar in _local_apps():
        checks = {}
        for what, url in (("app_state", f"http://127.0.0.1:{port}/health"),
                          ("sidecar", f"http://127.0.0.1:{sidecar}/v1.0/healthz")):
            try:
                checks[what] = "up" if httpx.get(url, timeout=2).is_success else "unhealthy"
            except httpx.TransportError:
                checks[what] = "down"
        apps.append({"app": name, "port": port, **checks})
    telemetry = next((a for a in apps if a["app"] == "telemetry"), None)
    scraped = _scrape(f"http://127.0.0.1:{telemetry['port']}/metrics") if telemetry else {}
    fleet = {"devices": scraped.get("intraday_fleet_devices"),
             "staleness_p50_s": scraped.get('intraday_telemetry_staleness_seconds{quantile="0.5"}'),
             "staleness_max_s": scraped.get('intraday_telemetry_staleness_seconds{quantile="1"}'),
             "stale_1h": scraped.get('intraday_telemetry_stale_devices{threshold="1h"}')}
    overview = None
    with _gateway() as gw:
        try:
            r = gw.get("/ui/api/overview")
            overview = r.json() if r.status_code == 200 else {"error": f"{r.status_code}: {r.text[:200]}"}
            r = gw.get("/devices/freshness", params={"limit": 5})
            if r.status_code == 200:
                fleet["freshness"] = r.json()
        except httpx.TransportError as e:
            overview = {"error": f"gateway not reachable at {get_settings().gateway_url}: {e}"}
    if args.json:
        print(json.dumps({"apps": apps, "fleet": fleet, "overview": overview}, indent=2))
    else:
        _print_status(apps, fleet, overview)
    if "error" in (overview or {}):
        raise SystemExit(1)


def _print_status(apps: list[dict], fleet: dict, overview: dict) -> None:
    out = _console()
    if apps:
        _table(["app", "port", "health", "sidecar"],
               [[a["app"], a["port"], a["app_state"], a["sidecar"]] for a in apps], title="the local stack")
    if "error" in overview:
        out.print(f"[red]gateway:[/] {overview['error']}")
        return
    m = overview["model"]
    served = m.get("served")
    out.print(f"[bold]model[/] {served['version']}, {served['devices']} devices, data to "
              f"{served['data_end']}" if served
              else "[bold]model[/] none promoted: forecasts come from the seasonal fallback")
    last = (m.get("trainings") or [None])[0]
    if last:
        out.print(f"  last training {last['training_id']} ({last['trigger']}, {last['finished_at'][:16]}): "
                  f"{'promoted' if last['promoted'] else 'kept the champion'}; {last['reason']}")
    if fleet["devices"] is not None:
        median, worst = fleet["staleness_p50_s"], fleet["staleness_max_s"]
        ages = (f"; newest reading {median / 60:.0f} min old at the median, {worst / 60:.0f} min at worst; "
                f"{fleet['stale_1h']:.0f} quiet for over an hour"
                if median is not None and np.isfinite(median) and np.isfinite(worst) else "")
        out.print(f"[bold]fleet[/] {fleet['devices']:.0f} devices{ages}")
    quiet = [d for d in (fleet.get("freshness") or {}).get("stalest", [])
             if d["age_seconds"] is None or d["age_seconds"] > 3600]
    if quiet:
        def quiet_for(d: dict) -> str:
            return "never reported" if d["age_seconds"] is None else f"{d['age_seconds'] / 3600:.1f} h"

        out.print("  no recent readings (the stalest): "
                  + ", ".join(f"{d['device_id']} ({quiet_for(d)})" for d in quiet))
    _print_scores(overview.get("scores") or {})
    pf = overview.get("portfolio")
    out.print(f"[bold]portfolio[/] {pf['forecast_id']} ({pf['devices']} devices, made "
              f"{pf['completed_at'][:16]})" if pf else "[bold]portfolio[/] no fleet forecast yet")
    if overview["decisions"]:
        _table(["decided (UTC)", "price EUR/MWh", "buy MWh", "sell MWh", "quantile", "model"],
               [[d["decided_at"][:19], f"{d['price_eur_mwh']:.2f}", f"{d['buy_mwh']:.3f}",
                 f"{d['sell_mwh']:.3f}", f"P{round(100 * d['target_quantile'])}", d["model_version"]]
                for d in overview["decisions"][:5]],
               title="the last decisions", right=(1, 2, 3))
    else:
        out.print("[bold]decisions[/] none yet")


def _print_scores(scores: dict) -> None:
    """Live accuracy (GET /scores): the last 7 days' scored forecasts
    beside the served model's held-out scores from its training."""
    out, live = _console(), scores.get("live")
    if not live:
        out.print(f"[bold]live accuracy[/] {scores.get('error', 'not available')}")
        return
    if not live["forecasts"]:
        out.print(f"[bold]live accuracy[/] no forecast scored against readings between {live['from']} and "
                  f"{live['to']} yet (a forecast is scored once its last interval is "
                  f"{get_settings().scoring_lag_hours:g} h over)")
        return

    def cells(pf: dict | None, dev: dict | None) -> list[str]:
        pf, dev = pf or {}, dev or {}
        return [_pct(pf.get("wape")), _pct(pf.get("bias"), signed=True),
                "–" if pf.get("pinball") is None else f"{pf['pinball']:.2f}", _pct(pf.get("coverage")),
                _pct(dev.get("wape")), _pct(dev.get("bias"), signed=True), _pct(dev.get("coverage"))]

    rows = []
    if scores.get("training"):
        t = scores["training"]
        rows.append([f"held out at training ({t['days']} days)", *cells(t["portfolio"], t["device"])])
    rows.append(["last 7 days", *cells(live["week"]["portfolio"], live["week"]["device"])])
    rows += [[d["day"], *cells(d.get("portfolio"), d.get("device"))] for d in reversed(live["days"])]
    _table(["", "portfolio WAPE", "bias", "pinball kW", "P10-P90", "device WAPE", "bias", "P10-P90"], rows,
           title=f"live accuracy: {live['forecasts']} forecasts scored against their readings",
           right=tuple(range(1, 8)))
    for alert in live["alerts"]:
        out.print(f"[red]alert:[/] {alert}")


def _pct(value: float | None, signed: bool = False) -> str:
    return "–" if value is None else f"{100 * value:{'+' if signed else ''}.1f} %"


# -- the command line (Typer): each command gathers its options into the
# namespace the cmd_* function above takes --------------------------------

app = typer.Typer(
    name="intraday", help=__doc__.replace("`intraday`: the", "The", 1), no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
db_app = typer.Typer(help="audit database", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the gateway", no_args_is_help=True)
fleet_app = typer.Typer(help="fleet data", no_args_is_help=True)
models_app = typer.Typer(help="the model store", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(fleet_app, name="fleet")
app.add_typer(models_app, name="models")

Json = Annotated[bool, typer.Option("--json", help="print the full JSON")]
Data = Annotated[str | None, typer.Option(help="CSV or Parquet: device_id, timestamp (UTC), power (kW)")]
Weather = Annotated[str | None, typer.Option(
    help="temperature forecasts: timestamp, outdoor_temp [, location, issued_at]")]
DeviceFile = Annotated[str | None, typer.Option(
    "--devices", help="device attributes (device_id, location, country, ...); default: "
                      "<stem>.devices.parquet beside --data if present")]
Freq = Annotated[str | None, typer.Option(
    help="grid step: 5min, 10min, 15min, 20min, 30min or 60min; finer readings are averaged to it "
         "(default: the data's own step, quarter-hours for finer data)")]
Horizon = Annotated[int | None, typer.Option(help="steps of that grid ahead (default: one day of them)")]
TrainRows = Annotated[int, typer.Option(help="training rows sampled")]
Trees = Annotated[int, typer.Option(help="boosting rounds of the P50 model (P10/P90: half)")]


def _run(func, **options) -> None:
    func(argparse.Namespace(**options))


@app.command()
def forecast(
    device_id: Annotated[str | None, typer.Argument(help="the device (or --fleet)")] = None,
    fleet: Annotated[bool, typer.Option(
        "--fleet", help="the portfolio of the fleet (or of --devices)")] = False,
    devices: Annotated[str | None, typer.Option(
        help="with --fleet: comma-separated device ids (default: every device)")] = None,
    start: Annotated[str | None, typer.Option(
        help="forecast start, UTC quarter-hour (default: next quarter-hour)")] = None,
    horizon_hours: Annotated[float, typer.Option(help="hours ahead, multiples of 0.25")] = 24.0,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="return the forecast id at once")] = False,
    json_: Json = False,
) -> None:
    """Forecast one device, or the fleet's portfolio, through the gateway."""
    _run(cmd_forecast, device_id=device_id, fleet=fleet, devices=devices, start=start,
         horizon_hours=horizon_hours, no_wait=no_wait, json=json_)


@app.command()
def prices(
    count: Annotated[int, typer.Option(help="ticks to publish")] = 20,
    interval: Annotated[float, typer.Option(help="seconds between ticks")] = 1.0,
    price: Annotated[float, typer.Option(help="starting price, EUR/MWh")] = 90.0,
    step: Annotated[float, typer.Option(help="random-walk step, EUR/MWh")] = 3.0,
    seed: Annotated[int | None, typer.Option(help="random seed (default: a new walk each time)")] = None,
) -> None:
    """Publish a simulated price feed."""
    _run(cmd_prices, count=count, interval=interval, price=price, step=step, seed=seed)


@app.command()
def status(json_: Json = False) -> None:
    """What runs, the served model, the fleet's staleness and the last decisions."""
    _run(cmd_status, json=json_)


@db_app.command()
def migrate() -> None:
    """Create or update the audit schema."""
    _run(cmd_db_migrate)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who holds it (recorded as requested_by)")],
    scopes: Annotated[str, typer.Option(
        help="comma-separated: forecast:read, forecast:request, prices:publish, models:admin, "
             "fleet:admin, readings:write, weather:write; or all")],
    out: Annotated[Path | None, typer.Option(help="also write the key to this file (mode 600)")] = None,
    rate: Annotated[int | None, typer.Option(
        help="requests a minute this key may make (default: the gateway's)")] = None,
    if_missing: Annotated[bool, typer.Option("--if-missing", 
        help="with --out: keep the key the file holds if it is still valid")] = False,
) -> None:
    """A new key; printed alone on the last line, shown once."""
    _run(cmd_keys_create, name=name, scopes=scopes, out=out, rate=rate, if_missing=if_missing)


@keys_app.command("list")
def keys_list(json_: Json = False) -> None:
    """Keys with their scopes, state and last use (never the secret)."""
    _run(cmd_keys_list, json=json_)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="key id or name")]) -> None:
    """Revoke a key by id, or every key of a name."""
    _run(cmd_keys_revoke, key=key)


class Faults(enum.StrEnum):
    realistic = "realistic"
    none = "none"


def _fleet_command(name: str, doc: str, default_devices: int, default_days: int) -> None:
    def command(
        devices: Annotated[int, typer.Option(help="heat pumps")] = default_devices,
        days: Annotated[int, typer.Option(help="days of readings")] = default_days,
        seed: Annotated[int, typer.Option(help="random seed")] = 7,
        end: Annotated[datetime | None, typer.Option(
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S",
                     "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"],
            help="end of the data, ISO time (UTC without an offset; default: now, to the "
                 "quarter-hour)")] = None,
        faults: Annotated[Faults, typer.Option(
            help="telemetry faults: gaps, stuck sensors, duplicates, late arrivals")] = Faults.realistic,
        out: Annotated[str | None, typer.Option(
            help="write FILE.parquet (backtest input format) instead of the store")] = None,
        if_empty: Annotated[bool, typer.Option(
            "--if-empty", help="only when the store has no devices")] = False,
    ) -> None:
        _run(cmd_fleet_generate, devices=devices, days=days, seed=seed,
             end=end.replace(tzinfo=UTC) if end and end.tzinfo is None else end, faults=faults.value, out=out,
             if_empty=if_empty)
    command.__doc__ = doc
    fleet_app.command(name)(command)


_fleet_command("generate", "Generate a realistic heat-pump fleet into the store or a Parquet file.", 100, 30)
_fleet_command("demo", "The small demo fleet `make up` loads (24 devices, 35 days).", 24, 35)


@app.command()
def backtest(
    data: Annotated[str, typer.Option(help="CSV or Parquet: device_id, timestamp (UTC), power (kW)")],
    out: Annotated[str, typer.Option(help="report.json")],
    weather: Weather = None, devices: DeviceFile = None, freq: Freq = None, horizon: Horizon = None,
    train_rows: TrainRows = 1_500_000, trees: Trees = 60,
    forecasts_out: Annotated[str | None, typer.Option(help="the engine's forecasts as Parquet")] = None,
    portfolio_out: Annotated[str | None, typer.Option(
        help="the engine's forecast of the total of all devices as Parquet")] = None,
    plot: Annotated[str | None, typer.Option(
        help="PNG of the portfolio's and a few devices' forecasts against actuals")] = None,
    origins: Annotated[int, typer.Option(help="forecast days at the end of the data")] = 14,
    issue_time: Annotated[str, typer.Option(help="forecast start each day, HH:MM UTC")] = "10:00",
    no_peer: Annotated[bool, typer.Option("--no-peer", help="skip mlforecast")] = False,
) -> None:
    """Rolling-origin backtest of the engine against baselines."""
    _run(cmd_backtest, data=data, out=out, weather=weather, devices=devices, freq=freq, horizon=horizon,
         train_rows=train_rows, trees=trees, forecasts_out=forecasts_out, portfolio_out=portfolio_out,
         plot=plot, origins=origins, issue_time=issue_time, no_peer=no_peer)


@app.command()
def train(
    data: Data = None, weather: Weather = None, devices: DeviceFile = None, freq: Freq = None,
    horizon: Horizon = None, train_rows: TrainRows = 1_500_000, trees: Trees = 60,
    days: Annotated[int, typer.Option(help="without --data: the last D days of the store")] = 30,
    end: Annotated[str | None, typer.Option(
        help="without --data: the window's end (UTC ISO time; default: now)")] = None,
    promote: Annotated[bool, typer.Option("--promote", 
        help="serve it: at once, or with --holdout-days only if it beats the served model "
             "(the running stack's training always decides so)")] = False,
    force: Annotated[bool, typer.Option("--force", help="promote it whatever its held-out scores")] = False,
    holdout_days: Annotated[int | None, typer.Option(
        help="train before the last N days, score it and the served model there "
             "(default: 7 on the running stack, none here)")] = None,
    local: Annotated[bool, typer.Option("--local", 
        help="train here on the store or --data even if the stack runs (a remote store)")] = False,
    if_none_promoted: Annotated[bool, typer.Option("--if-none-promoted", 
        help="only when no version is served yet (what the first `make up` runs)")] = False,
) -> None:
    """Train a model and store it as a new version (on the running stack: its training workflow)."""
    _run(cmd_train, data=data, weather=weather, devices=devices, freq=freq, horizon=horizon,
         train_rows=train_rows, trees=trees, days=days, end=end, promote=promote, force=force,
         holdout_days=holdout_days, local=local, if_none_promoted=if_none_promoted)


@models_app.command("list")
def models_list(json_: Json = False,
                history: Annotated[int, typer.Option(help="the latest N trainings")] = 20) -> None:
    """Stored versions, the promoted one marked, and the trainings' champion/challenger decisions."""
    _run(cmd_models_list, json=json_, history=history)


@models_app.command("promote")
def models_promote(version: Annotated[str, typer.Argument(help="a stored version")]) -> None:
    """Serve this version."""
    _run(cmd_models_promote, version=version)


@app.command()
def warm(
    top: Annotated[int, typer.Option(help="most-requested devices of the last --days")] = 100,
    days: Annotated[int, typer.Option(help="days of requests counted")] = 7,
    device: Annotated[list[str] | None, typer.Option(help="also this device (repeatable)")] = None,
) -> None:
    """Load the served model and the most-traded devices' actors."""
    _run(cmd_warm, top=top, days=days, device=device)


@app.command()
def ingest(
    file: Annotated[str, typer.Argument(help="a CSV or Parquet file of readings")],
    batch_id: Annotated[str | None, typer.Option(
        help="batch id (default: derived from the file's content)")] = None,
    url: Annotated[str | None, typer.Option(
        help="send to this telemetry service instead of opening the store")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the full report as JSON")] = False,
) -> None:
    """Ingest a CSV or Parquet file of readings (exit 0 all stored, 2 rejected, 3 rows quarantined)."""
    _run(cmd_ingest, file=file, batch_id=batch_id, url=url, json=json_)


def _register_onboarding() -> None:
    # `devices`, `weather` and `import` (intraday/cli_onboarding.py), which
    # use this module's helpers.
    from intraday import cli_onboarding

    cli_onboarding.register(app)


if __name__ != "__main__":  # `python -m intraday.cli` runs the imported module's main (below)
    _register_onboarding()


def main(argv: list[str] | None = None) -> None:
    """The console script: the command, with every ending an exit code and
    at most one line on stderr (README: exit codes). INTRADAY_DEBUG=1
    shows the traceback of an unexpected error."""
    import os

    try:
        code = app(args=argv, prog_name="intraday", standalone_mode=False)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
    except typer.Exit as e:
        code = e.exit_code
    except TyperException as e:  # Click's errors (Typer ships its own Click): a usage error is 2
        code = e.exit_code
        if type(e).__name__ == "NoArgsIsHelpError":  # a group without its command: its help
            print(e.format_message(), file=sys.stderr)
        else:
            ctx = getattr(e, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if code == 2 and ctx is not None else ""
            print(f"intraday: {e.format_message()}{hint}", file=sys.stderr)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except BrokenPipeError:
        # The reader went away (`intraday devices | head`): say nothing, and
        # keep the interpreter's final flush from raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(devnull, stream.fileno())
        code = 141
    except httpx.TransportError as e:
        print(f"intraday: {get_settings().gateway_url} or a service behind it did not answer: {e}",
              file=sys.stderr)
        code = 1
    except SystemExit as e:
        # Click's answer to a closed pipe: exit 1 with the streams quietened.
        if e.code == 1 and "Pacify" in type(sys.stdout).__name__:
            raise SystemExit(141) from None
        raise
    except Exception as e:
        if os.environ.get("INTRADAY_DEBUG"):
            raise
        print(f"intraday: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(INTRADAY_DEBUG=1 shows where)", file=sys.stderr)
        code = 1
    if code == 130:  # Ctrl-C (Typer reports it as an exit code)
        print("\nintraday: interrupted", file=sys.stderr)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    # The onboarding commands import this module by name: run that copy,
    # not this one (`__main__`), so there is one app with every command.
    from intraday import cli as _cli

    _cli.main()
