"""Train: a Keras model built from the TFDV schema, exported with a raw-feature signature.

The task type (binary, multiclass, regression) decides the head, the loss and the output the
signature returns; everything before the head is shared.

All preprocessing (imputation, normalization, string lookup) lives inside the exported graph, so
the server, TFMA and the tests feed raw column values and get the same answer (no train/serve
skew from a separate transform step). Contract: ``ctloop.contract``.
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
from ctloop.errors import ConfigError, ModelError
from ctloop.settings import Hyperparameters
from ctloop.user_module import load_user_module

log = logging.getLogger(__name__)

MAX_VOCABULARY = 100
WEIGHTS_FILE = "weights.npz"  # the Keras model's weights, in model.get_weights() order
# Normalized numbers are clipped so that one corrupt outlier cannot saturate every unit.
CLIP = 10.0


@dataclasses.dataclass(frozen=True)
class Task:
    """What the model predicts: a ``contract`` task type and what its head needs of the label.

    ``classes``: the label classes, ``[negative, positive]`` for binary, one per output column for
    multiclass, none for regression. ``label_mean`` / ``label_std``: the train split's label
    statistics; a regression head predicts ``mean + std * unit`` so that its unit starts at the
    right scale.
    """

    kind: str = contract.BINARY
    classes: tuple[str, ...] = ("0", "1")
    label_mean: float = 0.0
    label_std: float = 1.0

    @classmethod
    def of(cls, kind: str, classes: list[str] | None, labels: np.ndarray) -> Task:
        """The task of ``kind`` for these classes (None: ``0``/``1`` for binary) and labels."""
        kind = contract.task(kind)
        if kind == contract.REGRESSION:
            std = float(labels.std()) if labels.size > 1 else 1.0
            return cls(kind, (), float(labels.mean()), std if std > 0 else 1.0)
        if kind == contract.MULTICLASS and not classes:
            raise ConfigError("a multiclass task needs its label classes; pass ingest's "
                              "label_classes")
        return cls(kind, tuple(classes or ("0", "1")))

    @property
    def output_key(self) -> str:
        return contract.OUTPUT_KEYS[self.kind]

    def labels(self, frame: pd.DataFrame, label: str) -> np.ndarray:
        """The encoded label column (ingest's encoding) as the loss takes it."""
        dtype = np.int64 if self.kind == contract.MULTICLASS else np.float32
        return frame[label].to_numpy(dtype=dtype)


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


def vocabulary(values: np.ndarray) -> list[str]:
    """A categorical feature's one-hot vocabulary: its ``MAX_VOCABULARY`` most frequent train
    values, sorted."""
    counts = pd.Series(values[values != ""]).value_counts()
    return sorted(counts.index[:MAX_VOCABULARY].tolist())


def preprocess(features: list[FeatureSpec], train: dict[str, np.ndarray]):
    """The model's raw-feature inputs and their encoding, as Keras tensors.

    Numbers: missing filled with the train mean, standardized, clipped, plus a missing flag;
    strings: one-hot over the ``MAX_VOCABULARY`` most frequent train values. A user module's
    ``build_model`` can put its own layers on top of the encoding.

    Returns:
        ``(inputs, encoded)``: feature name -> ``keras.Input``, and one float tensor
        ``[batch, width]`` of every feature's encoding.
    """
    import keras
    from keras import ops

    inputs, encoded = {}, []
    for feature in features:
        values = train[feature.name]
        if feature.dtype == contract.NUMERIC:
            x = keras.Input(shape=(), dtype="float32", name=feature.name)
            present = values[~np.isnan(values)]
            mean = float(present.mean()) if present.size else 0.0
            std = float(present.std()) if present.size > 1 else 1.0
            std = std if std > 0 else 1.0
            column = ops.expand_dims(x, -1)
            missing = ops.isnan(column)
            filled = ops.where(missing, mean, column)
            encoded += [
                ops.clip((filled - mean) / std, -CLIP, CLIP),
                ops.cast(missing, "float32"),
            ]
        else:
            x = keras.Input(shape=(), dtype="string", name=feature.name)
            lookup = keras.layers.StringLookup(
                vocabulary=vocabulary(values) or [""], output_mode="one_hot",
                name=f"lookup_{feature.name}")
            encoded.append(lookup(x))
        inputs[feature.name] = x
    return inputs, keras.layers.Concatenate()(encoded)


def head(task: Task, hidden):
    """The task's output on top of ``hidden`` (float32 whatever the dtype policy: float16 rounds
    probabilities near 0 and 1): a sigmoid probability ``[batch]`` (binary), softmax
    probabilities ``[batch, classes]`` (multiclass), or a value ``[batch]`` (regression)."""
    import keras
    from keras import ops

    if task.kind == contract.MULTICLASS:
        return keras.layers.Dense(len(task.classes), activation="softmax", dtype="float32",
                                  name="head")(hidden)
    if task.kind == contract.BINARY:
        unit = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="head")(hidden)
        return ops.squeeze(unit, -1)
    unit = keras.layers.Dense(1, dtype="float32", name="head")(hidden)
    return ops.squeeze(unit, -1) * task.label_std + task.label_mean


