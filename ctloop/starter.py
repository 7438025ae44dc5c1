"""A starter settings file for a CSV (``ctloop config init``): the label guessed (or given), the
task inferred from its values, ID-like and constant columns proposed for exclusion; what it
writes, ``ctloop.config.check`` accepts."""

from __future__ import annotations

import dataclasses
from typing import Any

from ctloop.errors import ConfigError
from ctloop.settings import SLO, SPANS, DriftThresholds, Hyperparameters, Thresholds

# Column names that usually hold the label, best first (compared without case, - or _).
LABEL_NAMES = ("label", "target", "y", "class", "outcome", "churn", "churned", "response",
               "default", "fraud", "survived", "species")


@dataclasses.dataclass(frozen=True)
class Proposal:
    """What ``ctloop config init`` proposes for a data file."""

    label: str
    task: str
    exclude: dict[str, str]  # column -> why
    label_values: list[str]


def guess_label(columns: list[str]) -> str | None:
    """The column named most like a label, or None."""
    plain = {c.lower().replace("_", "").replace("-", ""): c for c in columns}
    for name in LABEL_NAMES:
        if name in plain:
            return plain[name]
    return None


def propose(frame: Any, label: str | None = None) -> Proposal:
    """Proposes label, task and excluded columns for a table (a pandas DataFrame).

    Raises:
        ConfigError: No label given and none guessed, or the label is not a column.
    """
    import pandas as pd

    from ctloop.settings import MAX_CLASSES

    columns = [str(c) for c in frame.columns]
    if label is None:
        label = guess_label(columns)
        if label is None:
            raise ConfigError(f"no column is named like a label ({', '.join(LABEL_NAMES)}); pass "
                              f"--label, one of: {', '.join(columns)}")
    elif label not in columns:
        raise ConfigError(f"--label {label!r} is not a column of the data (columns: "
                          f"{', '.join(columns)}); pass one of those")
    values = frame[label].dropna()
    numbers = pd.to_numeric(values, errors="coerce")
    numeric = not numbers.isna().any()
    distinct = values.nunique()
    if distinct == 2:
        task = "binary"
    elif numeric and (distinct > 20 or (numbers != numbers.round()).any()):
        task = "regression"  # many values, or fractions: a quantity, not classes
    elif distinct <= MAX_CLASSES:
        task = "multiclass"
    else:
        task = "regression" if numeric else "multiclass"
    exclude = {}
    rows = len(frame)
    for column in columns:
        if column == label:
            continue
        series = frame[column]
        if series.nunique(dropna=False) <= 1:
            exclude[column] = "the same value in every row"
        elif rows > 1 and series.nunique() == rows and not pd.api.types.is_float_dtype(series):
            exclude[column] = "a different value in every row: an ID, not a feature"
    shown = sorted(map(str, values.unique()))[:5]
    return Proposal(label, task, exclude, shown)


def starter(data_uri: str, proposal: Proposal, model_name: str) -> str:
    """The text of a commented starter settings file."""
    import yaml

    def scalar(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")

    def note(line: str, comment: str) -> str:
        return f"{line:<30} # {comment}"

    lines = [
        "# ctloop settings: the pipeline's parameters, for `ctloop run -c`, `ctloop submit -c`",
        "# and a schedule's `config:`. Flags and --param override them. Paths are relative to",
        "# where ctloop runs. Every key is checked before a run starts.",
        f"data_uri: {scalar(data_uri)}",
        note(f"label: {scalar(proposal.label)}",
             f"values seen: {', '.join(proposal.label_values)}"),
        note(f"task: {proposal.task}", "inferred from the label: binary, multiclass, regression"),
    ]
    if proposal.exclude:
        lines.append(note("exclude:", "columns that are not features"))
        lines += [note(f"  - {scalar(c)}", why) for c, why in proposal.exclude.items()]
    else:
        lines.append(note("exclude: []", "columns that are not features"))
    lines += [
        f"model_name: {model_name}",
        note("# registry_uri: s3://BUCKET/ctloop/registry", "a cluster's (submit, schedules); "
             "locally WORKDIR/registry"),
        note("# s3_endpoint_url: http://HOST:9000", "for s3:// data and registry"),
        note(f"# spans: {SPANS}", "read the latest N spans together"),
        f"# epochs: {Hyperparameters.epochs}",
        f"# hidden_units: {list(Hyperparameters.hidden_units)}",
    ]
    gates = {"binary": ("min_auc", "max_auc_decrease"),
             "multiclass": ("min_accuracy", "max_accuracy_decrease"),
             "regression": ("max_mae", "max_mae_increase")}[proposal.task]
    change = getattr(Thresholds, gates[1])
    lines += [
        note(f"# {gates[0]}: null", "none: the model must beat a no-skill predictor"),
        note(f"# {gates[1]}: {'null' if change is None else change}",
             "the most it may be worse than the serving model"),
        f"# drift_threshold: {DriftThresholds.drift}",
        note("# anomaly_policy: {CTLOOP_DRIFT: warn}", "downgrade an anomaly type"),
        note(f"# max_p99_ms: {SLO.max_p99_ms}", "infra SLO: p99 latency"),
    ]
    return "\n".join(lines) + "\n"
