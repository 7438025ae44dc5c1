"""Reading CSV and Parquet data files a batch of rows at a time, with ingest's one-line errors.

Memory is bounded by a batch, not by the file: pandas' CSV parser reads ``batch_rows`` rows at a
time (the same parser, and so the same values, as a whole-file read), and Parquet is read a
``batch_rows`` batch at a time through pyarrow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import pandas as pd

from ctloop.data.tables import read_table
from ctloop.errors import DataError


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
    with _reading(uri):
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


@contextlib.contextmanager
def _reading(uri: str) -> Iterator[None]:
    """The errors ``ctloop.data.tables.read_table`` gives a whole-file read, for a read in
    batches."""
    try:
        yield
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"data file {uri} is empty; remove it or write a header and rows") from exc
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data file {uri} is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at "
            f"offset {exc.start}); re-encode it as UTF-8"
        ) from exc
    except (ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"data file {uri} cannot be read ({first}); check its format") from exc
