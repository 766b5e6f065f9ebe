"""`intraday db migrate --wait`: the one-shot that creates the audit schema
(Compose's `migrate` container, the chart's Job) starts beside PostgreSQL
and may run before it takes connections. Here the stack's PostgreSQL is
reached through a loopback listener that opens only once the command has
said it is waiting (not after a fixed time: a busy machine may start the
command later than that)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.stack import ROOT

PG = ("127.0.0.1", 5432)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextmanager
def listener(port: int, opened: threading.Event) -> Iterator[None]:
    """127.0.0.1:`port` forwards to PostgreSQL once `opened` is set (refused
    before); closed on leaving."""
    stop = threading.Event()
    server = socket.socket()

    def serve() -> None:
        while not opened.wait(0.1):
            if stop.is_set():
                return
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(PG)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        opened.set()
        thread.join(timeout=5)
        server.close()


def command(stack: dict, port: int, *args: str) -> dict:
    """`intraday db migrate ARGS` against the database at 127.0.0.1:`port`."""
    return {"args": [str(ROOT / ".venv/bin/intraday"), "db", "migrate", *args], "text": True,
            "env": {**stack["env"], "INTRADAY_PG_DSN": f"postgresql://intraday@127.0.0.1:{port}/intraday"}}


def migrate(stack: dict, port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(**command(stack, port, *args), capture_output=True, timeout=120)


def test_migrate_waits_for_a_database_that_opens_late(stack, pg):
    port = _free_port()
    opened = threading.Event()
    with listener(port, opened):
        proc = subprocess.Popen(**command(stack, port, "--wait", "60"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()  # refused: it says it waits, and does
            assert first.startswith("waiting up to 60 s for the audit database: "), first
            assert "Connection refused" in first and proc.poll() is None
            time.sleep(2.0)
            assert proc.poll() is None  # still waiting, not given up
            opened.set()
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "audit schema up to date" in out
    assert pg.execute("SELECT to_regclass('forecast_requests') IS NOT NULL").fetchone()[0]


def test_migrate_without_wait_or_past_it_fails_with_the_reason(stack):
    port = _free_port()  # nothing listens there
    for args in ((), ("--wait", "2")):
        r = migrate(stack, port, *args)
        assert r.returncode != 0 and "Connection refused" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    bad = migrate(stack, port, "--wait", "-1")
    assert bad.returncode == 2 and "--wait" in bad.stderr, bad.stderr
