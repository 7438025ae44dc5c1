"""Cheap checks before a run starts, so a wrong flag fails in a second with a one-line answer
instead of minutes later inside a task."""

from __future__ import annotations

import pandas as pd

from ctloop import storage
from ctloop.errors import ConfigError, DataError


def check_data(data_uri: str, label: str, exclude: list[str]) -> list[str]:
    """Checks that the latest span exists and has the label and excluded columns.

    Returns:
        The columns of the latest span's first file.
    """
    from ctloop.components.ingest.logic import select_span

    span, files = select_span(data_uri)
    first = files[0].uri
    path = storage.fetch(first)
    try:
        if first.endswith(".parquet"):
            import pyarrow.parquet as pq

            columns = pq.read_schema(path).names
        else:
            columns = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"data file {first} cannot be read ({exc}); check its format") from exc
    if label not in columns:
        raise ConfigError(
            f"--label {label!r} is not a column of {first} (columns: {', '.join(columns)}); "
            "pass one of those"
        )
    unknown = [c for c in exclude if c not in columns]
    if unknown:
        raise ConfigError(
            f"--exclude {unknown} not among the columns of {first} ({', '.join(columns)}); "
            "fix the column names"
        )
    return columns
