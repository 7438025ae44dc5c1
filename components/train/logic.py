"""Train: the model (``ctloop.training``) fitted on the train split and exported with a
raw-feature signature.

All preprocessing (imputation, normalization, string lookup) lives inside the exported graph, so
the server, TFMA and the tests feed raw column values and get the same answer (no train/serve
skew from a separate transform step). Contract: ``ctloop.contract``.

A user module's ``build_model`` builds on ``preprocess``, ``head`` and ``compile_model``, which
are ``ctloop.training``'s and are importable from here too, as this component's README documents.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop import contract
from ctloop.contract import FeatureSpec, features_from_schema, to_inputs
from ctloop.settings import Hyperparameters
from ctloop.training import (  # noqa: F401 - preprocess, head, compile_model: the user-module API
    Task,
    build_model,
    check_user_model,
    compile_model,
    fit,
    head,
    make_model,
    preprocess,
    vocabulary,
)
from ctloop.user_module import load_user_module

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.npz"  # the Keras model's weights, in model.get_weights() order


@dataclasses.dataclass(frozen=True)
class TrainResult:
    features: list[FeatureSpec]
    devices: list[str]
    epochs_run: int
    train_loss: float
    eval_metrics: dict[str, float]  # measured by ctloop on the eval split: evaluate_predictions
    precision: str = "float32"  # the Keras dtype policy trained with
    user_module_sha256: str | None = None  # the user module's content, when one built the model
    warm_start: str | None = None  # None: off; else what happened (``warm_start``'s answer)


def distribution_strategy(mixed_precision: bool = False):
    """MirroredStrategy over the visible GPUs, else the default (CPU) strategy; and the Keras
    dtype policy: ``mixed_float16`` if asked for and a GPU is there, else ``float32``."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    policy = "mixed_float16" if mixed_precision and gpus else "float32"
    if mixed_precision and not gpus:
        log.warning("mixed precision needs a GPU and none is visible: training in float32")
    keras.mixed_precision.set_global_policy(policy)
    if gpus:
        strategy = tf.distribute.MirroredStrategy()
        log.info("training on %d GPU(s) with MirroredStrategy, %s: %s", len(gpus), policy,
                 [g.name for g in gpus])
        return strategy, [g.name for g in gpus], policy
    log.info("no GPU visible: training on CPU, %s", policy)
    return tf.distribute.get_strategy(), ["CPU"], policy


def export(model, features: list[FeatureSpec], task: Task, model_dir: str, extra: dict) -> None:
    """Writes the SavedModel with the contract's raw-feature signature, features.json (features,
    task, label classes and ``extra``) and the Keras weights (``WEIGHTS_FILE``, to warm-start
    the next model from)."""
    import keras
    import tensorflow as tf

    spec = {
        f.name: tf.TensorSpec([None], tf.float32 if f.dtype == contract.NUMERIC else tf.string,
                              name=f.name)
        for f in features
    }

    @tf.function(input_signature=[spec])
    def serve(raw):
        return {task.output_key: model(raw, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(contract.SERVING_SIGNATURE, serve)
    archive.write_out(model_dir, verbose=False)
    np.savez(Path(model_dir) / WEIGHTS_FILE, *model.get_weights())
    (Path(model_dir) / contract.FEATURES_FILE).write_text(json.dumps(
        {"features": [dataclasses.asdict(f) for f in features], "task": task.kind,
         "label_classes": list(task.classes), **extra}, indent=2))


def warm_start(model, baseline_dir: str, features: list[FeatureSpec],
               task: Task, train: dict[str, np.ndarray]) -> str:
    """Starts ``model`` from the baseline's weights when they mean the same thing; says what
    happened.

    The baseline must have the same task, label classes, features and categorical
    vocabularies (a shifted vocabulary would put its weights on other values) and weights of
    the same shapes, in the same order; otherwise training starts from the initial weights,
    with the reason.
    """
    described = json.loads((Path(baseline_dir) / contract.FEATURES_FILE).read_text())
    kind, classes = contract.read_task(baseline_dir)
    vocabularies = {f.name: vocabulary(train[f.name]) for f in features
                    if f.dtype == contract.CATEGORICAL}
    differs = [
        what for what, same in (
            ("task", (kind, classes) == (task.kind, list(task.classes))),
            ("features", described.get("features") == [dataclasses.asdict(f) for f in features]),
            ("vocabularies", described.get("vocabularies") == vocabularies),
        ) if not same
    ]
    weights = Path(baseline_dir) / WEIGHTS_FILE
    if not differs and not weights.is_file():
        differs = [f"weights (the baseline has no {WEIGHTS_FILE})"]
    if not differs:
        with np.load(weights) as stored:
            saved = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        shapes = [w.shape for w in model.get_weights()]
        if [w.shape for w in saved] == shapes:
            model.set_weights(saved)
            return "started from its weights"
        # Same encoding, other layers (e.g. new hidden_units or a user module).
        differs = [f"layer shapes ({len(saved)} weight tensors, this model has {len(shapes)})"]
    log.warning("warm start from %s skipped: different %s; training from the initial weights",
                baseline_dir, ", ".join(differs))
    return f"skipped: different {', '.join(differs)}"


def run(
    train_path: str,
    eval_path: str,
    schema_path: str,
    label: str,
    exclude: list[str],
    hp: Hyperparameters,
    model_dir: str,
    label_classes: list[str] | None = None,
    mixed_precision: bool = False,
    user_module: str | None = None,
    s3_endpoint_url: str | None = None,
    task: str = contract.BINARY,
    warm_start_from: str | None = None,
) -> TrainResult:
    """Trains on the train split, measures the eval split, exports to ``model_dir``.

    ``task``: ``binary``, ``multiclass`` or ``regression``, with ingest's ``label_classes``.
    ``user_module``: a Python file (local, gs:// or s3://) whose ``build_model`` replaces the
    default model; everything else (inputs, training, export, the contract) stays ctloop's.
    ``warm_start_from``: a model directory (the serving version) to start from, when its
    weights fit (``warm_start``).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(hp.seed)
    tf.config.experimental.enable_op_determinism()
    features = features_from_schema(schema_path, label, exclude)
    train_frame, eval_frame = pd.read_parquet(train_path), pd.read_parquet(eval_path)
    train, evaluation = to_inputs(train_frame, features), to_inputs(eval_frame, features)
    spec = Task.of(task, label_classes, train_frame[label].to_numpy(dtype=np.float64))
    y_train, y_eval = spec.labels(train_frame, label), spec.labels(eval_frame, label)

    builder, module_digest = build_model, None
    if user_module:
        builder, module_digest = load_user_module(user_module, s3_endpoint_url)
    strategy, devices, precision = distribution_strategy(mixed_precision)
    with strategy.scope():
        model = make_model(builder, features, train, hp, spec, user_module)
        warm = (warm_start(model, warm_start_from, features, spec, train)
                if warm_start_from else None)
    if builder is not build_model:
        check_user_model(model, evaluation, user_module, spec)
    history, eval_metrics = fit(model, train, y_train, evaluation, y_eval, hp, spec)
    vocabularies = {f.name: vocabulary(train[f.name]) for f in features
                    if f.dtype == contract.CATEGORICAL}
    export(model, features, spec, model_dir, {"label": label, "vocabularies": vocabularies})
    return TrainResult(
        features=features,
        devices=devices,
        epochs_run=len(history["loss"]),
        train_loss=float(history["loss"][-1]),
        eval_metrics=eval_metrics,
        precision=precision,
        user_module_sha256=module_digest,
        warm_start=warm,
    )
