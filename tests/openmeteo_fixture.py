"""A local stand-in for Open-Meteo's forecast API (`GET /v1/forecast`), written
from its documentation (its OpenAPI description and the API's docs page),
since this machine has no internet:

- `latitude` and `longitude` are required, comma-separated for several
  points; the answer is then a JSON list, one object per point in the order
  asked, else a single object.
- An object: `latitude`, `longitude` (of the model's grid point, near the
  one asked), `generationtime_ms`, `utc_offset_seconds`, `timezone`,
  `timezone_abbreviation`, `elevation`, `hourly_units` and `hourly` with a
  `time` array and one array per variable (null where the model has none).
- `timeformat=unixtime`: times as seconds since the epoch (UTC); else ISO
  8601 local times without an offset (`2026-12-06T13:00`).
- `past_hours` / `forecast_hours`: the hours before the current hour and
  from it; `forecast_days` (default 7) when no `forecast_hours`.
- A bad request: HTTP 400 with `{"error": true, "reason": "..."}`.

Temperatures are a smooth function of place and time, so a test can say
what each point should get: `temperature(lat, lon, t)`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def temperature(lat: float, lon: float, t: datetime) -> float:
    return round(5.0 - 0.5 * (lat - 47.0) + 0.1 * lon + 4.0 * math.sin(2 * math.pi * t.hour / 24), 1)


class OpenMeteo:
    def __init__(self, null_hours: int = 0) -> None:
        self.requests: list[dict] = []
        self.null_hours = null_hours  # the last N hours of each answer are null (a shorter model run)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                owner.requests.append({"path": url.path, **query, "at": time.time()})
                status, body = owner.answer(url.path, query)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/forecast"

    def close(self) -> None:
        self.server.shutdown()

    @staticmethod
    def _error(reason: str) -> tuple[int, dict]:
        return 400, {"error": True, "reason": reason}

    def answer(self, path: str, q: dict) -> tuple[int, dict | list]:
        if path != "/v1/forecast":
            return 404, {"error": True, "reason": "Not Found"}
        try:
            lats = [float(x) for x in q["latitude"].split(",")]
            lons = [float(x) for x in q["longitude"].split(",")]
        except KeyError as e:
            return self._error(f"Parameter '{e.args[0]}' is required")
        except ValueError:
            return self._error("Latitude and longitude must be numbers")
        if len(lats) != len(lons):
            return self._error("Parameter 'latitude' and 'longitude' must have the same number of elements")
        if any(abs(a) > 90 for a in lats) or any(abs(o) > 180 for o in lons):
            return self._error("Latitude must be in range of -90 to 90°. Given: "
                               + str(next(a for a in lats if abs(a) > 90)))
        variables = [v for v in q.get("hourly", "").split(",") if v]
        unknown = [v for v in variables if v != "temperature_2m"]
        if unknown:
            return self._error(f"Cannot initialize WeatherVariable from invalid String value {unknown[0]}")
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        past = int(q.get("past_hours", 0))
        ahead = int(q["forecast_hours"]) if "forecast_hours" in q else 24 * int(q.get("forecast_days", 7))
        hours = [now + timedelta(hours=h) for h in range(-past, ahead)]
        unix = q.get("timeformat") == "unixtime"
        out = []
        for lat, lon in zip(lats, lons, strict=True):
            grid_lat, grid_lon = round(lat * 50) / 50, round(lon * 50) / 50  # a 0.02-degree model grid
            temps = [temperature(grid_lat, grid_lon, t) for t in hours]
            if self.null_hours:
                temps[-self.null_hours:] = [None] * self.null_hours
            out.append({
                "latitude": grid_lat, "longitude": grid_lon, "generationtime_ms": 0.5,
                "utc_offset_seconds": 0, "timezone": "GMT", "timezone_abbreviation": "GMT",
                "elevation": 430.0,
                "hourly_units": {"time": "unixtime" if unix else "iso8601", **{v: "°C" for v in variables}},
                "hourly": {"time": [int(t.timestamp()) if unix else t.strftime("%Y-%m-%dT%H:%M")
                                    for t in hours],
                           **{v: temps for v in variables}},
            })
        return 200, out if len(out) > 1 else out[0]
