"""What the telemetry service's routes share: the store it owns (opened by
the app's lifespan), the device registry the ingest checks against, the
locks that keep batches and registry changes apart, and the readings'
freshness kept in memory."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from functools import partial

import numpy as np

from clients import metrics
from intraday.telemetry.ingest import DeviceRegistry
from intraday.telemetry.store import TelemetryStore
from intraday.timeutil import QUARTER_HOUR, isoformat_z

store: TelemetryStore
registry: DeviceRegistry
# Check-then-insert must not interleave between two batches, nor
# read-merge-write between two registry changes.
ingest_lock = threading.Lock()
registry_lock = threading.Lock()


class Freshness:
    """Each device's newest quarter-hour, for the staleness metrics: read
    from the store at start (the last `SEED_DAYS`), then kept up by every
    batch this service stores. A device without readings counts as stale
    at any threshold."""

    SEED_DAYS = 35
    THRESHOLDS = {"1h": 3600.0, "24h": 86400.0}

    def __init__(self) -> None:
        self.devices: set[str] = set()
        self.latest: dict[str, float] = {}  # device -> POSIX time its newest quarter-hour ends
        for q in ("0.5", "0.9", "1"):
            metrics.STALENESS.labels(q).set_function(partial(self.age_quantile, float(q)))
        for name, seconds in self.THRESHOLDS.items():
            metrics.STALE_DEVICES.labels(name).set_function(partial(self.stale, seconds))
        metrics.FLEET_DEVICES.set_function(lambda: len(self.devices))

    def seed(self, store: TelemetryStore) -> None:
        self.devices = {d["device_id"] for d in store.devices()}
        since = datetime.now(UTC) - timedelta(days=self.SEED_DAYS)
        self.latest = {d: (t + QUARTER_HOUR).timestamp() for d, t in store.latest_intervals(since).items()}

    def update(self, touched: dict[str, list[str]]) -> None:
        for device_id, (_, last) in touched.items():
            end = (datetime.fromisoformat(last) + QUARTER_HOUR).timestamp()
            self.latest[device_id] = max(end, self.latest.get(device_id, end))
            self.devices.add(device_id)

    def _ages(self) -> np.ndarray:
        now = datetime.now(UTC).timestamp()
        return np.array([now - self.latest[d] if d in self.latest else np.inf for d in self.devices])

    def age_quantile(self, q: float) -> float:
        ages = self._ages()
        return float(np.quantile(ages, q, method="inverted_cdf")) if ages.size else float("nan")

    def stale(self, seconds: float) -> int:
        return int((self._ages() > seconds).sum())

    def report(self, limit: int) -> dict:
        """The fleet's readings' freshness: how many devices reported within
        each threshold, and the `limit` stalest devices (never-reporting first)."""
        now = datetime.now(UTC).timestamp()
        ages = {d: (now - self.latest[d] if d in self.latest else None) for d in self.devices}
        stalest = sorted(ages.items(), key=lambda kv: (kv[1] is not None, -(kv[1] or 0), kv[0]))[:limit]
        known = np.array([a for a in ages.values() if a is not None])
        return {
            "devices": len(ages),
            "quiet": {name: self.stale(seconds) for name, seconds in self.THRESHOLDS.items()},
            "never_reported": sum(a is None for a in ages.values()),
            "median_age_seconds": round(float(np.median(known)), 1) if known.size else None,
            "stalest": [{"device_id": d, "age_seconds": None if a is None else round(a, 1),
                         "newest_reading_end": None if a is None else isoformat_z(
                             datetime.fromtimestamp(self.latest[d], UTC))} for d, a in stalest],
        }


freshness = Freshness()
