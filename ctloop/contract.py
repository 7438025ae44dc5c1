"""The contract between training, evaluation and serving: what an exported model looks like.

A ctloop model is a TF SavedModel whose ``serving_default`` signature takes one 1-D tensor per raw
feature, named after the column: ``tf.float32`` for numeric features (NaN = missing) and
``tf.string`` for categorical ones ("" = missing). It returns one float32 output, named by the
task (``OUTPUT_KEYS``):

- ``binary``: ``{"probability": [batch]}``, the probability of the positive class;
- ``multiclass``: ``{"probabilities": [batch, classes]}``, one probability per label class, in
  the order of ``label_classes``;
- ``regression``: ``{"prediction": [batch]}``, the predicted value.

``features.json`` beside the SavedModel holds the feature list and dtypes (so servers can
validate requests without guessing), the task and the label classes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import reprlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctloop.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import pandas as pd

SERVING_SIGNATURE = "serving_default"
BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"
TASKS = (BINARY, MULTICLASS, REGRESSION)
OUTPUT_KEYS = {BINARY: "probability", MULTICLASS: "probabilities", REGRESSION: "prediction"}
FEATURES_FILE = "features.json"
NUMERIC = "float32"
CATEGORICAL = "string"

log = logging.getLogger(__name__)


def read_features(model_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The model's raw features, in file order, from ``<model_dir>/features.json``.

    Args:
        model_dir: The exported model directory (the SavedModel plus features.json).

    Returns:
        Feature name -> ``NUMERIC`` or ``CATEGORICAL``.

    Raises:
        ModelError: The file is missing or unreadable, or lists no valid, unique features.
    """
    path = Path(model_dir) / FEATURES_FILE
    try:
        entries = json.loads(path.read_text())["features"]
        features = {entry["name"]: entry["dtype"] for entry in entries}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"{path} is missing or not valid JSON of the form "
            f'{{"features": [{{"name": ..., "dtype": ...}}]}} ({exc}); re-export the model'
        ) from exc
    bad = [name for name, dtype in features.items() if dtype not in (NUMERIC, CATEGORICAL)]
    if not features or bad or len(features) != len(entries):
        raise ModelError(
            f"{path} must list unique features, each with dtype {NUMERIC!r} or {CATEGORICAL!r} "
            f"(offending: {bad or 'empty or duplicate names'}); re-export the model"
        )
    return features


def task(value: str) -> str:
    """``value`` if it names a task type (``TASKS``).

    Raises:
        ConfigError: Any other value.
    """
    return _one_of(value, TASKS, "task")


def read_task(model_dir: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """The model's task and label classes, from ``<model_dir>/features.json``.

    Models exported before task types were recorded are binary classifiers.

    Returns:
        ``(task, classes)``: classes are ``[negative, positive]`` for ``binary``, one name per
        output column for ``multiclass``, empty for ``regression``.

    Raises:
        ModelError: The file is unreadable, or names an unknown task or classes that do not fit it.
    """
    path = Path(model_dir) / FEATURES_FILE
    try:
        described = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is missing or not valid JSON ({exc}); re-export the model"
                         ) from exc
    kind = described.get("task", BINARY)
    classes = [str(c) for c in described.get("label_classes") or []]
    if kind == BINARY and not classes:
        classes = ["0", "1"]
    wanted = {BINARY: len(classes) == 2, MULTICLASS: len(classes) >= 2,
              REGRESSION: not classes}
    if not wanted.get(kind, False):
        raise ModelError(f"{path} names task {kind!r} with label_classes {classes}: a binary model "
                         "has 2, a multiclass one at least 2, a regression none; re-export the "
                         "model")
    return kind, classes


SERVING_TARGETS = ("local", "kserve")


def serving_target(value: str) -> str:
    """``value`` if it names a serving target: ``local`` (server processes and the registry on
    this machine) or ``kserve`` (InferenceServices on a cluster).

    Raises:
        ConfigError: Any other value.
    """
    return _one_of(value, SERVING_TARGETS, "serving target")


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{what} {value!r} is not supported: use one of "
                          f"{', '.join(map(repr, allowed))}")
    return value

# How raw features become model inputs: one definition for training, evaluation, infra validation
# and the model server. A table (pandas) goes through ``to_inputs``; a request's JSON values for
# one feature through ``column``.


