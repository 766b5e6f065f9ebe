"""`fleet generate|load` and `ingest`: fleet data into the telemetry store,
directly or through the service."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from intraday.cli.common import _answers, _fail, _gateway, _http_error, _open_store, _stderr, _working
from intraday.config import get_settings

if TYPE_CHECKING:
    import pandas as pd

    from intraday.telemetry import fleet


def _fleet_args(args: argparse.Namespace) -> tuple[datetime, datetime, fleet.FaultRates]:
    from intraday.telemetry import fleet
    from intraday.timeutil import floor_quarter_hour

    if args.devices < 1 or args.days < 1:
        _fail("--devices and --days must be at least 1")
    end = args.end or datetime.now(UTC)
    end = floor_quarter_hour(end)
    start = end - timedelta(days=args.days)
    faults = fleet.NO_FAULTS if args.faults == "none" else fleet.FaultRates()
    return start, end, faults


def cmd_fleet_generate(args: argparse.Namespace) -> None:
    from intraday.telemetry.loader import load_fleet, write_fleet

    start, end, faults = _fleet_args(args)
    _stderr(f"generating {args.devices:,} heat pumps x {args.days} days "
            f"({start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC), seed {args.seed}, "
            f"faults {args.faults}")
    if args.out:
        with _working("generating"):
            summary = write_fleet(Path(args.out), args.devices, start, end, args.seed, faults, _stderr)
        print(f"wrote {summary.readings:,} readings of {summary.devices:,} devices in "
              f"{summary.seconds:.1f} s: {', '.join(summary.files)}")
    else:
        store = _open_store()
        try:
            if args.if_empty and store.device_count() > 0:
                print(f"telemetry store has {store.device_count()} devices; fleet not loaded")
                return
            with _working("generating and storing"):
                summary = load_fleet(store, args.devices, start, end, args.seed, faults, _stderr)
        finally:
            store.close()
        r = summary.ingest
        assert r is not None
        print(f"loaded {summary.devices:,} devices in {summary.seconds:.1f} s: "
              f"{r.inserted:,} readings stored, {r.duplicates:,} duplicate messages dropped, "
              f"{r.already_stored:,} already stored, {r.quarantined:,} quarantined; "
              f"{summary.weather_rows:,} weather rows")
    print("faults: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in summary.faults.items()))


def cmd_ingest(args: argparse.Namespace) -> None:
    from intraday.errors import BatchConflict, InvalidRequest
    from intraday.telemetry.ingest_files import ingest_file

    path = Path(args.file)
    if not path.is_file():
        _fail(f"{path}: no such file")

    def progress(report: Any) -> None:
        _stderr(f"  {report.rows:>12,} rows  inserted {report.inserted:,}  "
                f"quarantined {report.quarantined:,}")

    store = None if args.url else _open_store(required=False)
    try:
        with _working(f"ingesting {path}"):
            if store is not None:
                report = ingest_file(store, path, batch_id=args.batch_id, progress=progress).to_dict()
            else:
                report = _ingest_via_service(path, args, progress)
    except (InvalidRequest, BatchConflict) as e:
        _fail(str(e), 2)
    finally:
        if store is not None:
            store.close()
    report.pop("touched", None)
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["status"] == "duplicate_batch":
        print(f"{path}: already ingested as batch {report['batch_id']}; nothing written")
    else:
        print(f"{path}: {report['status']}: {report['rows']:,} rows, {report['inserted']:,} inserted, "
              f"{report['duplicates']:,} duplicates dropped, {report['already_stored']:,} already stored, "
              f"{report['quarantined']:,} quarantined")
        for reason, n in report["reasons"].items():
            print(f"  quarantined {n:,} x {reason}")
        for error in report["errors"]:
            print(f"  rejected: {error}")
    if report["status"] == "rejected":
        raise SystemExit(2)
    if report["quarantined"] and report["status"] != "duplicate_batch":
        raise SystemExit(3)


def _ingest_via_service(path: Path, args: argparse.Namespace,
                        progress: Callable[[Any], None]) -> dict[str, Any]:
    """Send the file chunk by chunk to the telemetry service (which owns the
    embedded store while it runs)."""
    from intraday.telemetry.ingest_files import file_batch_id, read_chunks

    batch_id = args.batch_id or file_batch_id(path)
    chunks = ((f"{batch_id}/{n:05d}", chunk) for n, chunk in enumerate(read_chunks(path)))
    return send_chunks(chunks, batch_id, "file", progress, args.url)


GATEWAY_CHUNK_ROWS = 200_000  # readings per request through the gateway (about 2 MB of Parquet)


def send_chunks(chunks: Iterable[tuple[str, pd.DataFrame]], batch_id: str, source: str,
                progress: Callable[[Any], None], url: str | None = None) -> dict[str, Any]:
    """(batch id, frame) chunks of readings as Parquet, in order; one report
    for them all. To the telemetry service's `POST /ingest` when it answers
    here (`url`, else INTRADAY_TELEMETRY_URL: the operator's own stack, with
    its app token), else through the gateway's `POST /readings` with the
    API key (a system elsewhere: Compose, a cluster), in parts of
    GATEWAY_CHUNK_ROWS that fit its sidecar's body limit."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from intraday.telemetry.ingest import IngestReport

    settings = get_settings()
    url = url or settings.telemetry_url
    direct = url != settings.telemetry_url or _answers(url)
    total = IngestReport(batch_id=batch_id, source=source, status="duplicate_batch")
    offset = 0
    if direct:
        # The telemetry app answers only its sidecar's token (make up keeps it
        # in the data directory, readable by the operator of this machine).
        token = settings.app_api_token
        client, path = httpx.Client(base_url=url, timeout=300,
                                    headers={"dapr-api-token": token} if token else {}), "/ingest"
    else:
        client, path = _gateway(), "/readings"
        client.timeout = httpx.Timeout(300)
        step = GATEWAY_CHUNK_ROWS
        chunks = ((f"{cid}:{k}" if len(frame) > step else cid, frame.iloc[i:i + step])
                  for cid, frame in chunks for k, i in enumerate(range(0, max(len(frame), 1), step)))
    with client:
        for chunk_id, chunk in chunks:
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), buf)
            try:
                r = client.post(path, content=buf.getvalue(),
                                params={"batch_id": chunk_id, "row_offset": offset},
                                headers={"content-type": "application/vnd.apache.parquet"})
            except httpx.ConnectError:
                _fail(f"{'telemetry service' if direct else 'gateway'} not reachable at {client.base_url}")
            # 422 with a report: the chunk was rejected as a batch; other errors stop.
            rejected = r.json().get("detail") if r.status_code == 422 else None
            if r.status_code >= 400 and not isinstance(rejected, dict):
                _http_error(r)
            total.add(IngestReport(**(rejected or r.json())))
            offset += len(chunk)
            progress(total)
    return total.to_dict()
