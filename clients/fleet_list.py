"""The fleet list the forecaster's actors and workflows check devices
against: the telemetry service's registry, read once and re-validated in
the background (an ETag), so no request waits for it; and a device
registered since, asked for by itself and remembered a few minutes."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import httpx

from clients import sidecar

log = logging.getLogger(__name__)

_DEVICE_TTL_S = 300.0
_known_devices: dict[str, float] = {}
retired_devices: dict[str, str] = {}  # device -> when it was retired, as the telemetry service said


# The list is re-validated every few seconds: a conditional request (its
# ETag) that the telemetry service answers 304 while the registry is
# unchanged, so devices added, updated or retired reach the forecasts
# within seconds and without a restart. A thread of its own re-validates
# it, so no request waits for a refresh (not even for the whole list after
# a registry change); only the process's very first list is read on a
# request's path.
_FLEET_TTL_S = 5.0
_FLEET_RETRY_S = 10.0  # after a failed refresh, the next try
_FLEET_TIMEOUT = 5.0
_fleet: tuple[float, dict[str, dict]] | None = None
_fleet_etag: str | None = None
_fleet_lock = threading.Lock()
_keeper: threading.Thread | None = None


def fleet_devices() -> dict[str, dict]:
    """The fleet's devices (those not retired) with their attributes, from
    the telemetry service in one call, re-validated in the background
    every `_FLEET_TTL_S`. While the telemetry service is down or hangs,
    the last list it gave is served (logged), so forecasts for known
    devices go on; with none yet, the failure is raised."""
    global _keeper
    fleet = _fleet
    if fleet is not None:
        return fleet[1]
    with _fleet_lock:  # the first list: one read, however many requests want it
        if _fleet is None:
            _refresh()
        if _keeper is None or not _keeper.is_alive():
            _keeper = threading.Thread(target=_keep_fresh, name="fleet-list", daemon=True)
            _keeper.start()
        assert _fleet is not None  # _refresh raised otherwise
        return _fleet[1]


def _keep_fresh() -> None:
    """Re-validate the list every `_FLEET_TTL_S` (`_FLEET_RETRY_S` after a
    failure) for as long as the process holds one."""
    while (held := _fleet) is not None:
        wake = max(held[0] + _FLEET_TTL_S, time.monotonic() + 0.05)
        while _fleet is not None and time.monotonic() < wake:
            time.sleep(min(0.25, max(wake - time.monotonic(), 0.0)))
        if _fleet is None:  # dropped (tests start afresh): this thread ends with it
            return
        try:
            _refresh()
        except Exception:  # _refresh keeps the last list on HTTP errors; anything else is logged here
            log.exception("fleet list refresh failed")
            time.sleep(_FLEET_RETRY_S)


def _refresh() -> None:
    """Ask the telemetry service for the list (conditionally once one is
    held) and keep the answer; on failure keep the last list and try again
    after `_FLEET_RETRY_S` (with none yet, raise)."""
    global _fleet, _fleet_etag
    held = _fleet
    headers = {"if-none-match": _fleet_etag} if held is not None and _fleet_etag else {}
    try:
        r = sidecar.sync_client().get("/v1.0/invoke/telemetry/method/devices",
                                      timeout=_FLEET_TIMEOUT, headers=headers)
        if r.status_code != 304:
            r.raise_for_status()
    except httpx.HTTPError as e:
        if held is None:
            raise
        if _fleet is None:  # dropped meanwhile: it stays dropped
            return
        log.warning("fleet list not refreshed (%s): serving the one from %.0f s ago",
                    str(e)[:200], time.monotonic() - held[0])
        _fleet = (time.monotonic() - _FLEET_TTL_S + _FLEET_RETRY_S, held[1])
        return
    if held is not None and _fleet is None:  # dropped meanwhile: it stays dropped
        return
    if r.status_code == 304 and held is not None:
        _fleet = (time.monotonic(), held[1])
    else:
        _fleet = (time.monotonic(), {d["device_id"]: d for d in r.json()})
        _fleet_etag = r.headers.get("etag")
        _known_devices.clear()  # a device seen since may have been retired


def listed_device(device_id: str) -> dict | None:
    """A device's entry in the fleet list as last read, without asking
    (None when it is not listed or no list was read yet): the attributes a
    DeviceActor checks its own copy against."""
    fleet = _fleet
    return None if fleet is None else fleet[1].get(device_id)


def device_exists(device_id: str) -> bool:
    """In the fleet list (re-validated every few seconds), else asked of
    the telemetry service (a device registered since; cached for a few
    minutes once seen). A retired device is not in the fleet."""
    if device_id in fleet_devices():
        return True
    seen = _known_devices.get(device_id)
    if seen is not None and time.monotonic() - seen < _DEVICE_TTL_S:
        return True
    r = sidecar.sync_client().get(f"/v1.0/invoke/telemetry/method/devices/{device_id}")
    if r.status_code == 404:
        return False
    r.raise_for_status()
    retired = r.json().get("retired_at")
    if retired and datetime.fromisoformat(retired) <= datetime.now(UTC):
        retired_devices[device_id] = retired
        return False
    _known_devices[device_id] = time.monotonic()
    return True
