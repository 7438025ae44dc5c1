"""Reading CSV and Parquet data files a batch of rows at a time, with ingest's one-line errors.

Memory is bounded by a batch, not by the file: pandas' CSV parser reads ``batch_rows`` rows at a
time (the same parser, and so the same values, as a whole-file read), and Parquet is read a
``batch_rows`` batch at a time through pyarrow.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pandas as pd

from ctloop.data.tables import read_errors, read_table


def is_parquet(uri: str) -> bool:
    return uri.endswith(".parquet")


def header(uri: str, path: str) -> list[str]:
    """The file's column names, with ``read_table``'s checks (empty file, duplicate names, another
    delimiter, not UTF-8)."""
    return list(read_table(uri, path, header_only=True).columns)


def batches(uri: str, path: str, batch_rows: int, dtype: Mapping[str, object] | None = None,
            usecols: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The file's rows as frames of at most ``batch_rows`` rows, in file order.

    Args:
        uri: The file's URI, for messages and to tell the format.
        path: Its local path (the file itself, or a local copy of a remote one).
        batch_rows: Rows per frame.
        dtype: CSV only: column -> dtype to parse as (e.g. ``str``), as ``pandas.read_csv``.
        usecols: Only these columns.
    """
    with read_errors(uri):
        if is_parquet(uri):
            import pyarrow as pa
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=usecols,
                                              use_pandas_metadata=True):
                # As pandas.read_parquet converts a whole file (index columns to the index).
                yield pa.Table.from_batches([batch]).to_pandas()
            return
        reader = pd.read_csv(path, chunksize=batch_rows, dtype=dtype, usecols=usecols)
        with reader:
            yield from reader
