"""Cheap checks before a run starts, so a wrong flag fails in a second with a one-line answer
instead of minutes later inside a task."""

from __future__ import annotations

import io

from ctloop.data import storage
from ctloop.errors import ConfigError


def read_first(data_uri: str, s3_endpoint_url: str | None = None):
    """The first file a run would read, and its rows (a pandas DataFrame), resolved exactly as
    the pipeline's select_span does."""
    from ctloop.data.spans import resolve
    from ctloop.data.tables import read_table

    first = resolve(data_uri, 1, s3_endpoint_url).files[0].uri
    source = io.BytesIO(storage.read(first, s3_endpoint_url)[0]) if storage.is_remote(
        first) else first
    return first, read_table(first, source)


def check_data(
    data_uri: str,
    label: str,
    exclude: list[str],
    spans: int = 1,
    s3_endpoint_url: str | None = None,
    task: str = "binary",
) -> list[str]:
    """Checks that the span(s) to read exist and have the label and excluded columns, and that
    the first file's label values can be the task's (ingest checks all of them).

    Resolves the files exactly as the pipeline's select_span does.

    Returns:
        The columns of the first file to read.
    """
    import pandas as pd

    from ctloop.data.spans import resolve
    from ctloop.data.tables import read_table
    from ctloop.settings import MAX_CLASSES

    first = resolve(data_uri, spans, s3_endpoint_url).files[0].uri
    if storage.is_remote(first):
        content = storage.read(first, s3_endpoint_url)[0]

        def source():
            return io.BytesIO(content)
    else:
        def source():
            return first  # opened in place: the header read reads only the header

    columns = list(read_table(first, source(), header_only=True).columns)
    if label in exclude:
        raise ConfigError(f"--label {label!r} is also in --exclude; remove it from --exclude")
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
    labels = read_table(first, source())[label].dropna()
    examples = sorted(map(str, labels.unique()))[:3]
    if task == "binary" and labels.nunique() > 2:
        raise ConfigError(
            f"--label {label!r} has {labels.nunique()} distinct values in {first} (e.g. "
            f"{examples}); a binary task needs a 2-valued label column (or pass --task "
            "multiclass or regression)"
        )
    if task == "multiclass" and labels.nunique() > MAX_CLASSES:
        raise ConfigError(
            f"--label {label!r} has {labels.nunique()} distinct values in {first} (e.g. "
            f"{examples}); a multiclass task takes at most {MAX_CLASSES} (for a numeric target "
            "pass --task regression)"
        )
    if task == "regression":
        numbers = pd.to_numeric(labels, errors="coerce")
        if numbers.isna().any():
            raise ConfigError(
                f"--label {label!r} has non-numeric values in {first} such as "
                f"{labels[numbers.isna()].iloc[0]!r}; a regression task needs a numeric label "
                "column (or pass --task multiclass)"
            )
    return columns


def check_settings(
    epochs: int,
    early_stopping_patience: int,
    thresholds: dict[str, float | None],
    max_p99_ms: float,
    min_rps: float,
    canary_percent: int,
    stats_sample_rate: float,
    schema_uri: str | None,
    force_bless_reason: str | None = None,
    task: str = "binary",
    positive_label: str | None = None,
) -> None:
    """Builds the settings objects the tasks will build, so their range checks fail now.

    ``thresholds``: evaluate's ``Thresholds`` fields (min_auc, max_mae_increase, ...).
    """
    from ctloop import contract
    from ctloop.settings import SLO, CanarySLO, Hyperparameters, Policy, Thresholds

    Hyperparameters(epochs=epochs, early_stopping_patience=early_stopping_patience)
    Thresholds(**thresholds)
    if positive_label and contract.task(task) != contract.BINARY:
        raise ConfigError(f"--positive-label {positive_label!r} applies to a binary task, not "
                          f"{task!r}; leave it out")
    Policy(force_bless_reason=force_bless_reason)
    SLO(max_p99_ms=max_p99_ms, min_rps=min_rps)
    CanarySLO(percent=canary_percent, max_p99_ms=max_p99_ms)
    if not 0.0 < stats_sample_rate <= 1.0:
        raise ConfigError(f"--stats-sample-rate {stats_sample_rate} is out of range: use a "
                          "value in (0, 1]")
    if schema_uri and not storage.is_remote(schema_uri):
        from pathlib import Path

        if not Path(schema_uri).is_file():
            raise ConfigError(f"--schema {schema_uri} does not exist; pass a TFDV schema text "
                              "proto (e.g. a version's schema.pbtxt)")
