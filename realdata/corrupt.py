"""Seeded corruptions of a clean frame: what a data gate must block, one injector per kind.

Each injector takes a clean frame, its catalogue entry, optionally the feature to corrupt and a
seed, and returns an ``Injected`` (the corrupted copy, a one-line description that names the
feature), or None when the data set has no feature the corruption applies to (the suite then
skips that pair). The clean frame is never modified.

Which feature is hit, when none is given, is deterministic and depends only on the clean frame
(``target_feature`` says which), so every repetition corrupts the same column:

- a numeric feature for ``unit_change`` and ``numeric_as_strings``: the one with the most distinct
  values (the most clearly continuous, where a change of unit or type is a real data bug);
- a categorical feature for ``renamed_categories``: the one whose most frequent value covers the
  most rows;
- for ``extra_nulls``: the feature with the fewest missing values, so the added nulls are plainly
  new;
- for ``shifted`` and ``dropped_column``: the most important numeric feature, the one most
  associated with the label: for classification the correlation ratio eta (the square root of
  the share of the feature's variance the label's classes explain; |point-biserial r| for a binary
  label), which needs no encoding of the classes as numbers; for regression |Pearson r|. A shift or
  a loss there is what moves a model's predictions. (``dropped_column`` falls back to the first
  feature when there is no numeric one.)

Ties go to the first column in the frame's order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from ctloop import contract
from ctloop.errors import ConfigError
from realdata.datasets import Dataset

UNIT_FACTOR = 100
NULL_SHARE = 0.30
SHIFT_SDS = 1.0
RENAMED_SUFFIX = "_V2"
NUMBER_SUFFIX = " units"


class Injected(NamedTuple):
    """A corrupted copy and what was done to it (naming the feature)."""

    frame: pd.DataFrame
    description: str


Injector = Callable[..., "Injected | None"]


def numeric_features(frame: pd.DataFrame, entry: Dataset) -> list[str]:
    """Features with numbers in them (bool excluded) that take at least two values."""
    return [
        c for c in entry.features(frame)
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        and frame[c].nunique() >= 2
    ]


def categorical_features(frame: pd.DataFrame, entry: Dataset) -> list[str]:
    """Features holding strings (or pandas categories) that take at least one value."""
    return [
        c for c in entry.features(frame)
        if (pd.api.types.is_object_dtype(frame[c]) or pd.api.types.is_string_dtype(frame[c])
            or isinstance(frame[c].dtype, pd.CategoricalDtype))
        and frame[c].notna().any()
    ]


def most_distinct_numeric(frame: pd.DataFrame, entry: Dataset) -> str | None:
    """The numeric feature with the most distinct values."""
    candidates = numeric_features(frame, entry)
    return _first_max(candidates, [frame[c].nunique() for c in candidates])


def most_concentrated_categorical(frame: pd.DataFrame, entry: Dataset) -> str | None:
    """The categorical feature whose most frequent value covers the most rows."""
    candidates = categorical_features(frame, entry)
    return _first_max(candidates, [int(frame[c].value_counts().iloc[0]) for c in candidates])


def most_complete_feature(frame: pd.DataFrame, entry: Dataset) -> str | None:
    """The feature with the fewest missing values."""
    candidates = entry.features(frame)
    return _first_max(candidates, [-int(frame[c].isna().sum()) for c in candidates])


def most_important_numeric(frame: pd.DataFrame, entry: Dataset) -> str | None:
    """The numeric feature most associated with the label (see the module docstring)."""
    candidates = numeric_features(frame, entry)
    return _first_max(candidates, [_association(frame[c], frame[entry.label], entry.task)
                                   for c in candidates])


def _association(feature: pd.Series, label: pd.Series, task: str) -> float:
    both = feature.notna() & label.notna()
    x = feature[both].astype("float64")
    if len(x) < 2 or x.var() == 0:
        return 0.0
    if task == contract.REGRESSION:
        r = np.corrcoef(x, label[both].astype("float64"))[0, 1]
        return 0.0 if np.isnan(r) else abs(float(r))
    # Correlation ratio: between-class variance over total variance, for any number of classes.
    groups = x.groupby(label[both].to_numpy())
    between = float((groups.size() * (groups.mean() - x.mean()) ** 2).sum())
    total = float(((x - x.mean()) ** 2).sum())
    return float(np.sqrt(between / total))


def _first_max(candidates: list[str], scores: list[float]) -> str | None:
    if not candidates:
        return None
    return candidates[int(np.argmax(scores))]  # argmax: the first of equal maxima


def unit_change(frame: pd.DataFrame, entry: Dataset, feature: str | None = None,
                seed: int = 0) -> Injected | None:
    """A numeric feature recorded in another unit: every value x100 (dtype kept)."""
    del seed  # deterministic
    feature = _feature(frame, entry, feature, most_distinct_numeric, numeric=True)
    if feature is None:
        return None
    out = frame.copy()
    out[feature] = frame[feature] * UNIT_FACTOR
    return Injected(out, f"unit change: numeric feature {feature!r} multiplied by {UNIT_FACTOR}")


def renamed_categories(frame: pd.DataFrame, entry: Dataset, feature: str | None = None,
                       seed: int = 0) -> Injected | None:
    """Every value of a categorical feature renamed (upper-cased, with a suffix)."""
    del seed  # deterministic
    feature = _feature(frame, entry, feature, most_concentrated_categorical, categorical=True)
    if feature is None:
        return None
    values = frame[feature].astype("object")
    mapping = {v: f"{str(v).upper()}{RENAMED_SUFFIX}" for v in values.dropna().unique()}
    out = frame.copy()
    out[feature] = values.map(mapping)  # missing values stay missing
    example = next(iter(mapping.items()))
    return Injected(out, f"renamed categories: all {len(mapping)} values of categorical feature "
                         f"{feature!r} renamed (e.g. {example[0]!r} -> {example[1]!r})")


def extra_nulls(frame: pd.DataFrame, entry: Dataset, feature: str | None = None,
                seed: int = 0) -> Injected | None:
    """30 % of the rows of a feature set to missing, on top of the values already missing."""
    feature = _feature(frame, entry, feature, most_complete_feature)
    if feature is None:
        return None
    present = np.flatnonzero(frame[feature].notna().to_numpy())
    count = min(len(present), int(round(NULL_SHARE * len(frame))))
    chosen = np.random.default_rng(seed).choice(present, size=count, replace=False)
    column = frame[feature]
    if pd.api.types.is_integer_dtype(column):
        # Pandas' nullable integers: written to CSV as "12" and "", so the column reads back as
        # the integers it was, and the only change is the missing values.
        column = column.astype("Int64")
    else:
        column = column.copy()
    column.iloc[chosen] = None
    out = frame.copy()
    out[feature] = column
    before = int(frame[feature].isna().sum())
    return Injected(out, f"extra nulls: {count} more missing values ({NULL_SHARE:.0%} of rows) in "
                         f"feature {feature!r}, which had {before}")


def dropped_column(frame: pd.DataFrame, entry: Dataset, feature: str | None = None,
                   seed: int = 0) -> Injected | None:
    """A feature missing from the data: the most important numeric one, else the first."""
    del seed  # deterministic
    feature = _feature(frame, entry, feature, _important_or_first)
    if feature is None:
        return None
    return Injected(frame.drop(columns=[feature]), f"dropped column: feature {feature!r} removed")


def numeric_as_strings(frame: pd.DataFrame, entry: Dataset, feature: str | None = None,
                       seed: int = 0) -> Injected | None:
    """A numeric feature exported as text with a unit ("12.5 units"), which no reader parses as
    a number, so the column reads back from CSV as strings."""
    del seed  # deterministic
    feature = _feature(frame, entry, feature, most_distinct_numeric, numeric=True)
    if feature is None:
        return None
    column = frame[feature].astype("object")
    present = column.notna()
    column[present] = [f"{v}{NUMBER_SUFFIX}" for v in column[present]]
    out = frame.copy()
    out[feature] = column
    example = column[present].iloc[0]
    return Injected(out, f"numeric as strings: numeric feature {feature!r} written as text "
                         f"(e.g. {example!r})")


def shifted(frame: pd.DataFrame, entry: Dataset, feature: str | None = None,
            seed: int = 0) -> Injected | None:
    """The most important numeric feature moved up by one standard deviation (dtype kept)."""
    del seed  # deterministic
    feature = _feature(frame, entry, feature, most_important_numeric, numeric=True)
    if feature is None:
        return None
    column = frame[feature]
    shift = SHIFT_SDS * float(column.std())
    if pd.api.types.is_integer_dtype(column):
        # An integer column stays integer: a type change would be a different anomaly.
        shift = max(1, round(shift))
    out = frame.copy()
    out[feature] = column + shift
    return Injected(out, f"shifted: feature {feature!r} moved up by {SHIFT_SDS:g} standard "
                         f"deviation ({shift:.4g})")


def _important_or_first(frame: pd.DataFrame, entry: Dataset) -> str | None:
    features = entry.features(frame)
    return most_important_numeric(frame, entry) or (features[0] if features else None)


CORRUPTIONS: dict[str, Injector] = {
    "unit_change": unit_change,
    "renamed_categories": renamed_categories,
    "extra_nulls": extra_nulls,
    "dropped_column": dropped_column,
    "numeric_as_strings": numeric_as_strings,
    "shifted": shifted,
}

_CHOOSERS: dict[str, Callable[[pd.DataFrame, Dataset], str | None]] = {
    "unit_change": most_distinct_numeric,
    "renamed_categories": most_concentrated_categorical,
    "extra_nulls": most_complete_feature,
    "dropped_column": _important_or_first,
    "numeric_as_strings": most_distinct_numeric,
    "shifted": most_important_numeric,
}


def target_feature(corruption: str, frame: pd.DataFrame, entry: Dataset) -> str | None:
    """The feature ``corruption`` hits in ``frame`` when none is given; None: it does not apply."""
    if corruption not in _CHOOSERS:
        raise ConfigError(f"corruption {corruption!r} is unknown; use one of "
                          f"{', '.join(CORRUPTIONS)}")
    return _CHOOSERS[corruption](frame, entry)


def _feature(frame: pd.DataFrame, entry: Dataset, feature: str | None,
             choose: Callable[[pd.DataFrame, Dataset], str | None], *, numeric: bool = False,
             categorical: bool = False) -> str | None:
    if feature is None:
        return choose(frame, entry)
    allowed = (numeric_features(frame, entry) if numeric
               else categorical_features(frame, entry) if categorical
               else entry.features(frame))
    if feature not in allowed:
        kind = "numeric " if numeric else "categorical " if categorical else ""
        raise ConfigError(f"feature {feature!r} is not a {kind}feature of data set {entry.name}; "
                          f"use one of {', '.join(allowed) or '(none)'}")
    return feature
