"""`intraday`: the operator's command line (Typer, with Rich tables and
progress; `intraday --install-completion` adds shell completion).

Commands that reach the running system go through the gateway
(INTRADAY_GATEWAY_URL) with an API key (INTRADAY_API_KEY, else the file
INTRADAY_API_KEY_FILE, default .data/api-key, which `make up` writes):
forecast, prices, devices, status, warm, and train, models, weather and
import when the stack runs. `db`, `keys` and `fleet` work on the stores
directly and are what `make up` runs before the services start;
`backtest` works on files.

\b
Exit codes (every error is one line on stderr):
  0    done
  1    failed: a service answered an error, or did not answer
  2    refused input: a wrong option or value, unusable data; nothing was changed
  3    ingest: stored, with rows quarantined (the report says which and why)
  130  interrupted (Ctrl-C)
  141  the output was closed early (`intraday devices | head`)
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from typer.exceptions import TyperException

from intraday.cli import onboarding
from intraday.cli.backtest import cmd_backtest
from intraday.cli.fleet import cmd_fleet_generate, cmd_ingest
from intraday.cli.forecast import cmd_forecast, cmd_prices, cmd_warm
from intraday.cli.keys import cmd_db_migrate, cmd_keys_create, cmd_keys_list, cmd_keys_revoke
from intraday.cli.models import cmd_models_list, cmd_models_promote, cmd_train
from intraday.cli.status import cmd_dead_letters, cmd_dead_letters_replay, cmd_status
from intraday.config import get_settings

# -- the command line (Typer): each command gathers its options into the
# namespace the cmd_* function above takes --------------------------------

app = typer.Typer(
    name="intraday", help=__doc__.replace("`intraday`: the", "The", 1), no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
db_app = typer.Typer(help="audit database", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the gateway", no_args_is_help=True)
fleet_app = typer.Typer(help="fleet data", no_args_is_help=True)
models_app = typer.Typer(help="the model store", no_args_is_help=True)
dead_app = typer.Typer(help="messages no subscriber could take (key scope messages:admin)",
                       no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(fleet_app, name="fleet")
app.add_typer(models_app, name="models")
app.add_typer(dead_app, name="dead-letters")

Json = Annotated[bool, typer.Option("--json", help="print the full JSON")]
Data = Annotated[str | None, typer.Option(help="CSV or Parquet: device_id, timestamp (UTC), power (kW)")]
Weather = Annotated[str | None, typer.Option(
    help="temperature forecasts: timestamp, outdoor_temp [, location, issued_at]")]
DeviceFile = Annotated[str | None, typer.Option(
    "--devices", help="device attributes (device_id, location, country, ...); default: "
                      "<stem>.devices.parquet beside --data if present")]
Freq = Annotated[str | None, typer.Option(
    help="grid step: 5min, 10min, 15min, 20min, 30min or 60min; finer readings are averaged to it "
         "(default: the data's own step, quarter-hours for finer data)")]
Horizon = Annotated[int | None, typer.Option(help="steps of that grid ahead (default: one day of them)")]
TrainRows = Annotated[int, typer.Option(help="training rows sampled")]
Trees = Annotated[int, typer.Option(help="boosting rounds of the P50 model (P10/P90: half)")]


def _run(func: Callable[[argparse.Namespace], None], **options: Any) -> None:
    func(argparse.Namespace(**options))


@app.command()
def forecast(
    device_id: Annotated[str | None, typer.Argument(help="the device (or --fleet)")] = None,
    fleet: Annotated[bool, typer.Option(
        "--fleet", help="the portfolio of the fleet (or of --devices)")] = False,
    devices: Annotated[str | None, typer.Option(
        help="with --fleet: comma-separated device ids (default: every device)")] = None,
    start: Annotated[str | None, typer.Option(
        help="forecast start, UTC quarter-hour (default: next quarter-hour)")] = None,
    horizon_hours: Annotated[float, typer.Option(help="hours ahead, multiples of 0.25")] = 24.0,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="return the forecast id at once")] = False,
    json_: Json = False,
) -> None:
    """Forecast one device, or the fleet's portfolio, through the gateway."""
    _run(cmd_forecast, device_id=device_id, fleet=fleet, devices=devices, start=start,
         horizon_hours=horizon_hours, no_wait=no_wait, json=json_)


@app.command()
def prices(
    count: Annotated[int, typer.Option(help="ticks to publish")] = 20,
    interval: Annotated[float, typer.Option(help="seconds between ticks")] = 1.0,
    price: Annotated[float, typer.Option(help="starting price, EUR/MWh")] = 90.0,
    step: Annotated[float, typer.Option(help="random-walk step, EUR/MWh")] = 3.0,
    seed: Annotated[int | None, typer.Option(help="random seed (default: a new walk each time)")] = None,
) -> None:
    """Publish a simulated price feed."""
    _run(cmd_prices, count=count, interval=interval, price=price, step=step, seed=seed)


@app.command()
def status(json_: Json = False) -> None:
    """What runs, the served model, the fleet's staleness and the last decisions."""
    _run(cmd_status, json=json_)


