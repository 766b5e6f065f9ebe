"""The command line's contract (intraday/cli/): every command and flag it
has had, one-line errors with the documented exit codes, no traceback on a
closed pipe or Ctrl-C, and shell completion. Run as a user would: the
console script in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
INTRADAY = str(ROOT / ".venv" / "bin" / "intraday")
# What the command line has offered (its argparse form's commands and flags): none may go.
COMMANDS = {
    "forecast": ["--fleet", "--devices", "--start", "--horizon-hours", "--no-wait", "--json"],
    "prices": ["--count", "--interval", "--price", "--step", "--seed"],
    "devices": [],
    "status": ["--json"],
    "db migrate": ["--wait"],
    "keys create": ["--scopes", "--out", "--rate", "--if-missing"],
    "keys list": ["--json"],
    "keys revoke": [],
    "fleet generate": ["--devices", "--days", "--seed", "--end", "--faults", "--out", "--if-empty"],
    "fleet demo": ["--devices", "--days", "--seed", "--end", "--faults", "--out", "--if-empty"],
    "backtest": ["--data", "--weather", "--devices", "--freq", "--horizon", "--train-rows", "--trees",
                 "--out", "--forecasts-out", "--portfolio-out", "--plot", "--origins", "--issue-time",
                 "--no-peer"],
    "train": ["--data", "--weather", "--devices", "--freq", "--horizon", "--train-rows", "--trees", "--days",
              "--promote", "--if-none-promoted", "--force", "--holdout-days", "--end", "--local"],
    "models list": ["--json", "--history"],
    "models promote": [],
    "warm": ["--top", "--days", "--device"],
    "ingest": ["--batch-id", "--url", "--json"],
}


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "INTRADAY_GATEWAY_URL": "http://127.0.0.1:9", **kwargs.pop("env", {})}
    return subprocess.run([INTRADAY, *args], capture_output=True, text=True, timeout=120, env=env, **kwargs)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_and_flag_is_still_there(command):
    r = run(*command.split(), "--help")
    assert r.returncode == 0, r.stderr
    for flag in COMMANDS[command]:
        assert flag in r.stdout, f"intraday {command}: {flag} is gone"


def test_python_dash_m_runs_the_same_commands(tmp_path):
    # The benchmarks run `python -m intraday.cli`; the onboarding commands
    # import the module by name, which once failed as a circular import.
    r = subprocess.run([sys.executable, "-m", "intraday.cli", "devices", "add", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "intraday devices add" in r.stdout
    # ... and pass --end as Python writes it, with its offset.
    out = tmp_path / "f.parquet"
    r = subprocess.run([sys.executable, "-m", "intraday.cli", "fleet", "generate", "--devices", "1",
                        "--days", "1", "--end", "2026-02-01T01:00:00+01:00", "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert str(pd.read_parquet(out)["timestamp"].max()) == "2026-01-31 23:45:00+00:00"


@pytest.mark.parametrize("args, message", [
    (["forecast", "--horizon-hours", "soon"], "Invalid value for '--horizon-hours'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["keys", "create", "someone"], "Missing option '--scopes'"),
    (["fleet", "generate", "--faults", "some"], "Invalid value for '--faults'"),
    (["fleet", "generate", "--devices", "0", "--out", "/nonexistent/x.parquet"], "--devices and --days must"),
    (["train", "--data", "/nonexistent.parquet", "--local"], "/nonexistent.parquet"),
])
def test_an_error_is_one_line_and_exits_with_its_code(args, message):
    r = run(*args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode in (1, 2) and len(lines) == 1, r.stderr
    assert lines[0].startswith("intraday: ") and message in lines[0] and "Traceback" not in r.stderr
    if "Invalid value" in message or "No such" in message or "Missing" in message:
        assert r.returncode == 2 and "--help" in lines[0]


def test_a_command_that_reaches_no_gateway_says_so_in_one_line():
    r = run("devices")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr


def _generate(tmp_path) -> subprocess.Popen:
    return subprocess.Popen([INTRADAY, "fleet", "generate", "--devices", "2000", "--days", "30", "--out",
                             str(tmp_path / "f.parquet")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_closed_pipe_ends_quietly(tmp_path):
    # `intraday fleet generate ... 2>&1 | head -1`: the reader leaves after the first line.
    p = _generate(tmp_path)
    assert p.stderr.readline().startswith(b"generating")
    p.stderr.close()
    p.stdout.close()
    assert p.wait(timeout=120) == 141


def test_ctrl_c_ends_with_130_and_one_line(tmp_path):
    p = _generate(tmp_path)
    assert p.stderr.readline().startswith(b"generating")
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.decode().rstrip().endswith("intraday: interrupted")
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err


def test_shell_completion_offers_commands_and_subcommands():
    env = {"_INTRADAY_COMPLETE": "complete_bash", "COMP_WORDS": "intraday mo", "COMP_CWORD": "1"}
    assert run(env=env).stdout.split() == ["models"]
    env.update(COMP_WORDS="intraday models ", COMP_CWORD="2")
    assert sorted(run(env=env).stdout.split()) == ["list", "promote"]
    script = run("--show-completion", "bash")
    assert script.returncode == 0 and "_intraday_completion" in script.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="a pseudo-terminal for Rich's live progress")
def test_on_a_terminal_progress_is_live_and_tables_are_drawn(tmp_path):
    r = subprocess.run(["script", "-qec", f"{INTRADAY} fleet generate --devices 200 --days 3 --out "
                        f"{tmp_path / 'f.parquet'}", "/dev/null"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    assert "\x1b[" in r.stdout and "0:00:0" in r.stdout  # the spinner's elapsed time, redrawn in place
    assert "wrote " in r.stdout
