"""`intraday`: the operator's command line.

  intraday forecast DEVICE_ID [--start ISO] [--horizon-hours H] [--no-wait] [--json]
  intraday forecast --fleet [--devices ID,ID,...] [--start ISO] [--horizon-hours H] [--no-wait] [--json]
  intraday prices [--count N] [--interval S] [--price P] [--step S] [--seed N]
  intraday devices
  intraday db migrate
  intraday keys create NAME --scopes forecast:read,forecast:request,...|all [--out FILE]
  intraday keys list [--json] | revoke KEY_ID_OR_NAME
  intraday fleet generate [--devices N] [--days D] [--seed S] [--end ISO] [--faults realistic|none]
                          [--out FILE.parquet] [--if-empty]
  intraday fleet demo [...]                 the 24-device fleet `make up` loads
  intraday ingest FILE [--batch-id ID] [--url URL] [--json]
                          exit 0 all stored, 2 rejected, 3 stored with rows quarantined
  intraday backtest --data FILE [--weather FILE] [--devices FILE] --out report.json
                    [--forecasts-out FILE.parquet] [--portfolio-out FILE.parquet] [--plot FILE.png]
                    [--freq 15min|30min|60min|...] [--horizon STEPS]
                    [--origins 14] [--issue-time HH:MM] [--no-peer]
  intraday train [--data FILE [--weather FILE] [--devices FILE] | --days 30] [--promote]
  intraday models list [--json] | promote VERSION
  intraday warm [--top N] [--days D] [--device ID ...]

Commands that reach the running system go through the gateway
(INTRADAY_GATEWAY_URL) with an API key (INTRADAY_API_KEY, else the file
INTRADAY_API_KEY_FILE, default .data/api-key, which `make up` writes); `db`,
`keys` and `fleet` work on the stores directly and are what `make up` runs
before the services start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from intraday.config import get_settings


def _fail(message: str, code: int = 1) -> None:
    print(f"intraday: {message}", file=sys.stderr)
    raise SystemExit(code)


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
    print(f"  {'interval (UTC)':<17} {'P10':>9} {'P50':>9} {'P90':>9} {'mean':>9}  kW of the total")
    for i in pf["intervals"][::4]:  # hourly rows; every interval is in --json
        print(f"  {i['interval_start'][:16]:<17} {i['p10']:9.1f} {i['p50']:9.1f} {i['p90']:9.1f} "
              f"{i['mean']:9.1f}")


def print_forecast(result: dict) -> None:
    intervals = result["intervals"]
    p90_max = max(i["p90"] for i in intervals) or 1.0
    print(f"forecast {result['forecast_id']}")
    print(f"  device {result['device_id']}  model {result['model_version']}  "
          f"data {result['data_window']['start']} .. {result['data_window']['end']}"
          + (f"  ({result['history_days']:.1f} days of history)" if result.get("history_days") else ""))
    for note in result.get("notes", []):
        print(f"  note: {note}")
    print(f"  {'interval (UTC)':<17} {'P10':>7} {'P50':>7} {'P90':>7} {'mean':>7}  kW")
    width = 40
    for i in intervals[::4]:  # hourly rows; the full 96 intervals are in --json
        lo, mid, hi = (int(round(i[q] / p90_max * width)) for q in ("p10", "p50", "p90"))
        bar = " " * lo + "-" * max(mid - lo, 0) + "|" + "-" * max(hi - mid - 1, 0)
        print(f"  {i['interval_start'][:16]:<17} {i['p10']:7.3f} {i['p50']:7.3f} {i['p90']:7.3f} "
              f"{i['mean']:7.3f}  {bar}")


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


def cmd_devices(_: argparse.Namespace) -> None:
    with _gateway() as gw:
        r = gw.get("/devices")
    if r.status_code >= 400:
        _http_error(r)
    for d in r.json():
        print(f"{d['device_id']}  {d['location']:<12} {d['building_type']:<34} "
              f"{d['rated_power_kw']:5.1f} kW")


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
    for k in keys:
        state = f"revoked {k['revoked_at']:%Y-%m-%d %H:%M}" if k["revoked_at"] else "active"
        used = f"{k['last_used_at']:%Y-%m-%d %H:%M}" if k["last_used_at"] else "never"
        rate = f"{k['rate_per_minute']}/min" if k["rate_per_minute"] else "default rate"
        scopes = ",".join(k["scopes"])
        print(f"{k['key_id']}  {k['name']:<20} {state:<24} used {used:<16} {rate:<14} {scopes}")


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


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
        summary = write_fleet(Path(args.out), args.devices, start, end, args.seed, faults, _stderr)
        print(f"wrote {summary.readings:,} readings of {summary.devices:,} devices in "
              f"{summary.seconds:.1f} s: {', '.join(summary.files)}")
    else:
        store = _open_store()
        try:
            if args.if_empty and store.device_count() > 0:
                print(f"telemetry store has {store.device_count()} devices; fleet not loaded")
                return
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
    if report["quarantined"]:
        raise SystemExit(3)


def _ingest_via_service(path: Path, args: argparse.Namespace, progress) -> dict:
    """Send the file chunk by chunk to the telemetry service (which owns the
    embedded store while it runs)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from intraday.telemetry.ingest import IngestReport, file_batch_id, read_chunks

    url = args.url or get_settings().telemetry_url
    batch_id = args.batch_id or file_batch_id(path)
    total = IngestReport(batch_id=batch_id, source="file", status="duplicate_batch")
    offset = 0
    # The telemetry app answers only its sidecar's token (make up keeps it
    # in the data directory, readable by the operator of this machine).
    token = get_settings().app_api_token
    headers = {"dapr-api-token": token} if token else {}
    with httpx.Client(base_url=url, timeout=300, headers=headers) as client:
        for n, chunk in enumerate(read_chunks(path)):
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), buf)
            try:
                r = client.post("/ingest", content=buf.getvalue(),
                                params={"batch_id": f"{batch_id}/{n:05d}", "row_offset": offset},
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
    print(f"  {'method':<22} {'WAPE':>7} {'MAE kW':>8} {'RMSE kW':>8} {'pinball':>8} {'P10-P90':>8} "
          f"{'width kW':>9}")
    for name, m in r["methods"].items():
        o = m["overall"]
        cov = f"{o['coverage_p10_p90']:.1%}" if o["coverage_p10_p90"] is not None else "-"
        width = f"{o['mean_band_width_kw']:.3f}" if o["mean_band_width_kw"] is not None else "-"
        print(f"  {name:<22} {o['wape']:7.1%} {o['mae']:8.3f} {o['rmse']:8.3f} {o['pinball_mean']:8.4f} "
              f"{cov:>8} {width:>9}")
    pf = r["portfolio"]
    print(f"portfolio: the total of {pf['devices']:,} devices, {pf['cells']['scored']:,} intervals scored "
          "(WAPE and bias of the mean)")
    print(f"  {'method':<22} {'WAPE':>7} {'bias':>7} {'pinball':>9} {'P10-P90':>8} {'width kW':>9}")
    for name, o in pf["methods"].items():
        cov = f"{o['coverage_p10_p90']:.1%}" if o["coverage_p10_p90"] is not None else "-"
        width = f"{o['mean_band_width_kw']:.1f}" if o["mean_band_width_kw"] is not None else "-"
        print(f"  {name:<22} {o['wape']:7.1%} {o['bias']:+7.1%} {o['pinball_mean']:9.3f} {cov:>8} {width:>9}")
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
          f"\n  store: {store.objects.url}")
    if decision is not None:
        print_training(decision)


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
    e = t["evaluation"]
    print(f"  {'':<10} {'pinball':>8} {'WAPE':>7} {'bias':>7} {'P10-P90':>8}  "
          f"portfolio of {t['devices']:,} devices")
    for role in ("candidate", "champion"):
        p = e[role]["portfolio"]
        cov = p.get("coverage_p10_p90")
        print(f"  {role:<10} {p.get('pinball_mean', float('nan')):8.3f} {p.get('wape', float('nan')):7.1%} "
              f"{p.get('bias', float('nan')):+7.1%} {cov if cov is None else f'{cov:.1%}':>8}")


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
        body = {"days": args.days, "holdout_days": args.holdout_days or 7, "train_rows": args.train_rows,
                "trees": args.trees, "force": args.force}
        if args.end:
            body["end"] = args.end
        r = gw.post("/models/train", json=body)
        if r.status_code >= 400:
            _http_error(r)
        view = r.json()
        tid = view["training_id"]
        _stderr(f"training {tid} on the running stack ({view['status'].lower()}); following it")
        started = time.monotonic()
        while view["status"] not in ("COMPLETED", "FAILED", "TERMINATED", "NOT_FOUND"):
            time.sleep(2)
            r = gw.get(f"/models/trainings/{tid}")
            if r.status_code >= 400 and r.status_code != 404:
                _http_error(r)
            view = r.json()
            _stderr(f"  {view['status'].lower()} after {time.monotonic() - started:.0f} s")
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
    print(f"{'':2}{'version':<32} {'devices':>8} {'data':<35} {'WAPE':>6} {'P10-P90':>8}")
    for m in versions:
        t, v = m.get("training", {}), m.get("validation", {}).get("full_history", {})
        mark = "* " if m["version"] == promoted else "  "
        print(f"{mark}{m['version']:<32} {t.get('devices', 0):>8,} "
              f"{t.get('data_start', '')[:16]}..{t.get('data_end', '')[:16]:<17} "
              f"{v.get('wape', float('nan')):6.1%} {v.get('coverage_p10_p90', float('nan')):8.1%}")
    print("(* promoted: what the forecaster serves)")
    if listing["trainings"]:
        print("\ntrainings, newest first: challenger vs champion on the same held-out days "
              "(portfolio pinball, kW)")
        for t in listing["trainings"]:
            e = t["evaluation"]
            new, old = (e[role]["portfolio"].get("pinball_mean", float("nan"))
                        for role in ("candidate", "champion"))
            verdict = "promoted" if t["promoted"] else "kept"
            print(f"  {t['finished_at'][:16]} {t['trigger']:<8} {t['candidate_version']:<32} {new:8.3f}  vs  "
                  f"{t['champion_version']:<32} {old:8.3f}  {verdict}{' (forced)' if t['forced'] else ''}")


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