@dead_app.command("list")
def dead_letters_list(
    limit: Annotated[int, typer.Option(help="the newest this many", min=1, max=500)] = 20,
    json_: Json = False,
) -> None:
    """Dead letters per topic (waiting to be sent again, total) and the newest."""
    _run(cmd_dead_letters, limit=limit, json=json_)


@dead_app.command("replay")
def dead_letters_replay(
    topic: Annotated[str, typer.Argument(help="its topic: prices, telemetry or weather")],
    message_id: Annotated[str, typer.Argument(help="its message id (intraday dead-letters list)")],
) -> None:
    """Publish a dead letter again on its topic, under its own id (after its cause is mended)."""
    _run(cmd_dead_letters_replay, topic=topic, message_id=message_id)


@db_app.command()
def migrate(
    wait: Annotated[float, typer.Option(
        min=0.0, help="seconds to wait for the database to take connections (a container or Job started "
             "beside it); 0: fail at once")] = 0.0,
) -> None:
    """Create or update the audit schema."""
    _run(cmd_db_migrate, wait=wait)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who holds it (recorded as requested_by)")],
    scopes: Annotated[str, typer.Option(
        help="comma-separated: forecast:read, forecast:request, prices:publish, models:admin, "
             "fleet:admin, readings:write, weather:write, messages:admin; or all")],
    out: Annotated[Path | None, typer.Option(help="also write the key to this file (mode 600)")] = None,
    rate: Annotated[int | None, typer.Option(
        help="requests a minute this key may make (default: the gateway's)")] = None,
    if_missing: Annotated[bool, typer.Option("--if-missing", 
        help="with --out: keep the key the file holds if it is still valid")] = False,
) -> None:
    """A new key; printed alone on the last line, shown once."""
    _run(cmd_keys_create, name=name, scopes=scopes, out=out, rate=rate, if_missing=if_missing)


@keys_app.command("list")
def keys_list(json_: Json = False) -> None:
    """Keys with their scopes, state and last use (never the secret)."""
    _run(cmd_keys_list, json=json_)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="key id or name")]) -> None:
    """Revoke a key by id, or every key of a name."""
    _run(cmd_keys_revoke, key=key)


class Faults(enum.StrEnum):
    realistic = "realistic"
    none = "none"


def _fleet_command(name: str, doc: str, default_devices: int, default_days: int) -> None:
    def command(
        devices: Annotated[int, typer.Option(help="heat pumps")] = default_devices,
        days: Annotated[int, typer.Option(help="days of readings")] = default_days,
        seed: Annotated[int, typer.Option(help="random seed")] = 7,
        end: Annotated[datetime | None, typer.Option(
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S",
                     "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"],
            help="end of the data, ISO time (UTC without an offset; default: now, to the "
                 "quarter-hour)")] = None,
        faults: Annotated[Faults, typer.Option(
            help="telemetry faults: gaps, stuck sensors, duplicates, late arrivals")] = Faults.realistic,
        out: Annotated[str | None, typer.Option(
            help="write FILE.parquet (backtest input format) instead of the store")] = None,
        if_empty: Annotated[bool, typer.Option(
            "--if-empty", help="only when the store has no devices")] = False,
    ) -> None:
        _run(cmd_fleet_generate, devices=devices, days=days, seed=seed,
             end=end.replace(tzinfo=UTC) if end and end.tzinfo is None else end, faults=faults.value, out=out,
             if_empty=if_empty)
    command.__doc__ = doc
    fleet_app.command(name)(command)


_fleet_command("generate", "Generate a realistic heat-pump fleet into the store or a Parquet file.", 100, 30)
_fleet_command("demo", "The small demo fleet `make up` loads (24 devices, 35 days).", 24, 35)


@app.command()
def backtest(
    data: Annotated[str, typer.Option(help="CSV or Parquet: device_id, timestamp (UTC), power (kW)")],
    out: Annotated[str, typer.Option(help="report.json")],
    weather: Weather = None, devices: DeviceFile = None, freq: Freq = None, horizon: Horizon = None,
    train_rows: TrainRows = 1_500_000, trees: Trees = 60,
    forecasts_out: Annotated[str | None, typer.Option(help="the engine's forecasts as Parquet")] = None,
    portfolio_out: Annotated[str | None, typer.Option(
        help="the engine's forecast of the total of all devices as Parquet")] = None,
    plot: Annotated[str | None, typer.Option(
        help="PNG of the portfolio's and a few devices' forecasts against actuals")] = None,
    origins: Annotated[int, typer.Option(help="forecast days at the end of the data")] = 14,
    issue_time: Annotated[str, typer.Option(help="forecast start each day, HH:MM UTC")] = "10:00",
    no_peer: Annotated[bool, typer.Option("--no-peer", help="skip mlforecast")] = False,
) -> None:
    """Rolling-origin backtest of the engine against baselines."""
    _run(cmd_backtest, data=data, out=out, weather=weather, devices=devices, freq=freq, horizon=horizon,
         train_rows=train_rows, trees=trees, forecasts_out=forecasts_out, portfolio_out=portfolio_out,
         plot=plot, origins=origins, issue_time=issue_time, no_peer=no_peer)


