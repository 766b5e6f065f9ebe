"""A fleet window's readings as cells of a (devices x intervals) matrix:
where each Arrow row lands, and the cells several rows fall into."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def cell_indexes(ids: pa.ChunkedArray, idx: pa.ChunkedArray, rows: np.ndarray, n: int) -> list[np.ndarray]:
    """Per chunk, the flat index `row * n + i` into a (rows x n) matrix of
    each pair of device id and interval index. Dictionary-encoded ids are
    looked up once per dictionary (chunks from one part share it), plain
    ones per value. A device id not in `rows` raises `KeyError` with the ids."""
    value_set = pa.array(rows, type=pa.string())
    cells: list[Any] = []
    seen: Any = None
    row_of: Any = None
    for chunk, i in zip(ids.chunks, idx.chunks, strict=True):
        if pa.types.is_dictionary(chunk.type):
            if seen is None or not chunk.dictionary.equals(seen):
                seen = chunk.dictionary
                row_of = pc.index_in(seen, value_set=value_set)
            row = row_of.take(chunk.indices)
        else:
            row = pc.index_in(chunk, value_set=value_set)
        if row.null_count:
            raise KeyError(sorted(set(pc.filter(chunk, pc.is_null(row)).to_pylist())))
        cells.append(row.to_numpy().astype(np.int64) * n + i.to_numpy())
    return cells


def sum_split_cells(values: np.ndarray, chunks: list[tuple[np.ndarray, pa.Array, pa.Array]]) -> None:
    """Fix the cells of `values` that several rows fall into (a quarter-hour
    whose readings arrived in different inserts, in parts not merged yet):
    their mean is the sum of the rows' power sums over the sum of their
    samples. Only those cells are recomputed; they are few."""
    count = np.bincount(np.concatenate([c for c, _, _ in chunks]), minlength=len(values))
    split = count > 1
    del count
    cells, sums, samples = [], [], []
    for cell, power_sum, n in chunks:
        hit = split[cell]
        if hit.any():
            cells.append(cell[hit])
            sums.append(power_sum.to_numpy()[hit])
            samples.append(n.to_numpy()[hit])
    where, group = np.unique(np.concatenate(cells), return_inverse=True)
    values[where] = (np.bincount(group, weights=np.concatenate(sums))
                     / np.bincount(group, weights=np.concatenate(samples)))
