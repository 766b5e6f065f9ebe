"""The portfolio: the total of a set of devices, which is what is traded.

Its expected value is the sum of the device means, so it is coherent with
the devices. Its band is not the sum of the device bands: device errors
partly cancel (on/off cycles are not synchronised) and partly move together
(a temperature forecast error hits every device at that location). The
quantiles of the total come from a model of that dependence, calibrated on
held-out totals:

1. **Device error variance** per interval, from what the device forecast
   already says: `var_i = a * (p90_i - p10_i)^2 + c * mean_i^2` (per 6 h block
   of the horizon, least squares on held-out errors; the mean term carries
   the intermittent devices whose band is narrow but whose spikes are not).
2. **Dependence**: block equicorrelation, one correlation between devices of
   the same location and a lower one across locations, so the variance of a
   total is `(1 - rl) sum(s^2) + (rl - rf) sum_loc (sum_loc s)^2 + rf (sum s)^2`
   with `s_i = sqrt(var_i)`; estimated from the cross-products of held-out
   errors of distinct devices.
3. **Shape**: the quantiles of the standardized total `(Y - M) / sd` on
   held-out sub-portfolios (random devices of several sizes, and each
   location's devices), per portfolio size: small portfolios of intermittent
   loads are skewed, large ones close to normal. A portfolio of any size
   interpolates in log size between the sizes calibrated.

`bench/forecasting.py` (part "seasons") compares this with the simpler choices (summed
device quantiles, independent devices, one correlation) on held-out data;
docs/evaluation.md ("Seasons and the portfolio") gives the figures and why this one was chosen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Quantile levels the calibrated shape holds; any level in between is
# interpolated. The trade reads the cost-optimal one (see trading/rules.py).
LEVELS = np.round(np.arange(0.01, 1.0, 0.01), 2)
Levels = np.ndarray | tuple[float, ...]  # quantile levels asked of a total
# Sizes of the random sub-portfolios calibrated (those up to the fleet's size).
SIZES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000)
SUBSETS_PER_SIZE = 24
MIN_SAMPLES = 200  # standardized totals below which a size is not calibrated


@dataclass(frozen=True)
class PortfolioCalibration:
    block_steps: int  # horizon steps per block of `variance`, `rho_location`, `rho_fleet`
    variance: list[list[float]]  # per block: (a, c) of the device variance
    rho_location: list[float]  # per block: correlation of device errors at one location
    rho_fleet: list[float]  # per block: across locations
    sizes: list[int]  # portfolio sizes whose shape is calibrated, ascending
    z: list[list[float]]  # z[size][level]: quantiles of the standardized total at LEVELS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PortfolioCalibration:
        return cls(**d)

    def block(self, step: np.ndarray) -> np.ndarray:
        return np.asarray(np.minimum(np.asarray(step) // self.block_steps, len(self.rho_fleet) - 1))

    def device_sd(self, mean: np.ndarray, p10: np.ndarray, p90: np.ndarray, step: np.ndarray) -> np.ndarray:
        """Standard deviation of each device's error; `step` broadcasts
        against the last axis."""
        coef = np.asarray(self.variance)[self.block(step)]
        return np.asarray(np.sqrt(coef[..., 0] * (p90 - p10) ** 2 + coef[..., 1] * mean**2))

    def shape(self, devices: int) -> np.ndarray:
        """Standardized quantiles at LEVELS for a portfolio of `devices`."""
        z = np.asarray(self.z)
        if len(self.sizes) == 1:
            return np.asarray(z[0])
        x = np.log(np.clip(devices, self.sizes[0], self.sizes[-1]))
        k = int(np.clip(np.searchsorted(self.sizes, devices) - 1, 0, len(self.sizes) - 2))
        lo, hi = np.log(self.sizes[k]), np.log(self.sizes[k + 1])
        w = (x - lo) / (hi - lo)
        return np.asarray((1 - w) * z[k] + w * z[k + 1])


def total_sd(sd: np.ndarray, location: np.ndarray, rho_location: np.ndarray,
             rho_fleet: np.ndarray) -> np.ndarray:
    """sd of the total of devices x steps errors `sd` (NaN: device absent
    at that step) under the block-equicorrelation model; one per step."""
    squares, total, by_location = _sd_sums(np.where(np.isnan(sd), 0.0, sd), location)
    return _sd_of(squares, total, by_location.values(), rho_location, rho_fleet)


def _sd_sums(s: np.ndarray, location: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per step: sum of squares, sum, and sum per location of device sds."""
    codes, loc = np.unique(np.asarray(location, dtype=object).astype(str), return_inverse=True)
    per_loc = np.zeros((len(codes), s.shape[1]))
    np.add.at(per_loc, loc, s)
    return (s * s).sum(axis=0), s.sum(axis=0), dict(zip(codes.tolist(), per_loc, strict=True))


