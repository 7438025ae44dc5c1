"""Train: a Keras model built from the TFDV schema, exported with a raw-feature signature.

All preprocessing (imputation, normalization, string lookup) lives inside the exported graph, so
the server, TFMA and the tests feed raw column values and get the same answer (no train/serve
skew from a separate transform step). Contract: ``ctloop.contract``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop import contract
from ctloop.errors import ConfigError, ModelError

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
    user_module_sha256: str | None = None  # the user module's content, when one built the model


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
            counts = pd.Series(values[values != ""]).value_counts()
            vocabulary = sorted(counts.index[:MAX_VOCABULARY].tolist())
            lookup = keras.layers.StringLookup(
                vocabulary=vocabulary or [""], output_mode="one_hot", name=f"lookup_{feature.name}"
            )
            encoded.append(lookup(x))
        inputs[feature.name] = x
    return inputs, keras.layers.Concatenate()(encoded)


def build_model(features: list[FeatureSpec], train: dict[str, np.ndarray], hp: Hyperparameters):
    """The default model: ``preprocess``, ``hp.hidden_units`` ReLU layers, a sigmoid; compiled.

    A user module replaces this with its own function of the same signature returning a
    compiled Keras model that maps the raw-feature inputs to one probability per row.
    """
    import keras
    from keras import ops

    inputs, hidden = preprocess(features, train)
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


def load_user_module(uri: str, s3_endpoint_url: str | None = None):
    """The ``build_model`` function of a user's Python file (a local path, gs:// or s3://), and
    the SHA-256 of the file, for the run record.

    Raises:
        ConfigError: The file is missing, does not import, or defines no ``build_model``.
    """
    import importlib.util
    import tempfile

    from ctloop import storage

    try:
        source = storage.read(uri, s3_endpoint_url)[0]
    except FileNotFoundError as exc:
        raise ConfigError(f"user module {uri} does not exist; pass a Python file that defines "
                          "build_model(features, train, hp)") from exc
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ctloop_user_module.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location("ctloop_user_module", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # any error in the user's code, named in the message
            raise ConfigError(f"user module {uri} failed to import: {type(exc).__name__}: "
                              f"{_first_line(exc)}; fix the module") from exc
    builder = getattr(module, "build_model", None)
    if not callable(builder):
        raise ConfigError(f"user module {uri} defines no build_model(features, train, hp); "
                          "add one returning a compiled Keras model")
    return builder, hashlib.sha256(source).hexdigest()


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0][:200] if text else "no message"


def check_user_model(model, evaluation: dict[str, np.ndarray], user_module: str) -> None:
    """A user model must be compiled and answer one probability in [0, 1] per row."""
    if not getattr(model, "compiled", False):
        raise ModelError(f"user module {user_module}: build_model returned an uncompiled model; "
                         "call model.compile(optimizer=..., loss='binary_crossentropy')")
    sample = {name: values[:8] for name, values in evaluation.items()}
    try:
        answer = np.asarray(model(sample, training=False))
    except Exception as exc:  # the user's graph: one line naming the module
        raise ModelError(f"user module {user_module}: the model cannot take the raw-feature "
                         f"inputs ({type(exc).__name__}: {_first_line(exc)}); build it on "
                         "logic.preprocess(features, train)'s inputs") from exc
    rows = len(next(iter(sample.values())))
    if answer.shape != (rows,) or not np.all((answer >= 0) & (answer <= 1)):
        raise ModelError(f"user module {user_module}: the model answers shape {answer.shape}, "
                         f"not one probability in [0, 1] per row ({rows},); end it with a "
                         "sigmoid unit squeezed to [batch]")


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
    user_module: str | None = None,
    s3_endpoint_url: str | None = None,
) -> TrainResult:
    """Trains on the train split, reports eval AUC, exports to ``model_dir``.

    ``user_module``: a Python file (local, gs:// or s3://) whose ``build_model`` replaces the
    default model; everything else (inputs, training, export, the contract) stays ctloop's.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(hp.seed)
    tf.config.experimental.enable_op_determinism()
    features = features_from_schema(schema_path, label, exclude)
    train_frame, eval_frame = pd.read_parquet(train_path), pd.read_parquet(eval_path)
    train, evaluation = to_inputs(train_frame, features), to_inputs(eval_frame, features)
    y_train = train_frame[label].to_numpy(dtype=np.float32)
    y_eval = eval_frame[label].to_numpy(dtype=np.float32)

    builder, module_digest = build_model, None
    if user_module:
        builder, module_digest = load_user_module(user_module, s3_endpoint_url)
    strategy, devices, precision = distribution_strategy(mixed_precision)
    with strategy.scope():
        try:
            model = builder(features, train, hp)
        except Exception as exc:  # the user's code: say whose error it is, in one line
            if builder is build_model:
                raise
            raise ModelError(f"user module {user_module}: build_model raised "
                             f"{type(exc).__name__}: {_first_line(exc)}; fix the module") from exc
    if builder is not build_model:
        check_user_model(model, evaluation, user_module)
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
    # Measured here, not from the model's own metrics, so a user model is judged the same way.
    auc = keras.metrics.AUC()
    auc.update_state(y_eval, model.predict(eval_ds, verbose=0))
    eval_auc = auc.result()
    export(model, features, model_dir, {"label": label, "label_classes": label_classes or []})
    return TrainResult(
        features=features,
        devices=devices,
        epochs_run=len(history.history["loss"]),
        train_loss=float(history.history["loss"][-1]),
        eval_auc=float(eval_auc),
        precision=precision,
        user_module_sha256=module_digest,
    )