class InputError(ValueError):
    """A request value the feature's dtype cannot take; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: str  # NUMERIC or CATEGORICAL


def features_from_schema(schema_path: str, label: str, exclude: list[str]) -> list[FeatureSpec]:
    """The model's inputs: every schema feature but the label and the excluded columns."""
    # The schema is a text proto: parsing it needs tensorflow_metadata only, not TFDV, whose
    # import costs the train task seconds.
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = text_format.Parse(Path(schema_path).read_text(), schema_pb2.Schema())
    features = []
    for feature in schema.feature:
        if feature.name == label or feature.name in exclude:
            continue
        numeric = feature.type in (schema_pb2.INT, schema_pb2.FLOAT)
        features.append(
            FeatureSpec(feature.name, NUMERIC if numeric else CATEGORICAL)
        )
    if not features:
        raise ConfigError(
            f"schema {schema_path} leaves no feature after removing label {label!r} and "
            f"excluded {exclude}; keep at least one feature column"
        )
    return features


def to_inputs(frame: pd.DataFrame, features: list[FeatureSpec]) -> dict[str, np.ndarray]:
    """Raw columns as the signature takes them: float32 with NaN, or str with "" for missing.

    Values the schema's types cannot hold (a vanished column, text in a numeric column) become
    missing values, with a warning: data validation reports them as anomalies, and its gate keeps
    a model trained on such data from deployment, so the run completes with that verdict instead
    of failing here.
    """
    import pandas as pd

    inputs = {}
    for feature in features:
        if feature.name not in frame.columns:
            log.warning("feature %r of the schema is not in the data: all values missing",
                        feature.name)
            column = pd.Series([None] * len(frame), index=frame.index, dtype=object)
        else:
            column = frame[feature.name]
        if feature.dtype == NUMERIC:
            values = pd.to_numeric(column, errors="coerce")
            bad = values.isna() & column.notna()
            if bad.any():
                log.warning(
                    "feature %r is numeric in the schema but has %d non-numeric values such as "
                    "%r: treated as missing", feature.name, int(bad.sum()), column[bad].iloc[0])
            inputs[feature.name] = values.to_numpy(dtype=np.float32)
        else:
            inputs[feature.name] = column.fillna("").astype(str).to_numpy(dtype=object)
    return inputs


# The value types column converts with numpy alone. Exact types: bool, an int subclass, is not
# a number here (see _as_number).
_NUMBER_TYPES = frozenset({int, float, type(None)})
_TEXT_TYPES = frozenset({str, bytes, type(None)})


def _as_number(value: Any) -> float:
    if value is None:
        return math.nan
    # bool is an int subclass, but JSON true for a numeric feature is a client bug, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(type(value).__name__)
    return float(value)


def _as_text(value: Any) -> str | bytes:
    if value is None:
        return ""
    # gRPC payloads deliver BYTES elements as bytes; TF takes them as they are.
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(type(value).__name__)
    return str(value)


def column(dtype: str, values: list[Any], where: str) -> np.ndarray:
    """One feature's values as the signature takes them: float32 with NaN, or strings with "".

    Values of the common types (numbers and nulls for a numeric feature, strings and nulls for a
    string feature) are converted by numpy in one call; any other value sends the column through
    the per-value conversion, which accepts or rejects exactly as the fast path would and names
    the first value it rejects.
    """
    kinds = set(map(type, values))
    if dtype == NUMERIC and kinds <= _NUMBER_TYPES:
        try:
            # numpy converts each value as float() does (None -> NaN); then one float32 rounding.
            return np.array(values, dtype=np.float64).astype(np.float32)
        except OverflowError:
            pass  # an integer beyond float range: the per-value loop names it
    elif dtype != NUMERIC and kinds <= _TEXT_TYPES:
        column = np.array(values, dtype=np.object_)
        column[np.equal(column, None)] = ""
        return column
    if dtype == NUMERIC:
        convert, expected, np_dtype = _as_number, "a number, a numeric string or null", np.float32
    else:
        convert, expected, np_dtype = _as_text, "a string, a number or null", np.object_
    converted = []
    for i, value in enumerate(values):
        try:
            converted.append(convert(value))
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"{where}[{i}] is {reprlib.repr(value)}; send {expected}") from exc
    return np.array(converted, dtype=np_dtype)
