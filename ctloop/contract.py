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

import json
import os
from pathlib import Path

from ctloop.errors import ConfigError, ModelError

SERVING_SIGNATURE = "serving_default"
BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"
TASKS = (BINARY, MULTICLASS, REGRESSION)
OUTPUT_KEYS = {BINARY: "probability", MULTICLASS: "probabilities", REGRESSION: "prediction"}
FEATURES_FILE = "features.json"
NUMERIC = "float32"
CATEGORICAL = "string"


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
