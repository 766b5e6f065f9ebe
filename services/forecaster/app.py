"""Forecaster service: hosts the DeviceActors and the workflows, and
starts/queries workflow instances for the gateway and the trading service.
Its routes live in routes/ by resource (forecasts, fleet, scores,
trainings); the instances they start and read, in instances.py."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from datetime import timedelta

import dapr.ext.workflow as wf
from dapr.actor.runtime.config import ActorRuntimeConfig
from dapr.actor.runtime.runtime import ActorRuntime
from dapr.ext.fastapi import DaprActor
from dapr.ext.workflow.logger import LoggerOptions
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from actors.device_actor import DeviceActor
from actors.state import StateSerializer
from clients import fleet_list, metrics, sidecar, tracing, weather
from intraday.config import get_settings
from services.forecaster import engine_guard, instances, scoring, watchdog
from services.forecaster.batching import Batcher
from services.forecaster.routes import fleet as fleet_routes
from services.forecaster.routes import forecasts, scores, trainings
from services.http import install_common
from workflows import fleet_activities as fleet
from workflows.fleet import register as register_fleet
from workflows.forecast import register
from workflows.training import TRAINING_WORKFLOW_NAME
from workflows.training import register as register_training

log = logging.getLogger("forecaster")
runtime: wf.WorkflowRuntime


@asynccontextmanager
async def lifespan(app: FastAPI):
    global runtime
    settings = get_settings()
    ActorRuntime.set_actor_config(
        ActorRuntimeConfig(
            actor_idle_timeout=timedelta(seconds=settings.actor_idle_timeout_seconds),
            actor_scan_interval=timedelta(seconds=30),
        )
    )
    await actor.register_actor(
        DeviceActor, message_serializer=StateSerializer(), state_serializer=StateSerializer()
    )
    fleet.bind(asyncio.get_running_loop())
    tracing.instrument_workflow_client()  # before the runtime and client open their channels
    # Their records go to the root's JSON handler (clients/tracing.py), not a handler of their own.
    quiet = LoggerOptions(log_level="WARNING", log_handler=logging.NullHandler())
    runtime = wf.WorkflowRuntime(maximum_thread_pool_workers=16, logger_options=quiet)
    register(runtime)
    register_fleet(runtime)
    register_training(runtime)
    runtime.start()
    instances.client = wf.DaprWorkflowClient(logger_options=quiet)
    forecasts.batcher = Batcher(forecasts.run_single, forecasts.run_batch, forecasts.batch_group,
                                max_size=settings.batch_max_size, max_in_flight=settings.batch_max_in_flight,
                                max_wait=settings.batch_max_wait_ms / 1000)
    metrics.QUEUE_DEPTH.set_function(forecasts.batcher.queued)
    scheduling = asyncio.gather(
        sidecar.schedule_job(trainings.TRAINING_JOB, settings.training_schedule,
                             {"workflow": TRAINING_WORKFLOW_NAME}),
        sidecar.schedule_job(scoring.SCORING_JOB, settings.scoring_schedule, {"score": "published"}),
        sidecar.schedule_job(watchdog.WATCHDOG_JOB, settings.watchdog_schedule, {"sweep": "workflows"}))
    engine_watch = asyncio.create_task(engine_guard.watch(instances.client))
    live_gauges = asyncio.create_task(scores.live_gauges_loop())
    warm_weather = asyncio.create_task(weather.keep_warm(_fleet_locations))
    yield
    warm_weather.cancel()
    live_gauges.cancel()
    engine_watch.cancel()
    scheduling.cancel()
    runtime.shutdown()


async def _fleet_locations() -> set[str]:
    devices = await run_in_threadpool(fleet_list.fleet_devices)
    return {d["location"] for d in devices.values() if d.get("location")}


app = FastAPI(title="intraday forecaster", lifespan=lifespan)
actor = DaprActor(app)
install_common(app, "forecaster")
for resource in (forecasts, fleet_routes, scores, trainings):
    app.include_router(resource.router)


@app.post(f"/job/{watchdog.WATCHDOG_JOB}")
async def watchdog_sweep() -> dict:
    """The watchdog's tick (Dapr's scheduler calls this, on one replica):
    instances past their deadline mended (services/forecaster/watchdog.py)."""
    return await run_in_threadpool(watchdog.sweep)
