"""Pictures of forecasts: P50 with its P10-P90 band against actuals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def forecast_bands(forecasts: pd.DataFrame, out: Path, devices: int = 4, origins: int = 3,
                   title: str = "", portfolio: pd.DataFrame | None = None) -> list[str]:
    """A PNG with one panel per device (the first `devices` by id) showing
    its last `origins` forecasts, under a panel of the portfolio's total when
    given. `forecasts` and `portfolio` have the backtest's `--forecasts-out`
    and `--portfolio-out` columns. Returns the devices drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = sorted(forecasts["device_id"].unique())[:devices]
    last = sorted(forecasts["origin"].unique())[-origins:]
    panels = [(device, forecasts[forecasts["device_id"] == device]) for device in chosen]
    if portfolio is not None:
        panels.insert(0, ("portfolio: the total of all devices with a reading", portfolio))
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, (name, frame) in zip(axes[:, 0], panels, strict=True):
        f = frame[frame["origin"].isin(last)]
        for _, g in f.groupby("origin"):
            t = g["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
            ax.fill_between(t, g["p10"], g["p90"], color="tab:blue", alpha=0.25, linewidth=0, step="post")
            ax.step(t, g["p50"], where="post", color="tab:blue", linewidth=1.2)
            if "mean" in g:
                ax.step(t, g["mean"], where="post", color="tab:orange", linewidth=1.0)
            ax.step(t, g["actual"], where="post", color="black", linewidth=0.8)
            ax.axvline(t.iloc[0], color="grey", linewidth=0.6, linestyle=":")
        ax.set_ylabel("kW")
        ax.set_title(name, loc="left", fontsize=9)
        ax.set_ylim(bottom=0)
    handles = [plt.Rectangle((0, 0), 1, 1, color="tab:blue", alpha=0.25),
               plt.Line2D([], [], color="tab:blue"), plt.Line2D([], [], color="tab:orange"),
               plt.Line2D([], [], color="black")]
    axes[0, 0].legend(handles, ["P10-P90", "P50", "mean", "actual"], loc="upper right", fontsize=8, ncol=4)
    fig.suptitle(title or "forecasts against actuals (dotted line: forecast start)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [str(d) for d in chosen]
