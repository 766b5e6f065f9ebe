"""What the telemetry routes check of a request: the time span asked for,
the size of a batch, a body of readings or weather as a frame (JSON, CSV
or Parquet)."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta

import pandas as pd
from fastapi import HTTPException, Request

from intraday.errors import InvalidRequest
from intraday.telemetry.ingest import (
    parse_batch_id,
    records_frame,
)
from intraday.timeutil import is_quarter_hour

MAX_WINDOW = timedelta(days=400)
MAX_BATCH_ROWS = 2_000_000
MAX_BATCH_DEVICES = 2_000  # windows per POST /windows
READINGS_FIELDS = ("batch_id", "readings")  # a readings batch's JSON body
MAX_BODY_BYTES = 256 * 1024 * 1024


def only_fields(doc: dict, allowed: tuple[str, ...], what: str) -> None:
    """422 naming the fields of a JSON body that `what` does not take: a
    misspelt field is refused, not silently dropped."""
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        raise InvalidRequest(f"{what} has unknown field(s) {', '.join(unknown)}; "
                             f"it takes {', '.join(allowed)}")


def check_span(start: datetime, end: datetime, quarter_hours: bool = True) -> None:
    """422 with the reason unless [start, end) is a span a query may ask
    for: start before end, at most MAX_WINDOW, on quarter-hours."""
    if quarter_hours and not (is_quarter_hour(start) and is_quarter_hour(end)):
        raise HTTPException(422, "start and end must be on quarter-hour boundaries")
    if not start < end or end - start > MAX_WINDOW:
        raise HTTPException(422, f"need start < end and at most {MAX_WINDOW.days} days")


async def frame_from_request(request: Request) -> tuple[pd.DataFrame, str | None]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body over {MAX_BODY_BYTES // 2**20} MiB; split the batch")
    batch_id = parse_batch_id(request.query_params.get("batch_id"))
    if kind in ("application/json", ""):
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise InvalidRequest(f"body is not JSON: {e}") from None
        if not isinstance(doc, dict) or "readings" not in doc:
            raise InvalidRequest('expected {"batch_id": "...", "readings": [{...}, ...]}')
        only_fields(doc, READINGS_FIELDS, "a readings batch")
        return records_frame(doc["readings"]), parse_batch_id(doc.get("batch_id")) or batch_id
    if kind == "text/csv":
        try:
            df = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise InvalidRequest(f"body is not readable CSV: {e}") from None
        return df, batch_id
    if kind in ("application/vnd.apache.parquet", "application/x-parquet"):
        try:
            df = pd.read_parquet(io.BytesIO(body))
        except Exception as e:  # pyarrow raises several types for bad bytes
            raise InvalidRequest(f"body is not readable Parquet: {e}") from None
        return df, batch_id
    raise HTTPException(415, f"content-type {kind!r}: send application/json, text/csv or "
                             "application/vnd.apache.parquet")
