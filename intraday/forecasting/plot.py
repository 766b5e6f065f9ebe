"""Pictures of forecasts: P50 with its P10-P90 band against actuals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def forecast_bands(forecasts: pd.DataFrame, out: Path, devices: int = 4, origins: int = 3,
                   title: str = "") -> list[str]:
    """A PNG with one panel per device (the first `devices` by id) showing
    its last `origins` forecasts. `forecasts` has the backtest's
    `--forecasts-out` columns. Returns the devices drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = sorted(forecasts["device_id"].unique())[:devices]
    last = sorted(forecasts["origin"].unique())[-origins:]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(12, 2.6 * len(chosen)), sharex=True, squeeze=False)
    for ax, device in zip(axes[:, 0], chosen, strict=True):
        f = forecasts[(forecasts["device_id"] == device) & forecasts["origin"].isin(last)]
        for _, g in f.groupby("origin"):
            t = g["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
            ax.fill_between(t, g["p10"], g["p90"], color="tab:blue", alpha=0.25, linewidth=0, step="post")
            ax.step(t, g["p50"], where="post", color="tab:blue", linewidth=1.2)
            ax.step(t, g["actual"], where="post", color="black", linewidth=0.8)
            ax.axvline(t.iloc[0], color="grey", linewidth=0.6, linestyle=":")
        ax.set_ylabel("kW")
        ax.set_title(device, loc="left", fontsize=9)
        ax.set_ylim(bottom=0)
    handles = [plt.Rectangle((0, 0), 1, 1, color="tab:blue", alpha=0.25),
               plt.Line2D([], [], color="tab:blue"), plt.Line2D([], [], color="black")]
    axes[0, 0].legend(handles, ["P10-P90", "P50", "actual"], loc="upper right", fontsize=8, ncol=3)
    fig.suptitle(title or "forecasts against actuals (dotted line: forecast start)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [str(d) for d in chosen]
