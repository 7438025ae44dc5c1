"""Train: a Keras model built from the TFDV schema, exported with a raw-feature signature.

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
from ctloop.errors import ConfigError

log = logging.getLogger(__name__)

MAX_VOCABULARY = 100
# Normalized numbers are clipped so that one corrupt outlier cannot saturate every unit.
CLIP = 10.0


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 0.001
    hidden_units: tuple[int, ...] = (64, 32)
    seed: int = 42
    early_stopping_patience: int = 0  # epochs without a better eval loss before stopping; 0: off

    def __post_init__(self):
        if (self.epochs < 1 or self.batch_size < 1 or not self.hidden_units
                or min(self.hidden_units) < 1):
            raise ConfigError(
                f"hyperparameters {self} are invalid: epochs, batch_size and every hidden layer "
                "size must be >= 1, with at least one hidden layer"
            )
        if self.early_stopping_patience < 0:
            raise ConfigError(f"early_stopping_patience {self.early_stopping_patience} is "
                              "invalid: use 0 (off) or a number of epochs >= 1")
        if not 0.0 < self.learning_rate < 1.0:
            raise ConfigError(f"learning_rate {self.learning_rate} is out of range: use (0, 1)")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: str  # contract.NUMERIC or contract.CATEGORICAL


@dataclasses.dataclass(frozen=True)
class TrainResult:
    features: list[FeatureSpec]
    devices: list[str]
    epochs_run: int
    train_loss: float
    eval_auc: float
    precision: str = "float32"  # the Keras dtype policy trained with


def features_from_schema(schema_path: str, label: str, exclude: list[str]) -> list[FeatureSpec]:
    """The model's inputs: every schema feature but the label and the excluded columns."""
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = tfdv.load_schema_text(schema_path)
    features = []
    for feature in schema.feature:
        if feature.name == label or feature.name in exclude:
            continue
        numeric = feature.type in (schema_pb2.INT, schema_pb2.FLOAT)
        features.append(
            FeatureSpec(feature.name, contract.NUMERIC if numeric else contract.CATEGORICAL)
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
    inputs = {}
    for feature in features:
        if feature.name not in frame.columns:
            log.warning("feature %r of the schema is not in the data: all values missing",
                        feature.name)
            column = pd.Series([None] * len(frame), index=frame.index, dtype=object)
        else:
            column = frame[feature.name]
        if feature.dtype == contract.NUMERIC:
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


def build_model(features: list[FeatureSpec], train: dict[str, np.ndarray], hp: Hyperparameters):
    """A Keras functional model over raw features; statistics are taken from ``train``."""
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
            counts = pd.Series(values[values != ""]).value_counts()
            vocabulary = sorted(counts.index[:MAX_VOCABULARY].tolist())
            lookup = keras.layers.StringLookup(
                vocabulary=vocabulary or [""], output_mode="one_hot", name=f"lookup_{feature.name}"
            )
            encoded.append(lookup(x))
        inputs[feature.name] = x
    hidden = keras.layers.Concatenate()(encoded)
    for units in hp.hidden_units:
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    # float32 output whatever the policy: a float16 sigmoid rounds probabilities near 0 and 1.
    output = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(hidden)
    model = keras.Model(inputs, ops.squeeze(output, -1))
    model.compile(
        optimizer=keras.optimizers.Adam(hp.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model


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


def export(model, features: list[FeatureSpec], model_dir: str, extra: dict) -> None:
    """Writes the SavedModel with the contract's raw-feature signature, plus features.json."""
    import keras
    import tensorflow as tf

    spec = {
        f.name: tf.TensorSpec([None], tf.float32 if f.dtype == contract.NUMERIC else tf.string,
                              name=f.name)
        for f in features
    }

    @tf.function(input_signature=[spec])
    def serve(raw):
        return {contract.OUTPUT_KEY: model(raw, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(contract.SERVING_SIGNATURE, serve)
    archive.write_out(model_dir, verbose=False)
    (Path(model_dir) / contract.FEATURES_FILE).write_text(
        json.dumps({"features": [dataclasses.asdict(f) for f in features], **extra}, indent=2)
    )


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
) -> TrainResult:
    """Trains on the train split, reports eval AUC, exports to ``model_dir``."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(hp.seed)
    tf.config.experimental.enable_op_determinism()
    features = features_from_schema(schema_path, label, exclude)
    train_frame, eval_frame = pd.read_parquet(train_path), pd.read_parquet(eval_path)
    train, evaluation = to_inputs(train_frame, features), to_inputs(eval_frame, features)
    y_train = train_frame[label].to_numpy(dtype=np.float32)
    y_eval = eval_frame[label].to_numpy(dtype=np.float32)

    strategy, devices, precision = distribution_strategy(mixed_precision)
    with strategy.scope():
        model = build_model(features, train, hp)
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
    _, eval_auc = model.evaluate(eval_ds, verbose=0)
    export(model, features, model_dir, {"label": label, "label_classes": label_classes or []})
    return TrainResult(
        features=features,
        devices=devices,
        epochs_run=len(history.history["loss"]),
        train_loss=float(history.history["loss"][-1]),
        eval_auc=float(eval_auc),
        precision=precision,
    )