@app.command()
def train(
    data: Data = None, weather: Weather = None, devices: DeviceFile = None, freq: Freq = None,
    horizon: Horizon = None, train_rows: TrainRows = 1_500_000, trees: Trees = 60,
    days: Annotated[int, typer.Option(help="without --data: the last D days of the store")] = 30,
    end: Annotated[str | None, typer.Option(
        help="without --data: the window's end (UTC ISO time; default: now)")] = None,
    promote: Annotated[bool, typer.Option("--promote", 
        help="serve it: at once, or with --holdout-days only if it beats the served model "
             "(the running stack's training always decides so)")] = False,
    force: Annotated[bool, typer.Option("--force", help="promote it whatever its held-out scores")] = False,
    holdout_days: Annotated[int | None, typer.Option(
        help="train before the last N days, score it and the served model there "
             "(default: 7 on the running stack, none here)")] = None,
    local: Annotated[bool, typer.Option("--local", 
        help="train here on the store or --data even if the stack runs (a remote store)")] = False,
    if_none_promoted: Annotated[bool, typer.Option("--if-none-promoted", 
        help="only when no version is served yet (what the first `make up` runs)")] = False,
) -> None:
    """Train a model and store it as a new version (on the running stack: its training workflow)."""
    _run(cmd_train, data=data, weather=weather, devices=devices, freq=freq, horizon=horizon,
         train_rows=train_rows, trees=trees, days=days, end=end, promote=promote, force=force,
         holdout_days=holdout_days, local=local, if_none_promoted=if_none_promoted)


@models_app.command("list")
def models_list(json_: Json = False,
                history: Annotated[int, typer.Option(help="the latest N trainings")] = 20) -> None:
    """Stored versions, the promoted one marked, and the trainings' champion/challenger decisions."""
    _run(cmd_models_list, json=json_, history=history)


@models_app.command("promote")
def models_promote(version: Annotated[str, typer.Argument(help="a stored version")]) -> None:
    """Serve this version."""
    _run(cmd_models_promote, version=version)


@app.command()
def warm(
    top: Annotated[int, typer.Option(help="most-requested devices of the last --days")] = 100,
    days: Annotated[int, typer.Option(help="days of requests counted")] = 7,
    device: Annotated[list[str] | None, typer.Option(help="also this device (repeatable)")] = None,
) -> None:
    """Load the served model and the most-traded devices' actors."""
    _run(cmd_warm, top=top, days=days, device=device)


@app.command()
def ingest(
    file: Annotated[str, typer.Argument(help="a CSV or Parquet file of readings")],
    batch_id: Annotated[str | None, typer.Option(
        help="batch id (default: derived from the file's content)")] = None,
    url: Annotated[str | None, typer.Option(
        help="send to this telemetry service instead of opening the store")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the full report as JSON")] = False,
) -> None:
    """Ingest a CSV or Parquet file of readings (exit 0 all stored, 2 rejected, 3 rows quarantined)."""
    _run(cmd_ingest, file=file, batch_id=batch_id, url=url, json=json_)


# `devices`, `weather` and `import` (intraday/cli/onboarding.py).
onboarding.register(app)


def main(argv: list[str] | None = None) -> None:
    """The console script: the command, with every ending an exit code and
    at most one line on stderr (the exit codes in `intraday --help`). INTRADAY_DEBUG=1
    shows the traceback of an unexpected error."""
    import os

    from intraday.config import load_secrets_file

    try:
        load_secrets_file()
    except ValueError as e:
        print(f"intraday: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        code = app(args=argv, prog_name="intraday", standalone_mode=False)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
    except typer.Exit as e:
        code = e.exit_code
    except TyperException as e:  # Click's errors (Typer ships its own Click): a usage error is 2
        code = e.exit_code
        if type(e).__name__ == "NoArgsIsHelpError":  # a group without its command: its help
            print(e.format_message(), file=sys.stderr)
        else:
            ctx = getattr(e, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if code == 2 and ctx is not None else ""
            print(f"intraday: {e.format_message()}{hint}", file=sys.stderr)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except BrokenPipeError:
        # The reader went away (`intraday devices | head`): say nothing, and
        # keep the interpreter's final flush from raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(devnull, stream.fileno())
        code = 141
    except httpx.TransportError as e:
        print(f"intraday: {get_settings().gateway_url} or a service behind it did not answer: {e}",
              file=sys.stderr)
        code = 1
    except SystemExit as e:
        # Click's answer to a closed pipe: exit 1 with the streams quietened.
        if e.code == 1 and "Pacify" in type(sys.stdout).__name__:
            raise SystemExit(141) from None
        raise
    except Exception as e:
        if os.environ.get("INTRADAY_DEBUG"):
            raise
        print(f"intraday: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(INTRADAY_DEBUG=1 shows where)", file=sys.stderr)
        code = 1
    if code == 130:  # Ctrl-C (Typer reports it as an exit code)
        print("\nintraday: interrupted", file=sys.stderr)
    if code:
        raise SystemExit(code)
