"""DeviceActor: one virtual actor per heat pump, holding its recent telemetry
window and model version in actor state (Redis), so a forecast needs no
database round trip on the hot path.

Callers import `DeviceActorInterface` and the method names; the forecaster
service hosts `DeviceActor`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dapr.actor import Actor, ActorInterface, actormethod

from actors.state import DeviceState
from intraday.config import get_settings
from intraday.errors import InsufficientHistory
from intraday.forecasting import baseline
from intraday.forecasting.types import TelemetryWindow
from intraday.timeutil import INTERVALS_PER_DAY, floor_quarter_hour, isoformat_z
from services.sidecar import fetch_window

ACTOR_TYPE = "DeviceActor"
STATE_KEY = "device"


class DeviceActorInterface(ActorInterface):
    @actormethod(name="Prepare")
    async def prepare(self, request: dict) -> dict:
        """Bring the window up to `forecast_start`; describe the data window."""

    @actormethod(name="Forecast")
    async def forecast(self, request: dict) -> dict:
        """P10/P50/P90 for `horizon_intervals` from `forecast_start`."""

    @actormethod(name="ExtendWindow")
    async def extend_window(self, batch: dict) -> dict:
        """Merge newer quarter-hour values {start, values} into the window."""


class DeviceActor(Actor, DeviceActorInterface):
    _state: DeviceState | None = None

    async def _on_activate(self) -> None:
        found, state = await self._state_manager.try_get_state(STATE_KEY)
        if found:
            self._state = state
            return
        # First activation: load the last `history_days` from the telemetry service.
        settings = get_settings()
        end = floor_quarter_hour(datetime.now(UTC))
        window = await fetch_window(self.id.id, end - timedelta(days=settings.history_days), end)
        await self._save(window)

    async def _save(self, window: TelemetryWindow) -> None:
        self._state = DeviceState(
            device_id=self.id.id,
            window=window,
            model_version=baseline.MODEL_VERSION,
            refreshed_at=datetime.now(UTC),
        )
        await self._state_manager.set_state(STATE_KEY, self._state)
        await self._state_manager.save_state()

    def _keep_intervals(self) -> int:
        return get_settings().history_days * INTERVALS_PER_DAY

    async def prepare(self, request: dict) -> dict:
        assert self._state is not None
        window = self._state.window
        # Data for the forecast ends at forecast_start, and cannot go past now.
        wanted_end = min(
            floor_quarter_hour(datetime.fromisoformat(request["forecast_start"])),
            floor_quarter_hour(datetime.now(UTC)),
        )
        if window.end < wanted_end:
            tail = await fetch_window(self.id.id, window.end, wanted_end)
            await self._save(window.merged(tail, self._keep_intervals()))
            window = self._state.window
        return {
            "device_id": self.id.id,
            "model_version": self._state.model_version,
            "window_start": isoformat_z(window.start),
            "window_end": isoformat_z(window.end),
            "missing_intervals": window.missing,
        }

    async def forecast(self, request: dict) -> dict:
        assert self._state is not None
        try:
            result = baseline.seasonal_quantiles(
                self._state.window,
                datetime.fromisoformat(request["forecast_start"]),
                int(request["horizon_intervals"]),
                days=get_settings().baseline_days,
            )
        except InsufficientHistory as e:
            # A value, not an exception: retrying cannot create history.
            return {"error": str(e), "kind": "insufficient_history"}
        return result.to_dict()

    async def extend_window(self, batch: dict) -> dict:
        assert self._state is not None
        update = TelemetryWindow(
            self.id.id,
            datetime.fromisoformat(batch["start"]),
            [float("nan") if v is None else float(v) for v in batch["values"]],
        )
        await self._save(self._state.window.merged(update, self._keep_intervals()))
        return {"window_end": isoformat_z(self._state.window.end)}
