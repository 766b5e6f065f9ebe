"""The forecasting model: one global LightGBM model per quantile, with the
horizon step as a feature, and split-conformal calibration of the band.

Training (`fit`) on a `Panel` whose data end at `cutoff`:

1. Rows are sampled at random (device, forecast_start, horizon step)
   triplets, so forecasts starting at any quarter-hour are learned, not only
   one issue time. A share of them gets a truncated history (1-7 days) so the
   model knows what a newly installed device looks like.
2. Three LightGBM quantile models (P10, P50, P90) are trained on forecasts
   whose targets end before the calibration span (the last
   `calibration_days` of forecast starts before `cutoff`).
3. Calibration: on that span, per horizon block (6 h) and history regime
   (full / short), the P10 and P90 distances from P50 are scaled so that 10 %
   of actuals fall below P10 and 10 % above P90 (conformalized quantile
   regression with a multiplicative score, which keeps the band adaptive).
4. The portfolio band (`portfolio.py`): on whole cross-sections of the
   same span (every device at origins every few hours), how device errors
   add up into totals.
5. The models are refit on all rows up to `cutoff` with the same
   parameters; the calibration factors carry over (as mlforecast's conformal
   intervals do).

Besides the three quantiles, a fourth booster predicts the expected value
(`mean`), the figure that adds up across devices.

Quantiles never cross: the raw three are sorted before calibration, the
scaled distances are non-negative, and power is clipped at zero.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from intraday.forecasting import portfolio, recalibration
from intraday.forecasting.features import (
    CATEGORICAL_ATTRIBUTES,
    DAY,
    FEATURE_VERSION,
    FEATURES,
    SHORT_HISTORY_DAYS,
    Panel,
    Rows,
    Vocabulary,
    design_matrix,
)
from intraday.forecasting.portfolio import PortfolioCalibration
from intraday.forecasting.recalibration import Factors, Window
from intraday.forecasting.temperature import TemperatureSource
from intraday.timeutil import isoformat_z

QUANTILE_NAMES = ("p10", "p50", "p90")
# The boosters of a model: the three quantiles and the expected value. The
# mean is what adds up across devices (medians of intermittent loads do not).
OUTPUTS = (*QUANTILE_NAMES, "mean")
ALPHAS = {"p10": 0.1, "p50": 0.5, "p90": 0.9}
BLOCK_HOURS = 6  # calibration per 6-hour block of the horizon
ARTIFACT_FORMAT = 2

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainingConfig:
    horizon: int = DAY  # steps of the panel's grid (a day of quarter-hours by default)
    horizon_from: int = 0  # train on steps [horizon_from, horizon) only (direct per-block models)
    train_rows: int = 1_500_000
    calibration_rows: int = 300_000
    # 3 days left the portfolio band at 70 % coverage: too few days to see
    # how device errors move together.
    calibration_days: int = 7
    min_history_days: float = 1.0
    short_history_share: float = 0.15
    # Small trees, few of them: on the generated fleet 60/30 trees of 31
    # leaves score the same as 200 trees of 63 and predict 3x faster.
    num_trees: int = 60  # P50 and the mean
    tail_trees: int = 30  # P10 and P90
    # The mean's objective: "regression" (squared error) or "tweedie"
    # (log link, for loads that are often zero); squared error by backtest
    # (bench/mean_objective.py: lower portfolio WAPE and bias in every season).
    mean_objective: str = "regression"
    num_leaves: int = 31
    learning_rate: float = 0.15
    min_data_in_leaf: int = 200
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    # Portfolio calibration: cross-sections of at most this many devices,
    # at forecast starts this many hours apart in the calibration span.
    portfolio_devices: int = 2_000
    portfolio_origin_hours: int = 6
    refit: bool = True
    seed: int = 7
    threads: int = 0  # LightGBM's default: all cores

    def lgb_params(self, output: str) -> dict[str, Any]:
        objective = ({"objective": self.mean_objective} if output == "mean"
                     else {"objective": "quantile", "alpha": ALPHAS[output]})
        return {
            **objective, "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate, "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction, "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1, "lambda_l2": 1.0, "max_bin": 127, "seed": self.seed,
            "num_threads": self.threads, "verbose": -1, "deterministic": True, "force_row_wise": True,
        }


@dataclass
class Prediction:
    """Quantiles in kW per row, and what a forecast should say about them."""

    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray
    mean: np.ndarray
    short_history: np.ndarray  # bool per row
    history_days: np.ndarray


@dataclass
class QuantileModel:
    boosters: dict[str, lgb.Booster]
    vocabulary: Vocabulary
    # calibration[regime][tail] = scale factor per horizon block
    calibration: dict[str, dict[str, list[float]]]
    horizon: int
    manifest: dict[str, Any] = field(default_factory=dict)
    portfolio: PortfolioCalibration | None = None
    step_minutes: int = 15  # the grid it learned on; it forecasts that grid only
    compiled: Any = field(default=None, repr=False)  # CompiledTrees, see compile()
    # The scored days its bands are rescaled by (recalibration.py): its
    # calibration span's to start with.
    recalibration: Window = field(default_factory=Window)
    _factors: Factors | None = field(default=None, repr=False)

    @property
    def factors(self) -> Factors:
        """The rolling recalibration's factors over the window's days."""
        if self._factors is None:
            self._factors = self.recalibration.factors()
        return self._factors

    def rescore(self, window: Window) -> None:
        """Serve with `window`'s factors from now on."""
        self.recalibration, self._factors = window, None

    # -- inference --------------------------------------------------------

    def predict_rows(
        self, panel: Panel, rows: Rows, temperature: TemperatureSource | None = None,
        static: np.ndarray | None = None, factors: Factors | None = None,
    ) -> Prediction:
        """Forecasts of `rows`, their bands rescaled by `factors` (the
        model's own window's without it; `recalibration.NO_FACTORS`: the
        first calibration only)."""
        if panel.step_minutes != self.step_minutes:
            raise ValueError(f"this model forecasts {self.step_minutes}-min intervals, the data has "
                             f"{panel.step_minutes}-min ones: train one on data of that resolution")
        X, scale = design_matrix(panel, rows, self.vocabulary, temperature, static)
        raw = self.raw(X)
        history = X[:, FEATURES.index("history_days")]
        short = history < SHORT_HISTORY_DAYS
        p10, p50, p90 = self.calibrated(raw[:3], rows.horizon, short, factors)
        mean = np.maximum(raw[3], 0.0)
        return Prediction(p10 * scale, p50 * scale, p90 * scale, mean * scale, short, history)

    def raw(self, X: np.ndarray) -> np.ndarray:
        """(OUTPUTS, rows): uncalibrated quantiles and the mean, in units of
        the device's scale."""
        if self.compiled is not None:
            return np.asarray(self.compiled.predict(X))
        return np.stack([self.boosters[q].predict(X, num_threads=_threads(len(X))) for q in OUTPUTS])

    @property
    def block_steps(self) -> int:
        return block_steps(self.step_minutes)

    def compile(self, cache_dir: str | os.PathLike[str]) -> bool:
        """Predict with compiled trees from now on (same results, faster);
        False if they cannot be built here."""
        from pathlib import Path

        from intraday.forecasting.compiled import compile_trees

        self.compiled = compile_trees(self.boosters, OUTPUTS, Path(cache_dir))
        return self.compiled is not None

    def calibrated(self, raw: np.ndarray, horizon: np.ndarray, short: np.ndarray,
                   factors: Factors | None = None) -> tuple[np.ndarray, ...]:
        lo, mid, hi = np.sort(raw, axis=0)
        block = np.minimum(horizon // self.block_steps, len(self.calibration["full"]["p10"]) - 1)
        s10 = np.where(short, _take(self.calibration["short"]["p10"], block),
                       _take(self.calibration["full"]["p10"], block))
        s90 = np.where(short, _take(self.calibration["short"]["p90"], block),
                       _take(self.calibration["full"]["p90"], block))
        r10, r90 = (factors or self.factors).device_tails(horizon // self.block_steps)
        mid = np.maximum(mid, 0.0)
        return np.maximum(mid - r10 * s10 * (mid - lo), 0.0), mid, mid + r90 * s90 * (hi - mid)

    # -- artifact ---------------------------------------------------------

    def to_bytes(self) -> bytes:
        """One zip: manifest.json (feature spec, calibration, training
        window, metrics) and one LightGBM text model per quantile."""
        manifest = {
            **self.manifest,
            "format": ARTIFACT_FORMAT,
            "feature_version": FEATURE_VERSION,
            "features": list(FEATURES),
            "categorical": {k: v for k, v in self.vocabulary.values.items()},
            "calibration": self.calibration,
            "portfolio": self.portfolio.to_dict() if self.portfolio else None,
            "horizon": self.horizon,
            "step_minutes": self.step_minutes,
            "quantiles": ALPHAS,
        }
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
            for q, b in self.boosters.items():
                z.writestr(f"{q}.txt", b.model_to_string())
            z.writestr("recalibration.json", json.dumps(self.recalibration.to_dict()))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> QuantileModel:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            manifest = json.loads(z.read("manifest.json"))
            made = (manifest.get("format"), manifest.get("feature_version"), manifest.get("features"))
            if made != (ARTIFACT_FORMAT, FEATURE_VERSION, list(FEATURES)):
                raise ValueError(f"model artifact (format {made[0]}, features v{made[1]}) does not match "
                                 f"this code ({ARTIFACT_FORMAT}, v{FEATURE_VERSION}): retrain it")
            boosters = {q: lgb.Booster(model_str=z.read(f"{q}.txt").decode()) for q in OUTPUTS}
            scored = (json.loads(z.read("recalibration.json")) if "recalibration.json" in z.namelist()
                      else None)
        band = manifest.get("portfolio")
        return cls(boosters, Vocabulary(manifest["categorical"]), manifest["calibration"],
                   manifest["horizon"], manifest, PortfolioCalibration.from_dict(band) if band else None,
                   manifest.get("step_minutes", 15), recalibration=Window.from_dict(scored))


def block_steps(step_minutes: int) -> int:
    """Grid steps in one calibration block of the horizon."""
    return BLOCK_HOURS * 60 // step_minutes


def _take(values: list[float], idx: np.ndarray) -> np.ndarray:
    return np.take(values, idx)


def _threads(rows: int) -> int:
    # Threads cost more than they save on one device's 96 rows.
    return 1 if rows < 2_000 else 0


# -- training ---------------------------------------------------------------

def sample_rows(
    panel: Panel, first_origin: int, last_origin: int, n: int, horizon: int,
    rng: np.random.Generator, short_share: float = 0.0, first_step: int = 0,
) -> Rows:
    """`n` random (device, origin in [first, last], step) rows whose target
    has a reading and whose device has enough history for a scale."""
    if last_origin < first_origin:
        raise ValueError("no forecast starts fit in the training data: it is too short for the horizon")
    draw = int(n * 1.3) + 100  # some rows have no target reading or no history
    rows = Rows(
        rng.integers(0, len(panel.device_ids), draw),
        rng.integers(first_origin, last_origin + 1, draw),
        rng.integers(first_step, horizon, draw),
    )
    short = rng.random(draw) < short_share
    day = panel.per_day
    rows.history_start = np.where(short, rows.origin - rng.integers(day, 7 * day + 1, draw), 0)
    target = panel.power[rows.device, rows.target]
    keep = np.flatnonzero(~np.isnan(target))[:n]
    return Rows(rows.device[keep], rows.origin[keep], rows.horizon[keep], rows.history_start[keep])


def _dataset(panel: Panel, rows: Rows, vocabulary: Vocabulary, temperature: TemperatureSource | None,
             static: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, Rows]:
    X, scale = design_matrix(panel, rows, vocabulary, temperature, static)
    y = panel.power[rows.device, rows.target] / scale
    ok = ~np.isnan(y)
    return X[ok], y[ok], scale[ok], Rows(rows.device[ok], rows.origin[ok], rows.horizon[ok],
                                         rows.history_start[ok])


def _train(X: np.ndarray, y: np.ndarray, config: TrainingConfig, progress: Progress | None,
           label: str) -> dict[str, lgb.Booster]:
    cats = [FEATURES.index(c) for c in CATEGORICAL_ATTRIBUTES]
    data = lgb.Dataset(X, y, feature_name=list(FEATURES), categorical_feature=cats, free_raw_data=False,
                       params={"max_bin": 127, "verbose": -1})
    boosters = {}
    for q in OUTPUTS:
        trees = config.tail_trees if q in ("p10", "p90") else config.num_trees
        started = time.monotonic()
        callbacks = []
        if progress:
            def report(env: Any, q: str = q, trees: int = trees, started: float = started) -> None:
                if (env.iteration + 1) % 10 == 0 or env.iteration + 1 == trees:
                    progress(f"  {label}: {q} {env.iteration + 1}/{trees} trees on {len(y):,} rows, "
                             f"{time.monotonic() - started:.0f} s")
            callbacks.append(report)
        boosters[q] = lgb.train(config.lgb_params(q), data, num_boost_round=trees,
                                callbacks=callbacks)
    return boosters


def calibration_factors(raw: np.ndarray, y: np.ndarray, horizon: np.ndarray, blocks: int,
                        steps_per_block: int = DAY // 4) -> dict[str, Any]:
    """Per tail and horizon block, the factor s such that the share of
    actuals beyond `P50 -/+ s * (P50 - P10 | P90 - P50)` is 10 %: the
    conformal quantile of the score (y - P50) / (P90 - P50) (and mirrored)."""
    lo, mid, hi = np.sort(raw, axis=0)
    mid = np.maximum(mid, 0.0)
    eps = 1e-3
    up = (y - mid) / np.maximum(hi - mid, eps)
    down = (mid - y) / np.maximum(mid - lo, eps)
    out: dict[str, list[float]] = {"p10": [], "p90": []}
    block = horizon // steps_per_block
    for b in range(blocks):
        sel = block == b
        if sel.sum() < 50:  # too few rows in this block: the neighbour's factor
            out["p10"].append(out["p10"][-1] if out["p10"] else 1.0)
            out["p90"].append(out["p90"][-1] if out["p90"] else 1.0)
            continue
        n = int(sel.sum())
        level = min(np.ceil((n + 1) * 0.9) / n, 1.0)  # finite-sample conformal level
        out["p90"].append(max(float(np.quantile(up[sel], level)), 0.0))
        out["p10"].append(max(float(np.quantile(down[sel], level)), 0.0))
    return out


def fit(
    panel: Panel, temperature: TemperatureSource | None = None, config: TrainingConfig = TrainingConfig(),
    progress: Progress | None = None,
) -> QuantileModel:
    """Train on every reading of `panel` (which must end where training
    data ends: nothing after it is read)."""
    H, C, day = config.horizon, panel.intervals, panel.per_day
    rng = np.random.default_rng(config.seed)
    vocabulary = Vocabulary.learn(panel.attributes)
    static = vocabulary.encode(panel.attributes, len(panel.device_ids))
    first = int(config.min_history_days * day)
    cal_first = C - H - config.calibration_days * day
    train_last = cal_first - H  # train targets end before the first calibration forecast starts

    if progress:
        progress(f"sampling rows: {len(panel.device_ids):,} devices, {C / day:.1f} days "
                 f"of {panel.step_minutes}-min intervals")
    train = _dataset(panel, sample_rows(panel, first, train_last, config.train_rows, H, rng,
                                        config.short_history_share, config.horizon_from),
                     vocabulary, temperature, static)
    cal_rows = sample_rows(panel, cal_first, C - H, config.calibration_rows, H, rng,
                           first_step=config.horizon_from)
    cal = _dataset(panel, cal_rows, vocabulary, temperature, static)
    short_rows = Rows(cal[3].device, cal[3].origin, cal[3].horizon,
                      cal[3].origin - rng.integers(day, 7 * day, len(cal[3])))
    cal_short = _dataset(panel, short_rows, vocabulary, temperature, static)

    boosters = _train(train[0], train[1], config, progress, "fit")
    model = QuantileModel(boosters, vocabulary, {}, H, step_minutes=panel.step_minutes)
    per_block = model.block_steps
    blocks = -(-H // per_block)
    raw = model.raw(cal[0])[:3]
    model.calibration = {
        "full": calibration_factors(raw, cal[1], cal[3].horizon, blocks, per_block),
        "short": calibration_factors(model.raw(cal_short[0])[:3], cal_short[1], cal_short[3].horizon, blocks,
                                     per_block),
    }
    metrics = {
        "calibration_span": {"first_forecast_start": _iso(panel, cal_first), "last_forecast_start":
                             _iso(panel, C - H), "rows": int(len(cal[1]))},
        "full_history": _normalized_metrics(model, cal[0], cal[1], cal[2], cal[3].horizon, False),
        "short_history": _normalized_metrics(model, cal_short[0], cal_short[1], cal_short[2],
                                             cal_short[3].horizon, True),
    }
    p10, p50, p90 = model.calibrated(raw, cal[3].horizon, np.zeros(len(raw[0]), bool),
                                     recalibration.NO_FACTORS)
    origin_day = _days(panel, cal[3].origin)
    for day in np.unique(origin_day):
        at = origin_day == day
        model.recalibration.add(recalibration.device_day(
            day, cal[1][at], p10[at], p50[at], p90[at], cal[3].horizon[at], per_block, blocks))
    if progress:
        progress("calibrating the portfolio band on whole cross-sections of the calibration span")
    # Its own random stream: calibrating the band does not change the model.
    model.portfolio = calibrate_portfolio(model, panel, temperature, static, cal_first, C - H, config,
                                          np.random.default_rng([config.seed, 1]))
    model.rescore(model.recalibration)
    if config.refit:
        everything = _dataset(panel, sample_rows(panel, first, C - H, config.train_rows, H, rng,
                                                 config.short_history_share, config.horizon_from),
                              vocabulary, temperature, static)
        model.boosters = _train(everything[0], everything[1], config, progress, "refit on all data")
    model.manifest = {
        "training": {
            "devices": int(len(panel.device_ids)),
            "data_start": _iso(panel, 0),
            "data_end": _iso(panel, C),
            "step_minutes": panel.step_minutes,
            # The power matrix the model learned from, as hashed bytes:
            # the same data gives the same hash, whatever file it came from.
            "data_sha256": _data_hash(panel),
            "rows": int(len(train[1])),
            "config": asdict(config),
        },
        "validation": metrics,
    }
    return model


def calibrate_portfolio(model: QuantileModel, panel: Panel, temperature: TemperatureSource | None,
                        static: np.ndarray, first_origin: int, last_origin: int, config: TrainingConfig,
                        rng: np.random.Generator) -> PortfolioCalibration:
    """The portfolio band's calibration from every sampled device's forecasts
    at origins spread over [first_origin, last_origin] (held out from the
    model being calibrated)."""
    D, H = len(panel.device_ids), model.horizon
    devices = np.sort(rng.choice(D, min(D, config.portfolio_devices), replace=False))
    step = max(1, config.portfolio_origin_hours * panel.per_hour)
    origins = np.arange(first_origin, last_origin + 1, step)
    shape = (len(devices), len(origins), H)
    out = {k: np.empty(shape) for k in ("p10", "p90", "mean")}
    for k, o in enumerate(origins):
        p = model.predict_rows(panel, Rows.grid(devices, np.full(len(devices), o), H), temperature, static,
                               recalibration.NO_FACTORS)
        for name in out:
            out[name][:, k] = getattr(p, name).reshape(len(devices), H)
    target = origins[None, :, None] + np.arange(H)[None, None, :]
    actual = panel.power[devices[:, None, None], target]
    locations = device_locations(panel)[devices]
    calibration = portfolio.fit(actual, out["mean"], out["p10"], out["p90"], locations, model.block_steps,
                                rng)
    # The recalibration window's first days: how the band of these
    # devices' total did on the span (see recalibration.py).
    blocks = len(calibration.rho_fleet)
    for k, day in enumerate(_days(panel, origins)):
        member = ~np.isnan(actual[:, k])
        total = np.where(member.any(axis=0), np.where(member, actual[:, k], 0.0).sum(axis=0), np.nan)
        masked = {name: np.where(member, out[name][:, k], np.nan) for name in out}
        _, (q10, q50, q90) = portfolio.quantiles(calibration, masked["mean"], masked["p10"], masked["p90"],
                                                 locations, (0.1, 0.5, 0.9))
        model.recalibration.add(recalibration.portfolio_day(day, len(devices), total, q10, q50, q90,
                                                            calibration.block_steps, blocks))
    return calibration


def _days(panel: Panel, index: np.ndarray) -> np.ndarray:
    """The UTC dates (ISO) of grid indices."""
    t = np.datetime64(panel.start.replace(tzinfo=None), "m") + np.asarray(index) * panel.step_minutes
    return np.datetime_as_string(t.astype("datetime64[D]")).astype(object)


def device_locations(panel: Panel) -> np.ndarray:
    """Each device's location (its errors correlate with its neighbours'); "" if unknown."""
    if panel.attributes is not None and "location" in panel.attributes:
        return panel.attributes["location"].fillna("").astype(str).to_numpy()
    return np.full(len(panel.device_ids), "", dtype=object)


def _data_hash(panel: Panel) -> str:
    h = hashlib.sha256()
    h.update("\n".join(map(str, panel.device_ids)).encode())
    h.update(np.ascontiguousarray(panel.power).tobytes())
    if panel.outdoor_temp is not None:
        h.update(np.ascontiguousarray(panel.outdoor_temp).tobytes())
    return h.hexdigest()


def _iso(panel: Panel, i: int) -> str:
    return isoformat_z(panel.timestamp(i))


def _normalized_metrics(model: QuantileModel, X: np.ndarray, y: np.ndarray, scale: np.ndarray,
                        horizon: np.ndarray, short: bool) -> dict[str, float]:
    """Held-out metrics in kW on the calibration rows (in-sample for the
    calibration factors, so coverage is by construction close to 80 %)."""
    raw = model.raw(X)
    p10, p50, p90 = model.calibrated(raw[:3], horizon, np.full(len(y), short), recalibration.NO_FACTORS)
    actual = y * scale
    p10, p50, p90, mean = p10 * scale, p50 * scale, p90 * scale, np.maximum(raw[3], 0.0) * scale
    return {
        "wape": float(np.abs(actual - p50).sum() / np.abs(actual).sum()),
        "mean_bias": float(mean.sum() / actual.sum() - 1.0),
        "coverage_p10_p90": float(((actual >= p10) & (actual <= p90)).mean()),
        "mean_band_width_kw": float((p90 - p10).mean()),
    }
