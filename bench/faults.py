"""The fault suite's figures (`make bench-faults`): runs tests/faults on a
fresh local stack (pytest starts and stops it), tests/certs on one whose
workload certificates live a minute, tests/network on one with Toxiproxy
on its links and tests/replicas on one with two forecasters and gateways,
then writes what each fault
did to the books to bench/results/faults.json and prints a table.

    python bench/faults.py [pytest args...]
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / ".data" / "test-stack" / "faults.json"  # tests/faults/books.py, in the test stack
OUT = ROOT / "bench" / "results" / "faults.json"
COLUMNS = ("in_flight_at_fault", "accepted", "completed", "failed", "lost", "duplicated_audit_rows",
           "repeat_deliveries", "redriven_by_watchdog", "price_ticks", "decisions", "seconds_to_recover")
# The message cases (tests/faults/test_messages.py): each numbered tick and batch taken or dead-lettered.
MESSAGE_COLUMNS = ("ticks", "ticks_taken", "ticks_dead_lettered", "ticks_lost", "batches", "batches_taken",
                   "batches_dead_lettered", "batches_lost", "seconds_to_close_books")


def main(args: list[str]) -> int:
    FIGURES.unlink(missing_ok=True)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/faults", *args], cwd=ROOT)
    if not FIGURES.exists():
        print("bench/faults.py: the fault suite recorded no figures", file=sys.stderr)
        return run.returncode or 1
    faults = json.loads(FIGURES.read_text())
    # Sentry down past the workload certificates' TTL, and the network
    # faults: each a stack of its own (tests/certs, tests/network).
    for suite, variable, value in (("tests/certs", "INTRADAY_WORKLOAD_CERT_TTL", "60s"),
                                   ("tests/network", "INTRADAY_TOXIPROXY", "on"),
                                   ("tests/replicas", "INTRADAY_REPLICAS", "2")):
        FIGURES.unlink(missing_ok=True)
        session = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", suite],
                                 cwd=ROOT, env={**os.environ, variable: value})
        if FIGURES.exists():
            faults.update(json.loads(FIGURES.read_text()))
        run = run if run.returncode else session
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "suite_passed": run.returncode == 0,
        "faults": faults,
    }, indent=2, sort_keys=True) + "\n")
    for columns, rows in ((COLUMNS, {k: v for k, v in faults.items() if not k.startswith("messages:")}),
                          (MESSAGE_COLUMNS, {k: v for k, v in faults.items() if k.startswith("messages:")})):
        if not rows:
            continue
        width = max(map(len, rows))
        print(f"\n{'fault':<{width}}  " + "  ".join(c.replace("_", " ") for c in columns))
        for name, figures in rows.items():
            print(f"{name:<{width}}  " + "  ".join(f"{figures.get(c, '-')!s:>{len(c)}}" for c in columns))
    print(f"\nwritten: {OUT.relative_to(ROOT)}")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
