"""The contract between training, evaluation and serving: what an exported model looks like.

A ctloop model is a TF SavedModel whose ``serving_default`` signature takes one 1-D tensor per raw
feature, named after the column: ``tf.float32`` for numeric features (NaN = missing) and
``tf.string`` for categorical ones ("" = missing). It returns ``{"probability": float32 [batch]}``,
the probability of the positive class. The feature list and dtypes are stored beside the
SavedModel in ``features.json`` so servers can validate requests without guessing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ctloop.errors import ConfigError, ModelError

SERVING_SIGNATURE = "serving_default"
OUTPUT_KEY = "probability"
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


SERVING_TARGETS = ("local", "kserve")


def serving_target(value: str) -> str:
    """``value`` if it names a serving target: ``local`` (server processes and the registry on
    this machine) or ``kserve`` (InferenceServices on a cluster).

    Raises:
        ConfigError: Any other value.
    """
    if value not in SERVING_TARGETS:
        raise ConfigError(f"serving target {value!r} is not supported: use one of "
                          f"{', '.join(map(repr, SERVING_TARGETS))}")
    return value
