"""The gateway fuzzed at length: tests/integration/test_fuzz.py (Schemathesis
from the gateway's OpenAPI schema, every operation, as a caller holding
every scope) with `--examples` cases per operation, on a stack of its own
(stop `make up` first). Reports the answers per operation and status, the
server errors and schema violations (each one fails the run) and whether a
rejected request wrote anything. Writes bench/results/fuzz.json.

    .venv/bin/python bench/fuzz.py [--examples 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000, help="cases per operation")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz.json")
    args = ap.parse_args()
    report = Path(tempfile.mkdtemp()) / "fuzz.json"
    env = {**os.environ, "INTRADAY_FUZZ_EXAMPLES": str(args.examples), "INTRADAY_FUZZ_REPORT": str(report)}
    print(f"fuzzing the gateway: {args.examples} cases per operation (minutes) ...", flush=True)
    t0 = time.perf_counter()
    command = [str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/integration/test_fuzz.py"]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = round(time.perf_counter() - t0, 1)
    found = json.loads(report.read_text()) if report.exists() else {}
    answers = found.get("answers", {})
    server_errors = sum(n for by in answers.values() for code, n in by.items() if code.startswith("5"))
    result = {
        "benchmark": "fuzz", "measured_at": datetime.now(UTC).isoformat(), "machine": machine(),
        "examples_per_operation": args.examples, "seconds": seconds,
        "cases": sum(n for by in answers.values() for n in by.values()),
        "server_errors": server_errors, "passed": run.returncode == 0,
        "failures": [line for line in run.stdout.splitlines() if line.startswith("FAILED")],
        **found,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(run.stdout[-2000:])
    print(f"{result['cases']} cases in {seconds} s; {server_errors} server errors; "
          f"{found.get('unexplained_rows', '?')} rows written for rejected requests; "
          f"{'passed' if result['passed'] else 'FAILED'}; wrote {args.out.relative_to(ROOT)}")
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
