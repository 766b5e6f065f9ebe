"""Forecasts for devices the model cannot forecast, so that every device
due in a portfolio has one (a trader still buys its energy).

- **Its own profile**: a device with too few readings in the week before
  the start for the model's features (back from an outage, a meter that
  stopped for days) but at least MIN_HISTORY_INTERVALS of its own readings
  further back: per quarter-hour of the day, the P10/P50/P90 and mean of
  every day it read, the band widened by PROFILE_BAND_WIDENING.
- **Its peers**: a device with fewer readings than that (new, or silent
  for longer than the window): the model's forecasts of the other devices
  of the same request, each scaled to this device by rated power where
  both are known; the mean and median of theirs, the band from P10 and
  P90 across them (how different the devices are is what is not known of
  this one).

The service (engine.py) and the backtest use these functions alike; each
forecast made this way says so in its notes.
"""

from __future__ import annotations

import numpy as np

from intraday.forecasting.features import MIN_HISTORY_INTERVALS

# A profile forecast's band: its spread over the days it draws on, half as wide again.
PROFILE_BAND_WIDENING = 1.5
MIN_PEERS = 3  # model forecasts a peer forecast needs


def own_profile(past: np.ndarray, first_of_day: int, horizon: int, per_day: int) -> np.ndarray | None:
    """(4, horizon) P10, P50, P90, mean from the device's readings `past`
    (the intervals before the start; `first_of_day`: the interval of the
    day its first value is in), or None with fewer than
    MIN_HISTORY_INTERVALS quarter-hours' worth of readings."""
    ok = ~np.isnan(past)
    if ok.sum() < MIN_HISTORY_INTERVALS * per_day // 96:
        return None
    tod = (first_of_day + np.arange(len(past))) % per_day
    table = np.full((4, per_day), np.nan)
    for k in range(per_day):
        values = past[ok & (tod == k)]
        if values.size:
            table[:3, k] = np.quantile(values, (0.1, 0.5, 0.9))
            table[3, k] = values.mean()
    for row in table:  # a time of day never read: its day's median
        row[np.isnan(row)] = np.nanmedian(row)
    ahead = (first_of_day + len(past) + np.arange(horizon)) % per_day
    p10, p50, p90, mean = (table[j, ahead] for j in range(4))
    w = PROFILE_BAND_WIDENING
    return np.stack([np.maximum(p50 - w * (p50 - p10), 0.0), p50, p50 + w * (p90 - p50), mean])


def from_peers(peers: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray | None:
    """(4, horizon) from `peers` (4, n, horizon): the model's P10, P50,
    P90 and mean of n other devices, each multiplied by `scale` (n,) (this
    device's rated power over the peer's; 1 where unknown); None with
    fewer than MIN_PEERS."""
    if peers.shape[1] < MIN_PEERS:
        return None
    s = np.ones(peers.shape[1]) if scale is None else np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    p10, p50, p90, mean = (peers[k] * s[:, None] for k in range(4))
    return np.stack([np.quantile(p10, 0.1, axis=0), np.median(p50, axis=0), np.quantile(p90, 0.9, axis=0),
                     mean.mean(axis=0)])


def rated_ratio(own: float | None, peers: np.ndarray) -> np.ndarray:
    """This device's rated power over each peer's (1 where either is unknown)."""
    peers = np.asarray(peers, float)
    if own is None or not np.isfinite(own) or own <= 0:
        return np.ones(len(peers))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = own / peers
    return np.where(np.isfinite(r) & (r > 0), r, 1.0)


PEER_NOTE = "no usable readings of its own"
PROFILE_NOTE = "too few readings in the week before the start"


def peer_note(n: int, scaled: bool) -> str:
    return (f"{PEER_NOTE}: forecast from the model's forecasts of {n} other devices"
            f"{', scaled by rated power' if scaled else ''}; the band is their spread")


def profile_note(newest: str, days: float) -> str:
    return (f"{PROFILE_NOTE} (the newest ends {newest}): forecast from "
            f"the device's own daily profile over {days:.1f} days of readings, not by the model; "
            "band widened by half")


def made_by_fallback(notes: tuple[str, ...] | list[str]) -> bool:
    """Whether a forecast came from here (its notes say so), not from the
    model: its band is this module's, not the model's calibrated one."""
    return any(n.startswith((PEER_NOTE, PROFILE_NOTE)) for n in notes)
