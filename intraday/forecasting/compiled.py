"""Compiled trees: the model's LightGBM boosters as native code (treelite +
tl2cgen, built with gcc), for the same predictions in about half the time.

bench/forecasting.py measures both on every run (largest difference 0.0 on
the generated fleet: tl2cgen evaluates the same thresholds in the same
order). Libraries are built once per model version and kept on disk, so a
restarted forecaster loads them in milliseconds. Without a C compiler the
model falls back to LightGBM's own predictor.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("intraday.compiled")
SMALL_BATCH = 2_000  # rows below which one thread beats two


class CompiledTrees:
    def __init__(self, boosters: dict[str, Any], names: tuple[str, ...], cache_dir: Path):
        import tl2cgen
        import treelite

        self._names = names
        self._many, self._one = {}, {}
        for q in names:
            text = boosters[q].model_to_string()
            key = hashlib.sha256(text.encode()).hexdigest()[:16]
            lib = cache_dir / f"{q}-{key}.so"
            if not lib.exists():
                cache_dir.mkdir(parents=True, exist_ok=True)
                src = cache_dir / f".{q}-{key}.{os.getpid()}.txt"
                src.write_text(text)
                tmp = lib.with_name(f".{lib.name}.{os.getpid()}.partial.so")
                tl2cgen.export_lib(treelite.frontend.load_lightgbm_model(str(src)), toolchain="gcc",
                                   libpath=str(tmp), params={"parallel_comp": 4}, nthread=os.cpu_count())
                tmp.replace(lib)
                src.unlink()
            self._many[q] = tl2cgen.Predictor(str(lib), nthread=os.cpu_count())
            self._one[q] = tl2cgen.Predictor(str(lib), nthread=1)
        self._dmatrix = tl2cgen.DMatrix
        self._one_lock, self._many_lock = threading.Lock(), threading.Lock()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(quantiles, rows), as LightGBM's predict would give. One call at a
        time per predictor: a tl2cgen Predictor (and its thread pool) used
        from two threads at once crashed the forecaster (fleet shards run in
        parallel); the large-batch one uses every core anyway."""
        small = len(X) < SMALL_BATCH
        preds, lock = (self._one, self._one_lock) if small else (self._many, self._many_lock)
        dm = self._dmatrix(np.ascontiguousarray(X, dtype=np.float32), dtype="float32")
        with lock:
            return np.stack([preds[q].predict(dm).ravel().astype(np.float64) for q in self._names])


def compile_trees(boosters: dict[str, Any], names: tuple[str, ...], cache_dir: Path) -> CompiledTrees | None:
    try:
        return CompiledTrees(boosters, names, cache_dir)
    except Exception as e:  # no compiler, or tl2cgen cannot build here: LightGBM still works
        log.warning("compiled trees unavailable (%s); predicting with LightGBM", e)
        return None
