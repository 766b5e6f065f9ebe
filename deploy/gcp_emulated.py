"""The components of `INTRADAY_COMPONENTS=gcp-emulated` (scripts/stack.sh):
the local ones, but pub/sub is components/gcp/pubsub*.yaml itself, pointed at
the Pub/Sub emulator of the Google Cloud CLI. Only the project and the
endpoint differ from production; topics, subscriptions, scopes, delivery
attempts and the dead-letter topic are the production file's.

    python -m deploy.gcp_emulated OUT_DIR [--endpoint 127.0.0.1:8085] [--project intraday-local]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# Made by deploy/gcp_emulated.py from {source} for the Pub/Sub emulator: do not edit.\n"


PUBSUBS = ("pubsub.yaml", "pubsub-forecasts.yaml")


def pubsub(endpoint: str, project: str, name: str = "pubsub.yaml") -> dict:
    """components/gcp/<name> with the emulator's project and endpoint."""
    component = yaml.safe_load((ROOT / "components" / "gcp" / name).read_text())
    metadata = [m for m in component["spec"]["metadata"] if m["name"] not in ("projectId", "endpoint")]
    component["spec"]["metadata"] = [{"name": "projectId", "value": project}, *metadata,
                                      {"name": "endpoint", "value": endpoint}]
    return component


def write(out: Path, endpoint: str, project: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):
        old.unlink()
    written = []
    for source in sorted((ROOT / "components" / "local").glob("*.yaml")):
        if source.name not in PUBSUBS:
            written.append(Path(shutil.copy(source, out / source.name)))
    for name in PUBSUBS:
        target = out / name
        target.write_text(HEADER.format(source=f"components/gcp/{name}")
                          + yaml.safe_dump(pubsub(endpoint, project, name), sort_keys=False))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.gcp_emulated",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--endpoint", default="127.0.0.1:8085", help="the emulator's host:port")
    parser.add_argument("--project", default="intraday-local")
    args = parser.parse_args(argv)
    for path in write(args.out, args.endpoint, args.project):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
