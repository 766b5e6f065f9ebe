"""`intraday db migrate --wait`: the one-shot that creates the audit schema
(Compose's `migrate` container, the chart's Job) starts beside PostgreSQL
and may run before it takes connections. Here the stack's PostgreSQL is
reached through a loopback listener that opens only after a while."""

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
def late_listener(port: int, after: float) -> Iterator[None]:
    """127.0.0.1:`port` forwards to PostgreSQL once `after` seconds have
    passed (refused before); closed on leaving."""
    stop = threading.Event()
    server = socket.socket()

    def serve() -> None:
        if stop.wait(after):
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
        thread.join(timeout=5)
        server.close()


def migrate(stack: dict, port: int, *args: str) -> subprocess.CompletedProcess:
    env = {**stack["env"], "INTRADAY_PG_DSN": f"postgresql://intraday@127.0.0.1:{port}/intraday"}
    return subprocess.run([str(ROOT / ".venv/bin/intraday"), "db", "migrate", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_migrate_waits_for_a_database_that_opens_late(stack, pg):
    port = _free_port()
    with late_listener(port, after=3.0):
        t0 = time.monotonic()
        r = migrate(stack, port, "--wait", "60")
    assert r.returncode == 0, r.stderr
    assert "audit schema up to date" in r.stdout
    assert "waiting up to 60 s for the audit database" in r.stderr
    assert time.monotonic() - t0 >= 3.0  # it did not get through before the listener opened
    assert pg.execute("SELECT to_regclass('forecast_requests') IS NOT NULL").fetchone()[0]


def test_migrate_without_wait_or_past_it_fails_with_the_reason(stack):
    port = _free_port()  # nothing listens there
    for args in ((), ("--wait", "2")):
        r = migrate(stack, port, *args)
        assert r.returncode != 0 and "Connection refused" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    bad = migrate(stack, port, "--wait", "-1")
    assert bad.returncode == 2 and "--wait" in bad.stderr, bad.stderr