def compile_model(model, task: Task, learning_rate: float):
    """Compiles with Adam and the task's loss: binary or sparse categorical cross-entropy, or
    mean squared error. Returns the model."""
    import keras

    loss = {contract.BINARY: "binary_crossentropy",
            contract.MULTICLASS: "sparse_categorical_crossentropy",
            contract.REGRESSION: "mean_squared_error"}[task.kind]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    return model


def build_model(features: list[FeatureSpec], train: dict[str, np.ndarray], hp: Hyperparameters,
                task: Task):
    """The default model: ``preprocess``, ``hp.hidden_units`` ReLU layers, the task's ``head``;
    compiled by ``compile_model``.

    A user module replaces this with its own function of the same signature returning a
    compiled Keras model that maps the raw-feature inputs to the task's output (``head``'s
    shapes); it can build on ``preprocess``, ``head`` and ``compile_model``.
    """
    import keras

    inputs, hidden = preprocess(features, train)
    for units in hp.hidden_units:
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    return compile_model(keras.Model(inputs, head(task, hidden)), task, hp.learning_rate)


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0][:200] if text else "no message"


def check_user_model(model, evaluation: dict[str, np.ndarray], user_module: str, task: Task
                     ) -> None:
    """A user model must be compiled and answer the task's output for every row: one
    probability in [0, 1] (binary), a probability per class summing to 1 (multiclass), or one
    finite number (regression)."""
    if not getattr(model, "compiled", False):
        raise ModelError(f"user module {user_module}: build_model returned an uncompiled model; "
                         "call logic.compile_model(model, task, hp.learning_rate)")
    sample = {name: values[:8] for name, values in evaluation.items()}
    try:
        answer = np.asarray(model(sample, training=False), dtype=np.float64)
    except Exception as exc:  # the user's graph: one line naming the module
        raise ModelError(f"user module {user_module}: the model cannot take the raw-feature "
                         f"inputs ({type(exc).__name__}: {_first_line(exc)}); build it on "
                         "logic.preprocess(features, train)'s inputs") from exc
    rows = len(next(iter(sample.values())))
    if task.kind == contract.MULTICLASS:
        shape, wanted = (rows, len(task.classes)), "a probability per class, summing to 1"
        valid = (answer.shape == shape and bool(np.all(answer >= 0))
                 and np.allclose(answer.sum(axis=-1), 1.0, atol=1e-3))
    elif task.kind == contract.BINARY:
        shape, wanted = (rows,), "one probability in [0, 1]"
        valid = answer.shape == shape and bool(np.all((answer >= 0) & (answer <= 1)))
    else:
        shape, wanted = (rows,), "one finite number"
        valid = answer.shape == shape and bool(np.all(np.isfinite(answer)))
    if not valid:
        raise ModelError(f"user module {user_module}: the model answers shape {answer.shape}, "
                         f"not {wanted} per row {shape}; end it with logic.head(task, hidden)")


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


def evaluate_predictions(task: Task, labels: np.ndarray, predicted: np.ndarray
                         ) -> dict[str, float]:
    """The task's eval metrics (``EVAL_METRICS``), measured here rather than by the model's own
    metrics so that a user model is judged the same way."""
    import keras

    if task.kind == contract.BINARY:
        auc = keras.metrics.AUC()
        auc.update_state(labels, predicted)
        return {"eval_auc": float(auc.result())}
    if task.kind == contract.MULTICLASS:
        return {"eval_accuracy": float(np.mean(predicted.argmax(axis=-1) == labels))}
    errors = predicted.astype(np.float64) - labels
    return {"eval_mae": float(np.mean(np.abs(errors))),
            "eval_rmse": float(np.sqrt(np.mean(errors ** 2)))}


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
        try:
            model = builder(features, train, hp, spec)
        except Exception as exc:  # the user's code: say whose error it is, in one line
            if builder is build_model:
                raise
            raise ModelError(f"user module {user_module}: build_model raised "
                             f"{type(exc).__name__}: {_first_line(exc)}; fix the module") from exc
        warm = (warm_start(model, warm_start_from, features, spec, train)
                if warm_start_from else None)
    if builder is not build_model:
        check_user_model(model, evaluation, user_module, spec)
    train_ds = (
        tf.data.Dataset.from_tensor_slices((train, y_train))
        .shuffle(len(y_train), seed=hp.seed)
        .batch(hp.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    eval_ds = tf.data.Dataset.from_tensor_slices((evaluation, y_eval)).batch(hp.batch_size)
    callbacks = []
    if hp.early_stopping_patience:
        # Stops when the eval split's loss has not improved for that many epochs, and keeps the
        # weights of the best epoch.
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=hp.early_stopping_patience, restore_best_weights=True))
    history = model.fit(train_ds, epochs=hp.epochs, shuffle=False, verbose=2,  # ds is shuffled
                        validation_data=eval_ds if callbacks else None, callbacks=callbacks)
    eval_metrics = evaluate_predictions(spec, y_eval, model.predict(eval_ds, verbose=0))
    vocabularies = {f.name: vocabulary(train[f.name]) for f in features
                    if f.dtype == contract.CATEGORICAL}
    export(model, features, spec, model_dir, {"label": label, "vocabularies": vocabularies})
    return TrainResult(
        features=features,
        devices=devices,
        epochs_run=len(history.history["loss"]),
        train_loss=float(history.history["loss"][-1]),
        eval_metrics=eval_metrics,
        precision=precision,
        user_module_sha256=module_digest,
        warm_start=warm,
    )
