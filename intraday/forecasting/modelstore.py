"""Versioned model artifacts in object storage: a local directory by default,
a GCS bucket (`google-cloud-storage`) when INTRADAY_MODEL_STORE is `gs://...`.

Layout under the store's root:

    models/<version>/model.zip       the artifact (QuantileModel.to_bytes)
    models/<version>/manifest.json   its manifest, to list without downloading
    models/PROMOTED                  {"version", "promoted_at", "previous"}

A version is `<UTC time>-<first 12 hex of the artifact's sha256>`: versions
sort by time and name their content. Artifacts are immutable; promotion
moves the one pointer that serving reads. Local writes go to a temporary
name and are renamed, so a crash never leaves half a model behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from intraday.errors import IntradayError
from intraday.timeutil import isoformat_z

PROMOTED = "models/PROMOTED"


class UnknownModel(IntradayError):
    """No model with this version in the store."""


class ObjectStore(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, data: bytes) -> None: ...
    def list(self, prefix: str) -> list[str]: ...
    @property
    def url(self) -> str: ...


@dataclass(frozen=True)
class LocalObjectStore:
    root: Path

    @property
    def url(self) -> str:
        return str(self.root)

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        tmp.write_bytes(data)
        tmp.replace(path)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))


class GcsObjectStore:
    """A bucket (and optional prefix) through google-cloud-storage, with the
    application-default credentials of the environment."""

    def __init__(self, url: str):
        from google.cloud import storage  # type: ignore[attr-defined]

        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        self._bucket = storage.Client().bucket(bucket)
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._url = url

    @property
    def url(self) -> str:
        return self._url

    def get(self, key: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            data: bytes = self._bucket.blob(self._prefix + key).download_as_bytes()
            return data
        except NotFound:
            return None

    def put(self, key: str, data: bytes) -> None:
        self._bucket.blob(self._prefix + key).upload_from_string(data)

    def list(self, prefix: str) -> list[str]:
        blobs = self._bucket.list_blobs(prefix=self._prefix + prefix)
        return sorted(b.name[len(self._prefix):] for b in blobs)


def open_object_store(url: str) -> ObjectStore:
    return GcsObjectStore(url) if url.startswith("gs://") else LocalObjectStore(Path(url))


class ModelStore:
    def __init__(self, objects: ObjectStore):
        self.objects = objects

    def save(self, artifact: bytes, manifest: dict[str, Any]) -> str:
        """Store an artifact; returns its version."""
        digest = hashlib.sha256(artifact).hexdigest()
        version = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{digest[:12]}"
        manifest = {**manifest, "version": version, "sha256": digest, "size_bytes": len(artifact),
                    "created_at": isoformat_z(datetime.now(UTC))}
        # The artifact first: a manifest without its artifact would list a
        # model that cannot load.
        self.objects.put(f"models/{version}/model.zip", artifact)
        self.objects.put(f"models/{version}/manifest.json", json.dumps(manifest, indent=2).encode())
        return version

    def versions(self) -> list[dict[str, Any]]:
        """Manifests of every stored version, oldest first."""
        out = []
        for key in self.objects.list("models/"):
            if key.endswith("/manifest.json"):
                out.append(json.loads(self.objects.get(key) or b"{}"))
        return sorted(out, key=lambda m: m.get("version", ""))

    def artifact(self, version: str) -> bytes:
        data = self.objects.get(f"models/{version}/model.zip")
        if data is None:
            raise UnknownModel(f"no model {version!r} in {self.objects.url}")
        if hashlib.sha256(data).hexdigest()[:12] != version.rsplit("-", 1)[-1]:
            raise UnknownModel(f"model {version!r} in {self.objects.url} does not match its checksum")
        return data

    def promoted(self) -> str | None:
        data = self.objects.get(PROMOTED)
        return json.loads(data)["version"] if data else None

    def promote(self, version: str) -> dict[str, Any]:
        self.artifact(version)  # refuses unknown or damaged versions
        pointer = {"version": version, "promoted_at": isoformat_z(datetime.now(UTC)),
                   "previous": self.promoted()}
        self.objects.put(PROMOTED, json.dumps(pointer).encode())
        return pointer


def default_store() -> ModelStore:
    from intraday.config import get_settings

    return ModelStore(open_object_store(get_settings().model_store_url))
