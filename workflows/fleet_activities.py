"""Activities of the fleet forecast workflow (workflows/fleet.py), hosted by
the forecaster: a shard of devices forecast in one batch, and the portfolio
recorded from the shards.

How a shard gets its windows: one telemetry query for the whole shard
(`POST /windows`), with the same bounds a DeviceActor's window has after
`Prepare` (the last `history_days` up to min(forecast start, the request's
quarter-hour)), shipped cut to the days the model's features read
(engine.READ_DAYS) as float32 Arrow (intraday/telemetry/window_batch.py).
The actors fill their windows from that same store and keep them in step
with it (late readings are pushed to them), so a shard reads what the
actors hold without 10,000 actor calls; the single-device path keeps the
actors as its hot cache. The forecasts equal the single path's for the
same inputs, bit for bit (tests/unit/test_serving.py, tests/integration).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from datetime import datetime, timedelta

import dapr.ext.workflow as wf
import numpy as np

from clients import sidecar, tracing
from clients.audit_pool import audit_pool
from clients.fleet_list import fleet_devices
from clients.metrics import BATCH_DEVICES, STEP_SECONDS
from clients.models import catalog
from clients.weather import on_window, stale_forecast_note
from intraday import failpoints, messages
from intraday.audit import db
from intraday.config import get_settings
from intraday.errors import InsufficientHistory
from intraday.forecasting import baseline, engine, portfolio, recalibration
from intraday.forecasting.request import forecast_id
from intraday.forecasting.types import Forecast, TelemetryWindow
from intraday.timeutil import isoformat_z
from workflows.activities import step

_loop: asyncio.AbstractEventLoop | None = None


def bind(loop: asyncio.AbstractEventLoop) -> None:
    """The forecaster's event loop, which owns the model catalog and the
    weather cache; activities run in worker threads and borrow it."""
    global _loop
    _loop = loop


def _run(coro):
    assert _loop is not None, "fleet activities need bind(loop) at startup"
    return asyncio.run_coroutine_threadsafe(coro, _loop).result()


def _model(version: str):
    return None if version == baseline.MODEL_VERSION else _run(catalog.load(version))


def _temperatures(attributes: list[dict], window_start: datetime, start: datetime,
                  horizon: int) -> list[np.ndarray | None]:
    """What DeviceActor._temperatures gives each device; the shard's windows
    share one grid, so each location is built once."""
    by_location: dict[str, np.ndarray | None] = {}
    for location in {str(a["location"]) for a in attributes if a.get("location")}:
        try:
            by_location[location] = _run(on_window(location, window_start, start, horizon))
        except sidecar.SidecarError:
            by_location[location] = None
    return [by_location.get(str(a["location"])) if a.get("location") else None for a in attributes]


class _Stopwatch:
    """Seconds per step of a shard, returned with it (bench/load.py reports
    them) and observed as the workflow's steps: where a fleet forecast's
    time goes."""

    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, step: str) -> float:
        now = time.perf_counter()
        STEP_SECONDS.labels(self.workflow, step).observe(now - self._t)
        self.laps[step] = round(now - self._t, 4)
        self._t = now
        return self.laps[step]


def forecast_shard(ctx: wf.WorkflowActivityContext, job: dict) -> dict:
    start = datetime.fromisoformat(job["forecast_start"])
    horizon, version = int(job["horizon_intervals"]), job["model_version"]
    data_end = datetime.fromisoformat(job["data_end"])
    ids = list(job["device_ids"])
    settings = get_settings()
    batch = not job.get("partial", True)  # a batch of single requests: no portfolio
    if not batch:
        failpoints.reach(failpoints.FLEET_IN_SHARD)
    clock = _Stopwatch("batch" if batch else "fleet")
    BATCH_DEVICES.labels("batch" if batch else "shard").observe(len(ids))
    window_start = data_end - timedelta(days=settings.history_days)
    model = _model(version)
    # The model's features read the last READ_DAYS before the start: only
    # those are shipped (the seasonal baseline reads further back).
    cut = max(start - timedelta(days=engine.READ_DAYS), window_start) if model is not None else None
    windows = sidecar.fetch_windows(ids, window_start, data_end, cut).windows(ids)
    clock.lap("windows")
    attrs = fleet_devices()
    attributes = [attrs.get(d) or {} for d in ids]

    def temperatures(which: list[TelemetryWindow], of: list[dict]) -> list[np.ndarray | None]:
        return (_temperatures(of, which[0].start, start, horizon) if model is not None and which
                else [None] * len(which))

    temps = temperatures(windows, attributes)
    clock.lap("weather")
    results = engine.forecast_many(model, windows, start, horizon, attributes, temps,
                                   baseline_days=settings.baseline_days, peers=False)
    # A device the model cannot forecast falls back on its own profile, which
    # reads its whole window: those few are read again, whole.
    whole = [k for k, r in enumerate(results) if isinstance(r, engine.NeedsWholeWindow)]
    if whole:
        again = sidecar.fetch_windows([ids[k] for k in whole], window_start, data_end).windows(
            [ids[k] for k in whole])
        redo = engine.forecast_many(model, again, start, horizon, [attributes[k] for k in whole],
                                    temperatures(again, [attributes[k] for k in whole]),
                                    baseline_days=settings.baseline_days, peers=False)
        for k, w, r in zip(whole, again, redo, strict=True):
            windows[k], results[k] = w, r
    if model is not None:  # as forecast_many: the baseline has no peers to lend
        engine.from_peers(results, windows, attributes, start, engine.model_version(model))
    clock.lap("inference")

    failed: dict[str, str] = {}
    made: list[tuple[str, Forecast, int, str]] = []  # (id, forecast, missing, location)
    stale: dict[str, int] = {}  # location -> devices whose temperature forecast is stale
    for d, w, a, r, t in zip(ids, windows, attributes, results, temps, strict=True):
        if isinstance(r, InsufficientHistory):
            failed[d] = f"insufficient_history: {r}"
            continue
        assert isinstance(r, Forecast)  # NeedsWholeWindow: forecast again from the whole window above
        r = engine.until_retirement(r, a.get("retired_at"))
        note = stale_forecast_note(a["location"], start) if t is not None else None
        if note:
            r = replace(r, notes=(*r.notes, note))
            stale[a["location"]] = stale.get(a["location"], 0) + 1
        made.append((forecast_id(d, start, horizon, version), r, w.missing, a.get("location") or ""))
    requested_at = datetime.fromisoformat(job["requested_at"])
    trace_id = tracing.current_trace_id()  # the shard's activity runs in the request's trace
    with audit_pool().connection() as conn:
        # A forecast recorded before (a single request, an earlier fleet run)
        # is summed as recorded and not published again.
        recorded = db.read_forecasts(conn, [m[0] for m in made])
        fresh = [m for m in made if m[0] not in recorded]
        clock.lap("read_recorded")
        # Publish, then audit, as the single path: a crash in between
        # publishes again (consumers deduplicate on forecast_id), never loses one.
        sidecar.publish_bulk("forecasts", [
            (fid, messages.forecast_message(fid, f, miss, job["requested_by"], job["requested_at"], trace_id))
            for fid, f, miss, _ in fresh])
        clock.lap("publish")
        new = db.record_forecasts(conn, [
            db.ForecastRecord(fid, f, miss, job["requested_by"], requested_at, trace_id,
                              fleet_forecast_id=job.get("fleet_forecast_id"))
            for fid, f, miss, _ in fresh])
    clock.lap("audit")
    forecast_ids = [m[0] for m in made]
    if batch:
        return {"forecast_ids": forecast_ids, "failed": failed, "new": new, "seconds": clock.laps}
    forecasts = [recorded.get(fid, f) for fid, f, _, _ in made]
    if forecasts:
        # The partial (a few hundred KB for many locations) goes to the state
        # store, not through the workflow history, which dapr hands to the
        # orchestrator whole on every step (its gRPC limit is 4 MB).
        part = engine.portfolio_partial(model, forecasts, [m[3] for m in made]).to_dict()
        # As a JSON string: a JSON object's numbers come back from the Redis
        # state store rounded to 6 decimals.
        sidecar.save_states({_partial_key(job, job["shard"]): json.dumps(part)}, PARTIAL_TTL_S)
    clock.lap("partial")
    # No id lists either: the device forecast ids follow from the job.
    # The factors its device bands were scaled by (recalibration.py): the
    # fleet's record keeps them, for its scores on the unscaled bands.
    scaled = None if model is None or model.factors.device is None else model.factors.device.tolist()
    return {"shard": job["shard"], "forecast": len(forecasts), "failed": failed, "stale_weather": stale,
            "device_factors": scaled,
            "versions": sorted({f.model_version for f in forecasts}), "recorded": len(new),
            "seconds": clock.laps}


PARTIAL_TTL_S = 3600


def _partial_key(job: dict, shard: int) -> str:
    return f"fleet-partial:{job['fleet_forecast_id']}:{shard}"  # Dapr keys may not hold '||'


@step("fleet")
def record_fleet(ctx: wf.WorkflowActivityContext, payload: dict) -> dict:
    job, shards = payload["job"], payload["shards"]
    keys = [_partial_key(job, s["shard"]) for s in shards if s["forecast"]]
    stored = sidecar.get_states(keys)
    if len(stored) != len(keys):
        raise RuntimeError(f"{len(keys) - len(stored)} shard partials missing from the state store")
    parts = [portfolio.Partial.from_dict(json.loads(stored[k])) for k in keys]
    failed = {d: why for s in shards for d, why in s["failed"].items()}
    start = datetime.fromisoformat(job["forecast_start"])
    horizon, version = int(job["horizon_intervals"]), job["model_version"]
    device_ids = [d for d in job["device_ids"] if d not in failed]
    forecast_ids = [forecast_id(d, start, horizon, version) for d in device_ids]
    if parts:
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        versions = sorted({v for s in shards for v in s["versions"]})
        model = _model(version)
        pf = engine.portfolio_from(model, total, start, tuple(device_ids), versions).to_dict(table=True)
        scaled = {json.dumps(s.get("device_factors")) for s in shards if s["forecast"]}
        if model is not None and len(scaled) == 1:  # every shard scaled alike (not across a rescore)
            factors = replace(model.factors, device=None if (d := json.loads(scaled.pop())) is None
                              else np.asarray(d))
            pf["recalibration"] = recalibration.used(
                factors, len(device_ids), len(model.calibration["full"]["p10"]),
                len(model.portfolio.rho_fleet) if model.portfolio else 1, model.block_steps,
                model.manifest["training"]["data_end"])
    else:
        pf = {"forecast_start": isoformat_z(start), "horizon_intervals": horizon,
              "model_version": version, "devices": 0, "unit": "kW",
              "notes": ["no device could be forecast"], "intervals": []}
    stale: dict[str, int] = {}
    for s in shards:
        for location, n in s.get("stale_weather", {}).items():
            stale[location] = stale.get(location, 0) + n
    if stale:
        names = ", ".join(sorted(stale)[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        pf["notes"] = [*pf["notes"], f"stale weather: {sum(stale.values())} devices at {len(stale)} "
                       f"location(s) ({names}) have no temperature forecast issued within "
                       f"{get_settings().weather_forecast_max_age_hours:g} h"]
    with audit_pool().connection() as conn:
        inserted = db.record_fleet_forecast(conn, job["fleet_forecast_id"], {
            **job, "device_ids": device_ids, "forecast_ids": forecast_ids, "failed": failed,
            "portfolio": pf, "trace_id": tracing.current_trace_id()})
    sidecar.delete_states(keys)
    steps = sorted({k for s in shards for k in s.get("seconds", {})})
    return {"forecast_id": job["fleet_forecast_id"], "devices": len(device_ids), "failed": len(failed),
            "recorded": inserted, "device_forecasts_recorded": sum(s["recorded"] for s in shards),
            "shards": len(shards),
            "shard_seconds": {k: round(sum(s.get("seconds", {}).get(k, 0.0) for s in shards), 3)
                              for k in steps}}
