"""`train` and `models list|promote`: the model store, here or through the gateway."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from intraday.cli.backtest import _horizon, _load_backtest_data, _training_config
from intraday.cli.common import _fail, _gateway, _http_error, _open_store, _stderr, _table, _working
from intraday.config import get_settings

if TYPE_CHECKING:
    import numpy as np

    from intraday.forecasting.backtest import BacktestData
    from intraday.forecasting.evaluation import Evaluation
    from intraday.forecasting.recalibration import Factors


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


def _band_factors(factors: Factors) -> str:
    """The rolling recalibration a model serves with, in a line."""
    def mean(f: np.ndarray) -> str:
        return f"x{f[:, 0].mean():.2f} below, x{f[:, 1].mean():.2f} above"

    parts = [f"devices {mean(factors.device)}"] if factors.device is not None else []
    parts += [f"totals of ~{size} devices {mean(f)}" for size, f in sorted(factors.portfolio.items())]
    return (f"rescaled by their last {len(factors.days)} scored days: " + "; ".join(parts)) if parts \
        else "as calibrated (no scored days)"


def _record_local_training(version: str, served: str | None, promoted: bool, forced: bool, reason: str,
                           scored: Evaluation, data: BacktestData) -> dict[str, Any]:
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


def print_training(t: dict[str, Any]) -> None:
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


def _store_training_data(days: int, until: str | None = None) -> tuple[BacktestData, dict[str, Any]]:
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


def _models_listing(limit: int = 20) -> dict[str, Any]:
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
        listing: dict[str, Any] = r.json()
        return listing
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
