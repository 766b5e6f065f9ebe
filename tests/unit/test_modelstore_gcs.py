"""The model store on a GCS bucket, through google-cloud-storage against a
local GCS emulator (fake-gcs-server, built by `make setup`)."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from intraday.forecasting.modelstore import GcsObjectStore, ModelStore, UnknownModel, open_object_store

EMULATOR = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "fake-gcs-server"


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    binary = EMULATOR if EMULATOR.exists() else shutil.which("fake-gcs-server")
    assert binary, "fake-gcs-server is missing: run `make setup`"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                             "-backend", "memory", "-public-host", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert time.monotonic() < deadline and proc.poll() is None, "fake-gcs-server did not start"
        time.sleep(0.05)
    mp = pytest.MonkeyPatch()
    mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    from google.cloud import storage

    storage.Client().create_bucket("intraday-models")
    yield "gs://intraday-models/fleet-a"
    mp.undo()
    proc.terminate()
    proc.wait(10)


def test_versions_live_under_the_prefix_and_promotion_moves_one_pointer(bucket):
    store = open_object_store(bucket)
    assert isinstance(store, GcsObjectStore)
    models = ModelStore(store)
    assert models.versions() == [] and models.promoted() is None
    first = models.save(b"model one" * 100, {"training": {"devices": 3}})
    second = models.save(b"model two" * 100, {"training": {"devices": 4}})
    assert [m["version"] for m in models.versions()] == sorted([first, second])
    assert models.artifact(first) == b"model one" * 100
    models.promote(first)
    pointer = models.promote(second)
    assert models.promoted() == second and pointer["previous"] == first
    from google.cloud import storage

    names = {b.name for b in storage.Client().bucket("intraday-models").list_blobs()}
    files = {f"fleet-a/models/{v}/{f}" for v in (first, second) for f in ("model.zip", "manifest.json")}
    assert names == files | {"fleet-a/models/PROMOTED"}


def test_unknown_and_damaged_versions_are_refused(bucket):
    models = ModelStore(open_object_store(bucket))
    with pytest.raises(UnknownModel):
        models.promote("20990101T000000Z-000000000000")
    version = models.save(b"intact", {})
    models.objects.put(f"models/{version}/model.zip", b"tampered")
    with pytest.raises(UnknownModel, match="checksum"):
        models.artifact(version)
