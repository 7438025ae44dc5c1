"""Reading one CSV or Parquet data file, with one-line errors for what pandas gets silently
wrong."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pandas as pd

from ctloop.errors import DataError


def read_table(uri: str, source, header_only: bool = False) -> pd.DataFrame:
    """Reads a CSV or Parquet file (a path or a binary file object) with one-line errors.

    Catches what pandas would silently get wrong: duplicate column names and a file in another
    delimiter (read as one column).

    Args:
        uri: The file's URI, for messages and to tell the format.
        source: Its local path or a binary file object.
        header_only: Read only the column names (an empty frame).
    """
    with read_errors(uri):
        if uri.endswith(".parquet"):
            import pyarrow.parquet as pq

            if header_only:
                return pd.DataFrame(columns=pq.read_schema(source).names)
            return pd.read_parquet(source)
        names = _csv_header(source)  # as written: pandas renames a duplicate "x" to "x.1"
        frame = pd.read_csv(source, nrows=0 if header_only else None)
    _check_header(uri, names)
    return frame


@contextlib.contextmanager
def read_errors(uri: str) -> Iterator[None]:
    """Turns what reading ``uri`` (whole, or in batches) raises into one-line DataErrors."""
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


def _csv_header(source) -> list[str]:
    """The CSV's first row as written, leaving ``source`` where it was."""
    if hasattr(source, "seek"):
        source.seek(0)
    names = pd.read_csv(source, nrows=1, header=None, dtype=str).iloc[0].tolist()
    if hasattr(source, "seek"):
        source.seek(0)
    return names


def _check_header(uri: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(
            f"data file {uri} has duplicate column names {duplicates}; rename or drop the copies"
        )
    if len(names) == 1:
        for delimiter, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if delimiter in names[0]:
                raise DataError(
                    f"data file {uri} reads as one column {names[0]!r}: it looks "
                    f"{name}-delimited; write it comma-separated (or as Parquet)"
                )
