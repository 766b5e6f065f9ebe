"""The served model, cached in three tiers: this process's memory, the state
store (Redis locally: shared by every forecaster replica, so a new replica
does not download from object storage), and the object store itself.

Which version is served is the store's `models/PROMOTED` pointer, re-read at
most every `model_refresh_seconds`: `intraday models promote` reaches every
forecaster within that time, without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from clients import metrics, sidecar
from intraday.config import get_settings
from intraday.forecasting import baseline
from intraday.forecasting.model import QuantileModel
from intraday.forecasting.modelstore import ModelStore, default_store
from intraday.forecasting.recalibration import Window

log = logging.getLogger("forecaster.models")
STATE_PREFIX = "model-artifact-"


class ModelCatalog:
    def __init__(self, store: ModelStore | None = None, refresh_seconds: float | None = None):
        self._store = store
        self._refresh = get_settings().model_refresh_seconds if refresh_seconds is None else refresh_seconds
        self._models: dict[str, QuantileModel] = {}
        self._seeds: dict[str, Window] = {}  # each model's window as its artifact holds it
        self._promoted: str | None = None
        self._checked = -float("inf")
        self._lock = asyncio.Lock()
        self.loads: Counter[str] = Counter()  # where models came from: memory, state, object_store

    @property
    def store(self) -> ModelStore:
        if self._store is None:
            self._store = default_store()
        return self._store

    async def current(self) -> QuantileModel | None:
        """The promoted model, or None when none is promoted (the caller
        falls back to the seasonal baseline)."""
        if time.monotonic() - self._checked > self._refresh:
            try:
                self._promoted = await asyncio.to_thread(self.store.promoted)
            except Exception:  # keep serving the model we have; retry on the next call
                log.exception("reading the promoted model version failed")
            self._checked = time.monotonic()
        model = await self.load(self._promoted) if self._promoted else None
        metrics.set_model(self._promoted or baseline.MODEL_VERSION)
        return model

    async def load(self, version: str) -> QuantileModel:
        if version in self._models:
            self.loads["memory"] += 1
            metrics.MODEL_CACHE.labels("memory", "hit").inc()
            return self._models[version]
        async with self._lock:
            if version not in self._models:
                metrics.MODEL_CACHE.labels("memory", "miss").inc()
                self._models[version] = await self._fetch(version)
        return self._models[version]

    async def _fetch(self, version: str) -> QuantileModel:
        key = STATE_PREFIX + version
        data = None
        try:
            data = await sidecar.get_state_bytes(key)
        except sidecar.SidecarError:
            log.exception("model %s: state store read failed; using the object store", version)
        metrics.MODEL_CACHE.labels("state", "miss" if data is None else "hit").inc()
        if data is not None:
            self.loads["state"] += 1
        else:
            data = await asyncio.to_thread(self.store.artifact, version)
            self.loads["object_store"] += 1
            metrics.MODEL_CACHE.labels("object_store", "hit").inc()
            try:
                await sidecar.save_state_bytes(key, data)
            except sidecar.SidecarError:
                log.exception("model %s: caching in the state store failed", version)
        model = await asyncio.to_thread(QuantileModel.from_bytes, data)
        model.manifest.setdefault("version", version)
        settings = get_settings()
        if settings.compiled_trees:
            await asyncio.to_thread(model.compile, settings.data_dir / "compiled")
        log.info("model %s loaded (%s)", version, dict(self.loads))
        self._seeds[version] = Window(list(model.recalibration.days))
        await asyncio.to_thread(self._rescore, version, model)
        return model

    def _rescore(self, version: str, model: QuantileModel) -> None:
        """Rescale `model`'s bands by its window and the scored days of its
        published fleet forecasts (sql/postgres/010_forecast_scores.sql):
        the rolling recalibration the backtest measures, live. Without the
        audit store the model keeps the window it has."""
        from clients.audit_pool import audit_pool
        from intraday.audit import scores

        try:
            with audit_pool().connection() as conn:
                days = scores.live_days(conn, version)
        except Exception:
            log.warning("model %s: reading its scored days failed; its window is unchanged", version,
                        exc_info=True)
            return
        window = Window.from_dict(Window(list(self._seeds[version].days)).to_dict())  # a deep copy
        for day in days:
            window.add(day)
        if [d.to_dict() for d in window.days] != [d.to_dict() for d in model.recalibration.days]:
            model.rescore(window)
            log.info("model %s: bands rescaled by the days %s", version, ", ".join(model.factors.days))

    async def rescore(self) -> None:
        """Every loaded model rescaled by its newest scored days (after a
        scoring run, and every few minutes on every replica)."""
        for version, model in list(self._models.items()):
            await asyncio.to_thread(self._rescore, version, model)


catalog = ModelCatalog()
