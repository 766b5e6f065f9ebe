"""What every command group shares: failing with one line, Rich output,
the gateway client, the telemetry store, progress."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, NoReturn, overload

import httpx

from intraday.config import get_settings

if TYPE_CHECKING:
    from rich.console import Console

    from intraday.telemetry.store import TelemetryStore


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"intraday: {message}", file=sys.stderr)
    raise SystemExit(code)


def _console(stderr: bool = False) -> Console:
    """Rich's console: colour and the terminal's width on a terminal; plain,
    wide lines into a pipe or a file (so a table is not folded to 80 columns)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, highlight=False, width=None if stream.isatty() else 250,
                   no_color=not stream.isatty())


def _table(columns: list[str], rows: list[list[Any]], title: str | None = None,
           right: tuple[int, ...] = ()) -> None:
    """A table on stdout; `right` are the indexes of numeric columns."""
    from rich import box
    from rich.table import Table

    t = Table(*columns, title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
              header_style="bold")
    for k in right:
        t.columns[k].justify = "right"
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    _console().print(t)


def _gateway() -> httpx.Client:
    """The gateway, with this user's API key (INTRADAY_API_KEY, else the
    file `make up` writes: INTRADAY_API_KEY_FILE, default .data/api-key)."""
    settings = get_settings()
    key = settings.client_api_key
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=settings.gateway_url, timeout=90, headers=headers)


def _http_error(r: httpx.Response, code: int = 1) -> NoReturn:
    try:
        detail = r.json().get("detail") or r.json().get("error") or r.text
    except ValueError:
        detail = r.text
    _fail(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {detail}", code)


@overload
def _open_store(required: Literal[True] = ...) -> TelemetryStore: ...
@overload
def _open_store(required: bool) -> TelemetryStore | None: ...
def _open_store(required: bool = True) -> TelemetryStore | None:
    """The telemetry store, or None (not required) when the commands go
    through the gateway instead: a gateway answers at INTRADAY_GATEWAY_URL
    (the system runs, here or elsewhere: Compose, a cluster), or the
    telemetry service holds the store."""
    from intraday.errors import StoreInUse
    from intraday.telemetry.store import TelemetryStore

    if not required and _answers(get_settings().gateway_url):
        return None
    try:
        store = TelemetryStore.from_settings(get_settings())
    except StoreInUse as e:
        if required:
            _fail(f"{e}; stop it with `make down`, or use the running service")
        return None
    store.migrate()
    return store


def _answers(url: str) -> bool:
    """A service of the system answers its /health at `url`."""
    try:
        return httpx.get(f"{url}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


_live: tuple[Any, Any] | None = None  # (Progress, task id) while a long command runs on a terminal


def _stderr(line: str) -> None:
    """A progress or status line: on a terminal, the spinner's text (with the
    elapsed time); into a pipe or a log, a line of its own."""
    if _live is not None:
        from rich.markup import escape

        progress, task = _live
        progress.update(task, description=escape(line.strip()))
    else:
        print(line, file=sys.stderr, flush=True)


@contextmanager
def _working(label: str) -> Iterator[None]:
    """Rich's spinner and elapsed time on stderr for a long step, when stderr
    is a terminal; lines otherwise."""
    global _live
    if not sys.stderr.isatty():
        _stderr(label)
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                  console=_console(stderr=True), transient=True) as progress:
        _live = (progress, progress.add_task(label, total=None))
        try:
            yield
        finally:
            _live = None
