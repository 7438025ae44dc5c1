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
    labels = read_table(first, source())[label]
    if labels.nunique() > 2:
        raise ConfigError(
            f"--label {label!r} has {labels.nunique()} distinct values in {first} (e.g. "
            f"{sorted(map(str, labels.unique()))[:3]}); a binary task needs a 2-valued label column"
        )
    return columns


def check_settings(
    epochs: int,
    early_stopping_patience: int,
    min_auc: float,
    max_auc_decrease: float,
    max_p99_ms: float,
    min_rps: float,
    canary_percent: int,
    stats_sample_rate: float,
    schema_uri: str | None,
    force_bless_reason: str | None = None,
) -> None:
    """Builds the settings objects the tasks will build, so their range checks fail now."""
    from ctloop.components.evaluate.logic import Policy, Thresholds
    from ctloop.components.infra_validate.logic import SLO
    from ctloop.components.rollout.canary import CanarySLO
    from ctloop.components.train.logic import Hyperparameters

    Hyperparameters(epochs=epochs, early_stopping_patience=early_stopping_patience)
    Thresholds(min_auc, max_auc_decrease)
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
