"""`intraday devices`, `intraday weather` and `intraday import`: a user's own
fleet into the system (the registry, readings and weather).

Each command goes to the running stack when it holds the telemetry store:
registry changes and weather through the gateway (with the key's holder
recorded as who changed what), readings to the telemetry service as
`intraday ingest` sends them. With the stack down, they write the store
directly (and the registry's audit to PostgreSQL when it answers).
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import pandas as pd
import typer

from intraday.cli.common import _fail, _gateway, _http_error, _open_store, _stderr, _table, _working
from intraday.cli.fleet import send_chunks
from intraday.config import get_settings

DEVICES_PER_REQUEST = 5_000  # a registry change through the gateway (its body limit is 2 MiB)
WEATHER_ROWS_PER_REQUEST = 10_000

devices_app = typer.Typer(help="the device registry: list, add or update, retire, who changed what",
                          invoke_without_command=True)
weather_app = typer.Typer(help="weather observations and issued temperature forecasts", no_args_is_help=True)


# -- talking to the stack ------------------------------------------------------

def _refusal(detail: Any) -> str:
    """A refused change's one line: the reason and the first rows it names."""
    if isinstance(detail, dict) and "rows" in detail:
        from intraday.telemetry.registry import Refused, RowError

        return str(Refused(detail["error"], [RowError(**r) for r in detail["rows"]]))
    return detail if isinstance(detail, str) else json.dumps(detail)


def _post(gw: httpx.Client, path: str, **kwargs: Any) -> dict[str, Any]:
    try:
        r = gw.post(path, **kwargs)
    except httpx.ConnectError:
        _fail(f"gateway not reachable at {get_settings().gateway_url} (is `make up` running?)")
    if r.status_code == 422:
        _fail(_refusal(r.json().get("detail")), 2)
    if r.status_code >= 400:
        _http_error(r)
    answer: dict[str, Any] = r.json()
    return answer


def _get(path: str, **params: Any) -> httpx.Response:
    with _gateway() as gw:
        try:
            r = gw.get(path, params=params)
        except httpx.ConnectError:
            _fail(f"gateway not reachable at {get_settings().gateway_url} (is `make up` running?)")
    if r.status_code >= 400:
        _http_error(r)
    return r


def _local_audit(change: dict[str, Any]) -> None:
    """A change written to the store directly: recorded in the audit store
    too when PostgreSQL answers (the rows carry who made it either way)."""
    import psycopg

    from intraday.audit import db

    try:
        with db.connect(get_settings().pg_dsn) as conn:
            db.migrate(conn)
            db.record_device_change(conn, change)
    except psycopg.OperationalError as e:
        _stderr(f"  audit store not reachable ({str(e).splitlines()[0]}): change {change['change_id']} "
                "is recorded on the registry rows only")


def _changed_by() -> str:
    return f"cli:{getpass.getuser()}"


# -- devices -------------------------------------------------------------------