def _data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required,
                   help="CSV or Parquet: device_id, timestamp (UTC), power (kW)"
                        + ("" if required else "; default: the telemetry store"))
    p.add_argument("--weather", help="temperature forecasts: timestamp, outdoor_temp [, location, issued_at]")
    p.add_argument("--devices", help="device attributes (device_id, location, country, ...); "
                                     "default: <stem>.devices.parquet beside --data if present")
    p.add_argument("--freq", help="grid step: 5min, 10min, 15min, 20min, 30min or 60min; finer readings "
                                  "are averaged to it (default: the data's own step, quarter-hours for "
                                  "finer data)")
    p.add_argument("--horizon", type=int, help="steps of that grid ahead (default: one day of them)")
    p.add_argument("--train-rows", type=int, default=1_500_000, help="training rows sampled")
    p.add_argument("--trees", type=int, default=60, help="boosting rounds of the P50 model (P10/P90: half)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intraday", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("forecast", help="forecast one device, or the fleet's portfolio, through the gateway")
    f.add_argument("device_id", nargs="?")
    f.add_argument("--fleet", action="store_true", help="the portfolio of the fleet (or of --devices)")
    f.add_argument("--devices", help="with --fleet: comma-separated device ids (default: every device)")
    f.add_argument("--start", help="forecast start, UTC quarter-hour (default: next quarter-hour)")
    f.add_argument("--horizon-hours", type=float, default=24.0)
    f.add_argument("--no-wait", action="store_true", help="return the forecast id at once")
    f.add_argument("--json", action="store_true", help="print the full JSON")
    f.set_defaults(func=cmd_forecast)

    pr = sub.add_parser("prices", help="publish a simulated price feed")
    pr.add_argument("--count", type=int, default=20)
    pr.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    pr.add_argument("--price", type=float, default=90.0, help="starting price, EUR/MWh")
    pr.add_argument("--step", type=float, default=3.0, help="random-walk step, EUR/MWh")
    pr.add_argument("--seed", type=int, default=None)
    pr.set_defaults(func=cmd_prices)

    d = sub.add_parser("devices", help="list the fleet")
    d.set_defaults(func=cmd_devices)

    dbp = sub.add_parser("db", help="audit database").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("migrate", help="create or update the audit schema").set_defaults(func=cmd_db_migrate)

    ks = sub.add_parser("keys", help="API keys of the gateway").add_subparsers(dest="keys_command",
                                                                               required=True)
    kc = ks.add_parser("create", help="a new key; printed alone on the last line, shown once")
    kc.add_argument("name", help="who holds it (recorded as requested_by)")
    kc.add_argument("--scopes", required=True,
                    help="comma-separated: forecast:read, forecast:request, prices:publish, "
                         "models:admin; or all")
    kc.add_argument("--out", type=Path, help="also write the key to this file (mode 600)")
    kc.add_argument("--rate", type=int, help="requests a minute this key may make (default: the gateway's)")
    kc.add_argument("--if-missing", action="store_true",
                    help="with --out: keep the key the file holds if it is still valid")
    kc.set_defaults(func=cmd_keys_create)
    kl = ks.add_parser("list", help="keys with their scopes, state and last use (never the secret)")
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(func=cmd_keys_list)
    kr = ks.add_parser("revoke", help="revoke a key by id, or every key of a name")
    kr.add_argument("key", help="key id or name")
    kr.set_defaults(func=cmd_keys_revoke)

    fl = sub.add_parser("fleet", help="fleet data").add_subparsers(dest="fleet_command", required=True)
    for name, help_text, devices, days in (
        ("generate", "generate a realistic heat-pump fleet into the store or a Parquet file", 100, 30),
        ("demo", "the small demo fleet `make up` loads (24 devices, 35 days)", 24, 35),
    ):
        g = fl.add_parser(name, help=help_text)
        g.add_argument("--devices", type=int, default=devices)
        g.add_argument("--days", type=int, default=days)
        g.add_argument("--seed", type=int, default=7)
        g.add_argument("--end", type=datetime.fromisoformat,
                       help="end of the data, ISO time (default: now, to the quarter-hour)")
        g.add_argument("--faults", choices=["realistic", "none"], default="realistic",
                       help="telemetry faults: gaps, stuck sensors, duplicates, late arrivals")
        g.add_argument("--out", help="write FILE.parquet (backtest input format) instead of the store")
        g.add_argument("--if-empty", action="store_true", help="only when the store has no devices")
        g.set_defaults(func=cmd_fleet_generate)

    bt = sub.add_parser("backtest", help="rolling-origin backtest of the engine against baselines")
    _data_args(bt)
    bt.add_argument("--out", required=True, help="report.json")
    bt.add_argument("--forecasts-out", help="the engine's forecasts as Parquet")
    bt.add_argument("--portfolio-out", help="the engine's forecast of the total of all devices as Parquet")
    bt.add_argument("--plot", help="PNG of the portfolio's and a few devices' forecasts against actuals")
    bt.add_argument("--origins", type=int, default=14, help="forecast days at the end of the data")
    bt.add_argument("--issue-time", default="10:00", help="forecast start each day, HH:MM UTC")
    bt.add_argument("--no-peer", action="store_true", help="skip mlforecast")
    bt.set_defaults(func=cmd_backtest)

    tr = sub.add_parser("train", help="train a model and store it as a new version")
    _data_args(tr, required=False)
    tr.add_argument("--days", type=int, default=30, help="without --data: the last D days of the store")
    tr.add_argument("--end", help="without --data: the window's end (UTC ISO time; default: now)")
    tr.add_argument("--promote", action="store_true",
                    help="serve it: at once, or with --holdout-days only if it beats the served model "
                         "(the running stack's training always decides so)")
    tr.add_argument("--force", action="store_true", help="promote it whatever its held-out scores")
    tr.add_argument("--holdout-days", type=int,
                    help="train before the last N days, score it and the served model there "
                         "(default: 7 on the running stack, none here)")
    tr.add_argument("--local", action="store_true",
                    help="train here on the store or --data even if the stack runs (a remote store)")
    tr.add_argument("--if-none-promoted", action="store_true",
                    help="only when no version is served yet (what the first `make up` runs)")
    tr.set_defaults(func=cmd_train)

    mo = sub.add_parser("models", help="the model store").add_subparsers(dest="models_command", required=True)
    ml = mo.add_parser("list", help="stored versions, the promoted one marked, and the trainings' "
                                    "champion/challenger decisions")
    ml.add_argument("--json", action="store_true")
    ml.add_argument("--history", type=int, default=20, help="the latest N trainings")
    ml.set_defaults(func=cmd_models_list)
    mp = mo.add_parser("promote", help="serve this version")
    mp.add_argument("version")
    mp.set_defaults(func=cmd_models_promote)

    wa = sub.add_parser("warm", help="load the served model and the most-traded devices' actors")
    wa.add_argument("--top", type=int, default=100, help="most-requested devices of the last --days")
    wa.add_argument("--days", type=int, default=7)
    wa.add_argument("--device", action="append", help="also this device (repeatable)")
    wa.set_defaults(func=cmd_warm)

    ing = sub.add_parser("ingest", help="ingest a CSV or Parquet file of readings")
    ing.add_argument("file")
    ing.add_argument("--batch-id", help="batch id (default: derived from the file's content)")
    ing.add_argument("--url", help="send to this telemetry service instead of opening the store")
    ing.add_argument("--json", action="store_true", help="print the full report as JSON")
    ing.set_defaults(func=cmd_ingest)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