def _sd_of(squares: np.ndarray, total: np.ndarray, by_location: Any, rho_location: np.ndarray,
           rho_fleet: np.ndarray) -> np.ndarray:
    """The total's sd from the sums of `_sd_sums`."""
    within = sum((s**2 for s in by_location), np.zeros_like(total))
    var = (1 - rho_location) * squares + (rho_location - rho_fleet) * within + rho_fleet * total**2
    return np.asarray(np.sqrt(np.maximum(var, 0.0)))


@dataclass
class Partial:
    """What the total of some devices needs from them, per step: how many
    are present, the sum of their means and of their P10/P50/P90 (the band
    without a calibration), and the sums their error sds enter the total's
    variance by (sum of squares, sum, sum per location). Partials of
    disjoint sets of devices add up, so a fleet's total is built from its
    shards without gathering every device forecast in one place."""

    present: np.ndarray
    mean: np.ndarray
    quantile_sums: np.ndarray  # (3, steps): summed P10, P50, P90
    sd_squares: np.ndarray
    sd_sum: np.ndarray
    sd_by_location: dict[str, np.ndarray]

    def __add__(self, other: Partial) -> Partial:
        by_location = dict(self.sd_by_location)
        for loc, s in other.sd_by_location.items():
            by_location[loc] = by_location[loc] + s if loc in by_location else s
        return Partial(self.present + other.present, self.mean + other.mean,
                       self.quantile_sums + other.quantile_sums, self.sd_squares + other.sd_squares,
                       self.sd_sum + other.sd_sum, by_location)

    def to_dict(self) -> dict[str, Any]:
        return {"present": self.present.tolist(), "mean": self.mean.tolist(),
                "quantile_sums": self.quantile_sums.tolist(), "sd_squares": self.sd_squares.tolist(),
                "sd_sum": self.sd_sum.tolist(),
                "sd_by_location": {k: v.tolist() for k, v in self.sd_by_location.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Partial:
        return cls(np.asarray(d["present"], np.int64), np.asarray(d["mean"], float),
                   np.asarray(d["quantile_sums"], float), np.asarray(d["sd_squares"], float),
                   np.asarray(d["sd_sum"], float),
                   {k: np.asarray(v, float) for k, v in d["sd_by_location"].items()})


def partial(calibration: PortfolioCalibration | None, mean: np.ndarray, p10: np.ndarray,
            p50: np.ndarray, p90: np.ndarray, location: np.ndarray) -> Partial:
    """The Partial of devices x steps forecasts (NaN: the device is not
    part of it at that step); the sd sums are zero without a calibration."""
    steps = np.arange(mean.shape[1])
    absent = np.isnan(mean)
    sums = np.stack([np.where(absent, 0.0, q).sum(axis=0) for q in (p10, p50, p90)])
    if calibration is None:
        s = np.zeros_like(mean)
    else:
        s = np.where(absent, 0.0, calibration.device_sd(mean, p10, p90, steps))
        s = np.where(np.isnan(s), 0.0, s)
    squares, total, by_location = _sd_sums(s, location)
    return Partial((~absent).sum(axis=0), np.where(absent, 0.0, mean).sum(axis=0), sums, squares, total,
                   by_location)


def quantiles_of(calibration: PortfolioCalibration, part: Partial, levels: Levels = LEVELS,
                 factors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The total's mean per step and its (levels, steps) quantiles,
    non-negative and non-decreasing in the level, from its Partial.
    `factors` (blocks, 2), from a rolling recalibration (recalibration.py):
    per block, the multipliers of the distance from the median below it
    and above it."""
    steps = np.arange(len(part.mean))
    block = calibration.block(steps)
    sd = _sd_of(part.sd_squares, part.sd_sum, part.sd_by_location.values(),
                np.asarray(calibration.rho_location)[block], np.asarray(calibration.rho_fleet)[block])
    present = part.present
    levels = np.asarray(levels, float)
    z = np.empty((len(levels), len(steps)))
    for n in np.unique(present):
        shape = calibration.shape(max(int(n), 1))
        z[:, present == n] = np.interp(levels, LEVELS, shape)[:, None]
        if factors is not None:
            median = float(np.interp(0.5, LEVELS, shape))
            f = np.asarray(factors)[np.minimum(block, len(factors) - 1)]  # (steps, 2)
            tail = np.where(levels[:, None] < 0.5, f[None, :, 0], f[None, :, 1])[:, present == n]
            z[:, present == n] = median + tail * (z[:, present == n] - median)
    out = np.maximum(part.mean[None, :] + z * sd[None, :], 0.0)
    out[:, present == 0] = np.nan
    return np.where(present > 0, part.mean, np.nan), out


def quantiles(calibration: PortfolioCalibration, mean: np.ndarray, p10: np.ndarray, p90: np.ndarray,
              location: np.ndarray, levels: Levels = LEVELS, factors: np.ndarray | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
    """The portfolio of the devices x steps forecasts (NaN: the device is
    not part of it at that step): its mean per step (the sum of the device
    means) and (levels, steps) quantiles of the total."""
    return quantiles_of(calibration, partial(calibration, mean, p10, (p10 + p90) / 2, p90, location),
                        levels, factors)


def fit(actual: np.ndarray, mean: np.ndarray, p10: np.ndarray, p90: np.ndarray, location: np.ndarray,
        block_steps: int, rng: np.random.Generator) -> PortfolioCalibration:
    """Calibrate on held-out forecasts: arrays (devices, origins, steps) of
    actuals (NaN: no reading) and the device forecasts, `location` per
    device. Every origin forecasts the same steps."""
    D, _, H = actual.shape
    blocks = -(-H // block_steps)
    block = np.arange(H) // block_steps
    ok = ~np.isnan(actual) & ~np.isnan(mean)
    err = np.where(ok, actual - mean, 0.0)
    width = np.where(ok, p90 - p10, 0.0)
    level = np.where(ok, mean, 0.0)

    # 1. Device variance per block: e^2 ~ a w^2 + c m^2 (non-negative least
    #    squares), rescaled so that the variances add up to the squared errors.
    variance = []
    for b in range(blocks):
        sel = ok[:, :, block == b]
        w2, m2 = width[:, :, block == b][sel] ** 2, level[:, :, block == b][sel] ** 2
        e2 = err[:, :, block == b][sel] ** 2
        coef = _nonnegative_lstsq(np.stack([w2, m2], axis=1), e2)
        fitted = coef[0] * w2.sum() + coef[1] * m2.sum()
        variance.append(coef * (e2.sum() / fitted if fitted > 0 else 1.0))
    coef = np.asarray(variance)[block]  # (H, 2)
    sd = np.where(ok, np.sqrt(coef[:, 0] * width**2 + coef[:, 1] * level**2), 0.0)

    # 2. Correlations from cross-products only (pairs of distinct devices),
    #    so a misfit of the variances does not pass for correlation:
    #    rho = sum_{i != j} e_i e_j / sum_{i != j} s_i s_j, within locations
    #    and across them.
    codes, loc = np.unique(location, return_inverse=True)
    L = len(codes)
    s_loc, a_loc, q_loc, b_loc = (np.zeros((L, *err.shape[1:])) for _ in range(4))
    np.add.at(s_loc, loc, err)
    np.add.at(a_loc, loc, sd)
    np.add.at(q_loc, loc, err * err)
    np.add.at(b_loc, loc, sd * sd)
    rho_location, rho_fleet = [], []
    for b in range(blocks):
        S, A, Q, B = (x[:, :, block == b] for x in (s_loc, a_loc, q_loc, b_loc))
        within = ((S**2 - Q).sum(), (A**2 - B).sum())
        across = ((S.sum(axis=0) ** 2 - (S**2).sum(axis=0)).sum(),
                  (A.sum(axis=0) ** 2 - (A**2).sum(axis=0)).sum())
        rf = across[0] / across[1] if across[1] > 0 else np.nan
        rl = within[0] / within[1] if within[1] > 0 else np.nan
        if np.isnan(rf) and np.isnan(rl):
            rf = rl = 0.0
        rf = rl if np.isnan(rf) else rf  # one location: nothing tells the two apart
        rl = rf if np.isnan(rl) else rl  # one device per location: one correlation
        rl = float(np.clip(rl, 0.0, 1.0))
        rho_location.append(rl)
        rho_fleet.append(float(np.clip(rf, 0.0, rl)))

    # 3. Shape: standardized totals of random and per-location sub-portfolios.
    partial = PortfolioCalibration(block_steps, [list(map(float, v)) for v in variance], rho_location,
                                   rho_fleet, [1], [list(np.zeros(len(LEVELS)))])
    rl, rf = np.asarray(rho_location)[block], np.asarray(rho_fleet)[block]
    samples: dict[int, list[np.ndarray]] = {}

    def add(members: np.ndarray) -> None:
        # The total of the members with a reading (absent ones add 0 to
        # actual, mean and variance alike), as the backtest scores it.
        m_ok = ok[members]
        y = err[members].sum(axis=0)
        total = np.stack([total_sd(sd[members][:, o], location[members], rl, rf) for o in range(sd.shape[1])])
        good = m_ok.any(axis=0) & (total > 1e-9)
        size = _nearest(len(members), [s for s in SIZES if s <= D] or [D])
        samples.setdefault(size, []).append((y / np.where(good, total, 1.0))[good])

    for size in SIZES:
        if size >= D:
            add(np.arange(D))
            break
        for _ in range(SUBSETS_PER_SIZE):
            add(rng.choice(D, size, replace=False))
    for k in range(L):
        members = np.flatnonzero(loc == k)
        if 1 < len(members) < D:
            add(members)
    sizes, z = [], []
    for size in sorted(samples):
        values = np.concatenate(samples[size])
        if len(values) >= MIN_SAMPLES:
            sizes.append(int(size))
            z.append([float(v) for v in np.quantile(values, LEVELS)])
    if not sizes:
        raise ValueError("too few held-out totals to calibrate the portfolio band")
    return PortfolioCalibration(block_steps, partial.variance, rho_location, rho_fleet, sizes, z)


def _nearest(n: int, sizes: list[int]) -> int:
    return min(sizes, key=lambda s: abs(np.log(s) - np.log(n)))


def _nonnegative_lstsq(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    if len(y) == 0:
        return np.array([1.0 / 2.5631**2, 0.0])  # a normal's P10-P90 width is 2.5631 sd
    scale = np.sqrt((A**2).mean(axis=0)) + 1e-12  # columns of comparable size for nnls
    coef, _ = nnls(A / scale, y)
    return np.asarray(coef / scale)
