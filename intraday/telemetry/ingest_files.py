"""Files and long runs of readings into the store: read in chunks, each
chunk a batch of its own (its id the file's digest and the chunk's number),
checked while the one before is written."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from intraday.errors import InvalidRequest
from intraday.telemetry.ingest import DeviceRegistry, IngestReport, Prepared, commit_batch, prepare_batch
from intraday.telemetry.store import TelemetryStore

CHUNK_ROWS = 1_000_000


def read_chunks(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """A CSV or Parquet file in chunks of about `chunk_rows` rows. CSV cells
    are read as text so that validation sees what the file says."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            reader = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise InvalidRequest(f"{path}: not a readable Parquet file ({e})") from None
        for batch in reader.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    elif suffix == ".csv":
        try:
            yield from pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_rows)
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise InvalidRequest(f"{path}: not a readable CSV file ({e})") from None
        except pd.errors.EmptyDataError:
            raise InvalidRequest(f"{path}: the file is empty") from None
    else:
        raise InvalidRequest(f"{path}: expected a .csv or .parquet file")


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_batch_id(path: Path) -> str:
    return f"file:{file_digest(path)[:32]}"


def ingest_file(
    store: TelemetryStore,
    path: Path,
    *,
    batch_id: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Any = None,
) -> IngestReport:
    """Ingest a file chunk by chunk; each chunk is a batch `<id>/<n>` in the
    ledger, so a run cut short resumes where it stopped when run again. A
    chunk's content is named by the file's hash, the chunk size and its
    number, so it is not hashed again."""
    digest = file_digest(path)
    batch_id = batch_id or f"file:{digest[:32]}"
    chunks = ((f"{batch_id}/{n:05d}", hashlib.sha256(f"{digest}:{chunk_rows}:{n}".encode()).hexdigest(),
               chunk) for n, chunk in enumerate(read_chunks(path, chunk_rows)))
    total = ingest_chunks(store, chunks, batch_id=batch_id, source="file", progress=progress)
    if total.rows == 0:
        raise InvalidRequest(f"{path}: the file has no rows")
    return total


def ingest_chunks(
    store: TelemetryStore,
    chunks: Iterator[tuple[str, str, pd.DataFrame]],
    *,
    batch_id: str,
    source: str,
    progress: Any = None,
) -> IngestReport:
    """Ingest (batch id, content digest, frame) chunks in order, one report
    for them all. Chunk n+1 is read and prepared in a second thread while
    chunk n commits (chDB releases the GIL while it inserts); commits stay
    in order, one at a time."""
    total = IngestReport(batch_id=batch_id, source=source, status="duplicate_batch")
    registry = DeviceRegistry(store)

    def prepared() -> Iterator[Prepared]:
        offset = 0
        for chunk_id, digest, chunk in chunks:
            yield prepare_batch(store, chunk, source=source, batch_id=chunk_id, registry=registry,
                                row_offset=offset, digest=digest)
            offset += len(chunk)

    for part in _ahead(prepared()):
        total.add(commit_batch(store, part))
        if progress:
            progress(total)
    return total


def _ahead(items: Iterator[Prepared]) -> Iterator[Prepared]:
    """The items of `items`, the next one computed in a worker thread while
    the caller works on the current one. An exception in the worker is
    raised here, in order."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-prepare") as pool:
        upcoming = pool.submit(next, items, None)
        while (item := upcoming.result()) is not None:
            upcoming = pool.submit(next, items, None)
            yield item
