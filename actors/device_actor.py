"""DeviceActor: one virtual actor per heat pump, holding its recent telemetry
window and model version in actor state (Redis), so a forecast needs no
database round trip on the hot path.

Callers import `DeviceActorInterface` and the method names; the forecaster
service hosts `DeviceActor`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import aiohttp
import numpy as np
from dapr.actor import Actor, ActorInterface, actormethod

from actors.state import DeviceState
from clients.fleet_list import listed_device
from clients.metrics import ACTOR_ACTIVATIONS, ACTOR_DEACTIVATIONS, ACTORS_ACTIVE
from clients.models import catalog
from clients.sidecar import SidecarError, fetch_device, fetch_window
from clients.weather import on_window, stale_forecast_note
from intraday.config import get_settings
from intraday.errors import InsufficientHistory
from intraday.forecasting import baseline, engine
from intraday.forecasting.types import TelemetryWindow
from intraday.timeutil import INTERVALS_PER_DAY, QUARTER_HOUR, floor_quarter_hour, isoformat_z

log = logging.getLogger("forecaster.actor")
ACTOR_TYPE = "DeviceActor"
STATE_KEY = "device"
ATTRIBUTES_KEY = "attributes"


class TelemetryUnavailable(RuntimeError):
    """A first use of an actor (no window in its state) while the telemetry
    service cannot give one: transient, the workflow retries it."""


# What a telemetry call raises when the service cannot answer (a sidecar's
# 5xx, no connection, no answer in time); a 4xx is an answer.
TELEMETRY_DOWN = (SidecarError, aiohttp.ClientError, TimeoutError)


def _raise_unless_unavailable(e: Exception) -> None:
    if isinstance(e, SidecarError) and e.status_code < 500:
        raise e


class DeviceActorInterface(ActorInterface):
    @actormethod(name="Prepare")
    async def prepare(self, request: dict) -> dict:
        """Bring the window up to `forecast_start`; describe the data window."""
        raise NotImplementedError  # the actor implements it; callers reach it by proxy

    @actormethod(name="Forecast")
    async def forecast(self, request: dict) -> dict:
        """P10/P50/P90 for `horizon_intervals` from `forecast_start`."""
        raise NotImplementedError  # the actor implements it; callers reach it by proxy

    @actormethod(name="ExtendWindow")
    async def extend_window(self, batch: dict) -> dict:
        """Merge newer quarter-hour values {start, values} into the window."""
        raise NotImplementedError  # the actor implements it; callers reach it by proxy


class DeviceActor(Actor, DeviceActorInterface):
    _state: DeviceState | None = None
    _attributes: dict | None = None
    _telemetry_down: datetime | None = None  # the window's end, when Prepare could not extend it

    async def _on_activate(self) -> None:
        ACTOR_ACTIVATIONS.labels(ACTOR_TYPE).inc()
        ACTORS_ACTIVE.labels(ACTOR_TYPE).inc()
        found, attributes = await self._state_manager.try_get_state(ATTRIBUTES_KEY)
        if found:
            self._attributes = attributes
        found, state = await self._state_manager.try_get_state(STATE_KEY)
        if found:
            self._state = state

    async def _on_deactivate(self) -> None:
        ACTOR_DEACTIVATIONS.labels(ACTOR_TYPE).inc()
        ACTORS_ACTIVE.labels(ACTOR_TYPE).dec()

    async def _load(self) -> DeviceState:
        """The window; on first use, the last `history_days` from the
        telemetry service (not at activation: a refresh pushed to an actor
        that has never held a window has nothing to update)."""
        if self._state is not None:
            return self._state
        settings = get_settings()
        end = floor_quarter_hour(datetime.now(UTC))
        try:
            window = await fetch_window(self.id.id, end - timedelta(days=settings.history_days), end)
        except TELEMETRY_DOWN as e:
            _raise_unless_unavailable(e)
            raise TelemetryUnavailable(f"{self.id.id}: no window held and the telemetry service is "
                                       f"unavailable ({str(e)[:200]})") from e
        return await self._save(window)

    async def _save(self, window: TelemetryWindow) -> DeviceState:
        state = self._state = DeviceState(
            device_id=self.id.id,
            window=window,
            model_version=baseline.MODEL_VERSION,
            refreshed_at=datetime.now(UTC),
        )
        await self._state_manager.set_state(STATE_KEY, state)
        await self._state_manager.save_state()
        return state

    def _keep_intervals(self) -> int:
        return get_settings().history_days * INTERVALS_PER_DAY

    async def prepare(self, request: dict) -> dict:
        window = (await self._load()).window
        # Data for the forecast ends at forecast_start, and cannot go past now.
        wanted_end = min(
            floor_quarter_hour(datetime.fromisoformat(request["forecast_start"])),
            floor_quarter_hour(datetime.now(UTC)),
        )
        self._telemetry_down = None
        if window.end < wanted_end:
            try:
                tail = await fetch_window(self.id.id, window.end, wanted_end)
            except TELEMETRY_DOWN as e:
                _raise_unless_unavailable(e)
                # The telemetry service is down: forecast from the window held,
                # its newest quarter-hours missing, and say so.
                log.warning("%s: telemetry unavailable (%s); forecasting from the window to %s",
                            self.id.id, str(e)[:200], isoformat_z(window.end))
                self._telemetry_down = window.end
            else:
                window = (await self._save(window.merged(tail, self._keep_intervals()))).window
        return {
            "device_id": self.id.id,
            "model_version": engine.model_version(await catalog.current()),
            "window_start": isoformat_z(window.start),
            "window_end": isoformat_z(window.end),
            "missing_intervals": window.missing,
        }

    async def forecast(self, request: dict) -> dict:
        state = await self._load()
        start = datetime.fromisoformat(request["forecast_start"])
        horizon = int(request["horizon_intervals"])
        # The version the request was admitted under, so the forecast id,
        # the result and the audit row name the same model.
        version = request.get("model_version")
        if version is None:
            model = await catalog.current()
        else:
            model = None if version == baseline.MODEL_VERSION else await catalog.load(version)
        # Up to the current quarter-hour, as a fleet shard reads it: late
        # readings pushed to the actor (ExtendWindow) may have started the
        # current one, whose mean is not known yet.
        until = min(floor_quarter_hour(start), floor_quarter_hour(datetime.now(UTC)))
        window = state.window
        notes: tuple[str, ...] = ()
        if window.end < until:  # nothing known since the window's end: missing readings
            gap = TelemetryWindow(self.id.id, window.end,
                                  np.full(int((until - window.end) / QUARTER_HOUR), np.nan))
            window = window.merged(gap, len(window.values) + len(gap.values))
            if self._telemetry_down is not None:
                notes = (f"telemetry service unavailable: readings up to "
                         f"{isoformat_z(self._telemetry_down)} only",)
        window = window.until(until)
        try:
            temps = await self._temperatures(window, start, horizon) if model is not None else None
            result = engine.forecast(model, window, start, horizon, self._attributes, temps,
                                     baseline_days=get_settings().baseline_days)
        except InsufficientHistory as e:
            # A value, not an exception: retrying cannot create history.
            return {"error": str(e), "kind": "insufficient_history"}
        result = engine.until_retirement(result, (self._attributes or {}).get("retired_at"))
        if temps is not None:
            assert self._attributes is not None  # temperatures are read at the device's location
            stale = stale_forecast_note(self._attributes["location"], start)
            notes = (*notes, stale) if stale else notes
        if notes:
            result = replace(result, notes=(*result.notes, *notes))
        return result.to_dict()

    async def _temperatures(
        self, window: TelemetryWindow, start: datetime, horizon: int
    ) -> np.ndarray | None:
        """Outdoor temperature at the device's location on the window's
        grid through the end of the horizon, as known at forecast_start (or
        now, for a start in the future)."""
        attrs = await self._device_attributes()
        if not attrs or not attrs.get("location"):
            return None
        try:
            return await on_window(attrs["location"], window.start, start, horizon)
        except SidecarError:
            log.exception("no temperature for %s: forecasting without the weather", self.id.id)
            return None

    async def _device_attributes(self) -> dict | None:
        """The device's registry entry: as the forecaster's fleet list has
        it when it lists the device (so an update reaches the actor within
        the list's few seconds), else as first fetched and kept."""
        listed = listed_device(self.id.id)
        if listed is not None and listed != self._attributes:
            self._attributes = listed
            await self._state_manager.set_state(ATTRIBUTES_KEY, self._attributes)
            await self._state_manager.save_state()
        if self._attributes is None:
            try:
                self._attributes = await fetch_device(self.id.id)
            except SidecarError:
                return None  # unknown to the telemetry service: no location, no weather
            await self._state_manager.set_state(ATTRIBUTES_KEY, self._attributes)
            await self._state_manager.save_state()
        return self._attributes

    async def extend_window(self, batch: dict) -> dict:
        if self._state is None:  # never loaded: its first use reads the store, which has this
            return {"window_end": None}
        update = TelemetryWindow(
            self.id.id,
            datetime.fromisoformat(batch["start"]),
            np.array([np.nan if v is None else float(v) for v in batch["values"]]),
        )
        await self._save(self._state.window.merged(update, self._keep_intervals()))
        return {"window_end": isoformat_z(self._state.window.end)}
