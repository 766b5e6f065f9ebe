"""Domain errors. Each carries a reason a caller can act on; adapters map
them to HTTP 4xx (bad request) or to a failed workflow with that reason."""


class IntradayError(Exception):
    """Base class for errors the domain raises on purpose."""


class InvalidRequest(IntradayError):
    """The request itself is malformed or impossible (HTTP 422)."""


class UnknownDevice(IntradayError):
    """No device with this id in the fleet (HTTP 404)."""

    def __init__(self, device_id: str, retired_at: str | None = None):
        super().__init__(f"device {device_id!r} was retired at {retired_at}: it is no longer in the fleet"
                         if retired_at else f"unknown device {device_id!r}")
        self.device_id = device_id


class InsufficientHistory(IntradayError):
    """The device's telemetry cannot support a forecast (HTTP 422)."""


class BatchConflict(IntradayError):
    """An ingest batch id was used before for different content (HTTP 409)."""


class StoreInUse(IntradayError):
    """The embedded telemetry store is open in another process (the
    telemetry service); send data to that service instead."""
