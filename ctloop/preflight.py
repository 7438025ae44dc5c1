"""Cheap checks before a run starts, so a wrong flag fails in a second with a one-line answer
instead of minutes later inside a task."""

from __future__ import annotations

import io

from ctloop import storage
from ctloop.errors import ConfigError


def check_data(
    data_uri: str,
    label: str,
    exclude: list[str],
    spans: int = 1,
    s3_endpoint_url: str | None = None,
) -> list[str]:
    """Checks that the span(s) to read exist and have the label and excluded columns.

    Resolves the files exactly as the pipeline's select_span does.

    Returns:
        The columns of the first file to read.
    """
    from ctloop.components.ingest.logic import read_table
    from ctloop.components.select_span.logic import resolve

    first = resolve(data_uri, spans, s3_endpoint_url).files[0].uri
    if storage.is_remote(first):
        source = io.BytesIO(storage.read(first, s3_endpoint_url)[0])
    else:
        source = first  # opened in place: only its header is read
    columns = list(read_table(first, source, header_only=True).columns)
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