def register_devices(df: pd.DataFrame, progress: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Check the rows here (every bad row named, nothing written), then
    write them: through the gateway when the stack holds the store, else
    into the store. Returns the change (summed over requests)."""
    from intraday.telemetry import registry

    try:
        rows = registry.parse_devices(df)
    except registry.Refused as e:
        _fail(str(e), 2)
    store = _open_store(required=False)
    if store is not None:
        try:
            done = registry.upsert(store, rows, _changed_by(), registry.new_change_id()).to_dict()
        except registry.Refused as e:
            _fail(str(e), 2)
        finally:
            store.close()
        _local_audit(done)
        return done
    total: dict[str, Any] = {}
    with _gateway() as gw:
        for k in range(0, len(rows), DEVICES_PER_REQUEST):
            part = [{c: (v.isoformat() if hasattr(v, "isoformat") else v) for c, v in r.items()}
                    for r in rows[k : k + DEVICES_PER_REQUEST]]
            change = _post(gw, "/devices", json={"devices": part}, timeout=300)
            if not total:
                total = change
            else:
                for key in ("added", "updated", "reactivated", "changes"):
                    total[key] += change[key]
                total["unchanged"] += change["unchanged"]
                total["devices"] += change["devices"]
            progress(f"  devices {min(k + DEVICES_PER_REQUEST, len(rows)):,}/{len(rows):,}")
    return total


def _change_line(change: dict[str, Any]) -> str:
    parts = [f"{len(change[k]):,} {k}" for k in ("added", "updated", "reactivated", "retired")
             if change.get(k)]
    parts.append(f"{change['unchanged']:,} unchanged")
    return f"change {change['change_id']} by {change['changed_by']}: " + ", ".join(parts)


@devices_app.callback()
def devices_list(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="retired devices too")] = False,
    json_: Annotated[bool, typer.Option("--json", help="print the full JSON")] = False,
) -> None:
    """The fleet's devices (without a command), or a change to the registry."""
    if ctx.invoked_subcommand is not None:
        return
    r = _get("/devices", include_retired=str(all_).lower())
    if json_:
        print(json.dumps(r.json(), indent=2))
        return

    def kw(v: float | None) -> str:
        return "" if v is None else f"{v:.1f}"

    _table(["device", "location", "country", "building", "heat pump", "rated kW", "tariff"]
           + (["retired (UTC)"] if all_ else []),
           [[d["device_id"], d["location"], d.get("country", ""), d["building_type"],
             d.get("heat_pump_type", ""), kw(d.get("rated_power_kw")), d.get("tariff", "")]
            + ([(d.get("retired_at") or "")[:16]] if all_ else []) for d in r.json()], right=(5,))


@devices_app.command("add")
def devices_add(
    file: Annotated[Path, typer.Argument(
        help="CSV or Parquet: device_id, location and/or latitude, longitude, country, building_type, "
             "heat_pump_type, rated_power_kw, heated_area_m2, setpoint_c, installed_date, tariff")],
    json_: Annotated[bool, typer.Option("--json", help="print the change as JSON")] = False,
) -> None:
    """Add or update devices (a retired one comes back); empty cells keep what is stored.
    Exit 2, with the rows and reasons, when any row is refused: then nothing is written."""
    from intraday.errors import InvalidRequest
    from intraday.telemetry.registry import read_devices_file

    if not file.is_file():
        _fail(f"{file}: no such file", 2)
    try:
        df = read_devices_file(file)
    except InvalidRequest as e:
        _fail(str(e), 2)
    change = register_devices(df)
    print(json.dumps(change, indent=2) if json_ else _change_line(change))


@devices_app.command("retire")
def devices_retire(
    device_ids: Annotated[list[str], typer.Argument(help="the devices")],
    at: Annotated[str | None, typer.Option(help="when they leave the fleet, ISO time (default: now)")] = None,
) -> None:
    """Retire devices: they leave the fleet list and the portfolio from --at; their readings stay."""
    from intraday.telemetry import registry

    when = None
    if at:
        try:
            parsed = datetime.fromisoformat(at)
        except ValueError:
            _fail(f"--at {at!r}: not an ISO time", 2)
        when = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    store = _open_store(required=False)
    if store is not None:
        try:
            change = registry.retire(store, device_ids, _changed_by(), registry.new_change_id(),
                                     when).to_dict()
        except registry.Refused as e:
            _fail(str(e), 2)
        finally:
            store.close()
        _local_audit(change)
    else:
        body: dict[str, Any] = {"device_ids": device_ids}
        if when:
            body["at"] = when.isoformat()
        with _gateway() as gw:
            change = _post(gw, "/devices/retire", json=body)
    print(_change_line(change))


@devices_app.command("changes")
def devices_changes(
    device: Annotated[str | None, typer.Option(help="only the changes of this device")] = None,
    limit: Annotated[int, typer.Option(help="the latest N changes")] = 20,
    json_: Annotated[bool, typer.Option("--json", help="print the full JSON")] = False,
) -> None:
    """Who changed the registry, when and what (from the audit store, through the gateway)."""
    r = _get("/devices/changes", limit=limit, **({"device_id": device} if device else {}))
    if json_:
        print(json.dumps(r.json(), indent=2))
        return
    rows = []
    for c in r.json():
        fields = sorted({f for d in c["changes"] for f in d["fields"]})
        rows.append([c["changed_at"][:19], c["changed_by"], c["action"], c["devices"], c["written"],
                     ", ".join(fields[:6]) + (" ..." if len(fields) > 6 else ""), c["change_id"]])
    _table(["when (UTC)", "by", "action", "rows", "written", "fields", "change"], rows, right=(3, 4))


# -- weather -------------------------------------------------------------------

def store_weather(observed: pd.DataFrame | None, forecast: pd.DataFrame | None,
                  progress: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Checked weather batches into the store, or through the gateway."""
    batches = {k: v for k, v in (("observed", observed), ("forecast", forecast)) if v is not None and len(v)}
    store = _open_store(required=False)
    if store is not None:
        try:
            for rows in batches.values():
                store.insert_weather(rows)
        finally:
            store.close()
        return {k: len(v) for k, v in batches.items()}
    paths = {"observed": ("/weather", "observations"), "forecast": ("/weather-forecasts", "forecasts")}
    with _gateway() as gw:
        for kind, rows in batches.items():
            path, key = paths[kind]
            for k in range(0, len(rows), WEATHER_ROWS_PER_REQUEST):
                part = rows.iloc[k : k + WEATHER_ROWS_PER_REQUEST].drop(columns="kind")
                if kind == "observed":
                    part = part.drop(columns="issued_at")
                _post(gw, path, content=part.to_json(orient="records", date_format="iso").join(
                    (f'{{"{key}": ', "}")), headers={"content-type": "application/json"}, timeout=120)
                progress(f"  {key} {min(k + WEATHER_ROWS_PER_REQUEST, len(rows)):,}/{len(rows):,}")
    return {k: len(v) for k, v in batches.items()}


@weather_app.command("ingest")
def weather_ingest(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet: location (or latitude, longitude), timestamp, "
                                              "outdoor_temp_c, and issued_at for forecasts")],
    location: Annotated[str | None, typer.Option(
        help="the location of every row, for a file without a location column")] = None,
) -> None:
    """Observed temperatures and issued forecasts (rows with issued_at) into the weather store.
    Exit 2, naming the rows and reasons, when any row is refused: then nothing is written."""
    from intraday.errors import InvalidRequest
    from intraday.telemetry.onboarding import weather_batches

    if not file.is_file():
        _fail(f"{file}: no such file", 2)
    try:
        batches = weather_batches(file, None, location, datetime.now(UTC))
    except InvalidRequest as e:
        _fail(str(e), 2)
    stored = store_weather(batches.observed, batches.forecast)
    locations = sorted({loc for b in (batches.observed, batches.forecast) if b is not None
                        for loc in b["location"].unique()})
    print(f"{file}: {stored.get('observed', 0):,} observations and {stored.get('forecast', 0):,} forecast "
          f"values stored for {len(locations)} location(s): {', '.join(locations[:8])}"
          + (" ..." if len(locations) > 8 else ""))


# -- readings and the one-shot import ------------------------------------------

def send_readings(chunks: Iterator[Any], batch_id: str, progress: Callable[[Any], None]) -> dict[str, Any]:
    """Readings chunks into the store (the stack down) or to the telemetry
    service that holds it (as `intraday ingest` sends a file)."""
    from intraday.telemetry.ingest_files import ingest_chunks

    store = _open_store(required=False)
    if store is None:
        return send_chunks(((c.batch_id, c.frame) for c in chunks), batch_id, "import", progress)
    try:
        return ingest_chunks(store, ((c.batch_id, c.digest, c.frame) for c in chunks), batch_id=batch_id,
                             source="import", progress=progress).to_dict()
    finally:
        store.close()


def import_fleet(devices: Path, readings: Path, weather: Path | None, weather_location: str | None,
                 shift_to_now: bool, as_json: bool) -> None:
    from intraday.errors import InvalidRequest
    from intraday.telemetry import onboarding
    from intraday.telemetry.registry import read_devices_file

    for name, path in (("--devices", devices), ("--readings", readings), ("--weather", weather)):
        if path is not None and not path.is_file():
            _fail(f"{name} {path}: no such file", 2)
    started, now = time.monotonic(), datetime.now(UTC)
    try:
        device_rows = read_devices_file(devices)
        shift = onboarding.plan_shift(readings, now) if shift_to_now else None
        zones: Any = (device_rows["location"].replace("", pd.NA).dropna().unique()
                 if "location" in device_rows else [])
        location = weather_location or (str(zones[0]) if len(zones) == 1 else None)
        batches = onboarding.weather_batches(weather, shift, location, now) if weather else None
    except InvalidRequest as e:
        _fail(str(e), 2)
    if shift is not None:
        _stderr(f"shift to now: {shift.describe()}")
    with _working("importing"):
        _stderr(f"registering {len(device_rows):,} devices from {devices}")
        change = register_devices(device_rows)
        stored = {}
        if batches is not None:
            _stderr(f"weather from {weather}")
            stored = store_weather(batches.observed, batches.forecast)
        _stderr(f"readings from {readings}")
        chunks = list(onboarding.reading_chunks(readings, shift))
        held = sum(c.held_back for c in chunks)

        def progress(report: Any) -> None:
            _stderr(f"  readings {report.rows:>12,}  inserted {report.inserted:,}  "
                    f"already stored {report.already_stored:,}  quarantined {report.quarantined:,}  "
                    f"{time.monotonic() - started:5.1f} s")

        report = send_readings(iter(chunks), chunks[0].batch_id.rsplit("/", 1)[0] if chunks else "import",
                               progress)
    seconds = time.monotonic() - started
    report.pop("touched", None)
    summary = {"devices": change, "weather": stored, "readings": report, "seconds": round(seconds, 1),
               "shift": None if shift is None else {
                   "weeks": shift.weeks, "data_end": shift.data_end.isoformat(),
                   "until": shift.until.isoformat(), "readings_held_back": held,
                   "observations_replayed_as_forecast": batches.replayed_as_forecast if batches else 0}}
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(_change_line(change))
        if stored:
            print(f"weather: {stored.get('observed', 0):,} observations, {stored.get('forecast', 0):,} "
                  "forecast values")
        if batches is not None and batches.replayed_as_forecast:
            print(f"  {batches.replayed_as_forecast:,} observations after now stored as a forecast "
                  "issued now (a replay's perfect forecast)")
        if report["status"] == "duplicate_batch":
            print("readings: already imported (the same file, shift and cut); nothing written")
        else:
            print(f"readings: {report['rows']:,} rows, {report['inserted']:,} inserted, "
                  f"{report['already_stored']:,} already stored, {report['duplicates']:,} duplicates "
                  f"dropped, {report['quarantined']:,} quarantined"
                  + (f"; {held:,} after now held back" if held else ""))
            for reason, n in report["reasons"].items():
                print(f"  quarantined {n:,} x {reason}")
        print(f"imported in {seconds:.1f} s; next: `intraday train` (a model on them, on the running stack), "
              "then `intraday forecast --fleet`")
    if report["status"] == "rejected":
        for error in report["errors"]:
            print(f"intraday: readings rejected: {error}", file=sys.stderr)
        raise SystemExit(2)
    if report["quarantined"] and report["status"] != "duplicate_batch":
        raise SystemExit(3)


def register(app: typer.Typer) -> None:
    app.add_typer(devices_app, name="devices")
    app.add_typer(weather_app, name="weather")

    @app.command("import")
    def import_(
        devices: Annotated[Path, typer.Option(help="the devices: CSV or Parquet, as `intraday devices add`")],
        readings: Annotated[Path, typer.Option(help="readings: device_id, timestamp (UTC), power (kW)")],
        weather: Annotated[Path | None, typer.Option(
            help="temperatures: location, timestamp, outdoor_temp_c (and issued_at for forecasts)")] = None,
        weather_location: Annotated[str | None, typer.Option(
            help="the weather's location when the file has none (default: the devices' one zone)")] = None,
        shift_to_now: Annotated[bool, typer.Option(
            "--shift-to-now",
            help="a replay: move the data by whole weeks to end at the current quarter-hour")] = False,
        json_: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    ) -> None:
        """Onboard a fleet in one go: register the devices, load the weather, ingest the readings
        (idempotent: run again, nothing is doubled). Exit 2 refused, 3 rows quarantined."""
        import_fleet(devices, readings, weather, weather_location, shift_to_now, json_)
