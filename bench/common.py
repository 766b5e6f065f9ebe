"""What every benchmark shares: the machine description and latency summary."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np


def gateway_headers(data_dir: Path | None = None) -> dict[str, str]:
    """The API key header for the gateway: INTRADAY_API_KEY, else the key
    `make up` wrote into the stack's data directory."""
    from intraday.config import Settings

    key = (Settings(data_dir=data_dir) if data_dir else Settings()).client_api_key
    return {"authorization": f"Bearer {key}"} if key else {}


def app_headers(data_dir: Path | None = None) -> dict[str, str]:
    """The app API token header, for an app's own endpoints (/batching, /rule)."""
    from intraday.config import Settings

    token = (Settings(data_dir=data_dir) if data_dir else Settings()).app_api_token
    return {"dapr-api-token": token} if token else {}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version()}


def summary(latencies_s: list[float], wall_s: float) -> dict:
    ms = np.array(latencies_s) * 1000
    return {
        "requests": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "max_ms": round(float(ms.max()), 2),
        "throughput_rps": round(len(ms) / wall_s, 1),
    }
