"""The Swiss households' real smart-meter data as the three files
`intraday import` takes: devices.csv, readings.parquet and weather.csv.

    .venv/bin/python scripts/swiss_households.py .data/swiss-files            # the 90 heat-pump homes
    .venv/bin/python scripts/swiss_households.py .data/swiss-files --all      # all 537 households

Reads ../shared/data/swiss-households/ (its README: 537 households, 90 with a
heat pump, whole-house load at 15 min over seven winter weeks of 2018, an
hourly outdoor temperature averaged over Swiss stations). The data is not
copied into the repository; these files are made where you say.

Devices are `ch-<household>` in one zone, `CH` (the temperature is one
series for the country), country CH (Swiss calendar and time zone). The
survey's heating type goes into `heat_pump_type`: `heat pump`, `heat pump
and boiler`, or, with --all, `none (<heating type>)` for the others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "swiss-households"
HEAT_PUMP = ("heat pump", "heat pump and boiler")
ZONE = "CH"


def write_files(out: Path, source: Path = SOURCE, all_households: bool = False) -> dict[str, Path]:
    load = pd.read_parquet(source / "load_15min.parquet")
    weather = pd.read_parquet(source / "weather_hourly.parquet")
    if not all_households:
        load = load[load["heating_type"].isin(HEAT_PUMP)]
    kinds = load.drop_duplicates("household").set_index("household")["heating_type"].sort_index()
    devices = pd.DataFrame({
        "device_id": "ch-" + kinds.index.astype(str),
        "location": ZONE,
        "country": "CH",
        "heat_pump_type": [k if k in HEAT_PUMP else f"none ({k})" for k in kinds],
    })
    readings = pd.DataFrame({
        "device_id": "ch-" + load["household"].astype(str),
        "timestamp": load["timestamp"],
        "power": load["power_kw"],
    }).sort_values(["device_id", "timestamp"], kind="stable")
    observed = pd.DataFrame({"location": ZONE, "timestamp": weather["timestamp"],
                             "outdoor_temp_c": weather["outdoor_temp_c"].round(3)}).dropna()
    out.mkdir(parents=True, exist_ok=True)
    files = {"devices": out / "devices.csv", "readings": out / "readings.parquet",
             "weather": out / "weather.csv"}
    devices.to_csv(files["devices"], index=False)
    readings.to_parquet(files["readings"], index=False)
    observed.assign(timestamp=observed["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(
        files["weather"], index=False)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory for devices.csv, readings.parquet, weather.csv")
    parser.add_argument("--all", action="store_true", help="all 537 households, not only the heat pumps")
    parser.add_argument("--source", type=Path, default=SOURCE, help=f"the data set (default {SOURCE})")
    args = parser.parse_args()
    if not (args.source / "load_15min.parquet").exists():
        sys.exit(f"swiss_households: {args.source} has no load_15min.parquet (read its README)")
    files = write_files(args.out, args.source, args.all)
    for name, path in files.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
