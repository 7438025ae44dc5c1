"""The model ctloop trains and how it is fitted: shared by the train task (which exports it) and
the tune task (whose trials fit it with other hyperparameters).

The task type (binary, multiclass, regression) decides the head, the loss and the output; every
layer before the head is shared. All preprocessing (imputation, normalization, string lookup)
lives inside the model's graph, so the server, TFMA and the tests feed raw column values. A user
module's ``build_model`` may replace ``build_model`` and build on ``preprocess``, ``head`` and
``compile_model``.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pandas as pd

from ctloop import contract
from ctloop.contract import FeatureSpec
from ctloop.errors import ConfigError, ModelError
from ctloop.settings import Hyperparameters

log = logging.getLogger(__name__)

MAX_VOCABULARY = 100
# Normalized numbers are clipped so that one corrupt outlier cannot saturate every unit.
CLIP = 10.0
# The eval metric each task's blessing judges (evaluate's settings.JUDGED), as
# ``evaluate_predictions`` names it: what a tuning search optimizes.
JUDGED_METRIC = {contract.BINARY: "eval_auc", contract.MULTICLASS: "eval_accuracy",
                 contract.REGRESSION: "eval_mae"}


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


def make_model(builder, features: list[FeatureSpec], train: dict[str, np.ndarray],
               hp: Hyperparameters, task: Task, user_module: str | None = None):
    """The model ``builder`` (``build_model`` or a user module's) makes; a user module's error
    is a one-line ``ModelError`` naming the module."""
    try:
        return builder(features, train, hp, task)
    except Exception as exc:  # the user's code: say whose error it is, in one line
        if builder is build_model:
            raise
        raise ModelError(f"user module {user_module}: build_model raised "
                         f"{type(exc).__name__}: {_first_line(exc)}; fix the module") from exc


def fit(model, train: dict[str, np.ndarray], y_train: np.ndarray,
        evaluation: dict[str, np.ndarray], y_eval: np.ndarray, hp: Hyperparameters, task: Task,
        verbose: int = 2):
    """Fits ``model`` on in-memory train rows (shuffled with ``hp.seed``), with early stopping on
    the ``evaluation`` rows' loss when ``hp.early_stopping_patience`` is set, and measures them.
    The tune task's trials fit this way; train streams its splits through ``fit_datasets``.

    Returns:
        ``(history, metrics)``: Keras' history dict, and ``evaluate_predictions`` on
        ``evaluation``.
    """
    import tensorflow as tf

    train_ds = (
        tf.data.Dataset.from_tensor_slices((train, y_train))
        .shuffle(len(y_train), seed=hp.seed)
        .batch(hp.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    eval_ds = tf.data.Dataset.from_tensor_slices((evaluation, y_eval)).batch(hp.batch_size)
    history = fit_datasets(model, train_ds, eval_ds, hp, verbose=verbose)
    return history, evaluate_predictions(task, y_eval, model.predict(eval_ds, verbose=0))


def fit_datasets(model, train_ds, eval_ds, hp: Hyperparameters, verbose: int = 2,
                 steps: int | None = None, eval_steps: int | None = None) -> dict:
    """Fits ``model`` on ``train_ds`` (batches of ``(inputs, labels)``, shuffled by their maker)
    for ``hp.epochs``, with early stopping on ``eval_ds``' loss when
    ``hp.early_stopping_patience`` is set. ``steps`` / ``eval_steps``: batches per epoch, for
    distributed datasets, whose length Keras cannot see. Returns Keras' history dict."""
    import keras

    callbacks = []
    if hp.early_stopping_patience:
        # Stops when the eval rows' loss has not improved for that many epochs, and keeps the
        # weights of the best epoch.
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=hp.early_stopping_patience, restore_best_weights=True))
    if steps is not None and getattr(model, "_distribute_strategy", None) is not None:
        return _fit_multi_worker(model, model._distribute_strategy, train_ds, eval_ds, hp,
                                 steps, eval_steps)
    history = model.fit(train_ds, epochs=hp.epochs, shuffle=False, verbose=verbose,  # shuffled
                        validation_data=eval_ds if callbacks else None, callbacks=callbacks)
    return history.history


def _fit_multi_worker(model, strategy, train_ds, eval_ds, hp: Hyperparameters, steps: int,
                      eval_steps: int | None) -> dict:
    """``model.fit``'s epochs as a loop under ``strategy``, with
    ``EarlyStopping(restore_best_weights=True)``'s rule.

    Keras 3.15's ``fit`` cannot run under MultiWorkerMirroredStrategy: it averages a peeked
    batch across workers to build the model (``_maybe_symbolic_build``: fails on string
    features) and each step's logs along an axis a scalar does not have (``reduce_per_replica``,
    reduction "auto"); its loss tracker is not summed across workers either, so workers would
    disagree on when to stop. Here each replica's mean loss over its batch (``compute_loss``:
    under this strategy Keras 3.15 does not scale it, measured) is divided by the replicas and
    summed across them: the global batch's mean loss, the same on every worker (so all stop at
    the same epoch), and its gradient the global batch's mean gradient once the optimizer has
    summed the replicas' (Keras' ``_all_reduce_sum_gradients``).
    """
    import tensorflow as tf

    with strategy.scope():
        model.optimizer.build(model.trainable_variables)

    share = 1.0 / strategy.num_replicas_in_sync

    def train_replica(batch):
        inputs, labels = batch
        with tf.GradientTape() as tape:
            loss = share * model.compute_loss(
                x=inputs, y=labels, y_pred=model(inputs, training=True), training=True)
        variables = model.trainable_variables
        model.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables,
                                            strict=True))
        return loss

    def test_replica(batch):
        inputs, labels = batch
        return share * model.compute_loss(
            x=inputs, y=labels, y_pred=model(inputs, training=False), training=False)

    @tf.function
    def train_step(iterator):
        return strategy.reduce("SUM", strategy.run(train_replica, args=(next(iterator),)),
                               axis=None)

    @tf.function
    def test_step(iterator):
        return strategy.reduce("SUM", strategy.run(test_replica, args=(next(iterator),)),
                               axis=None)

    def mean_loss(step, dataset, count: int) -> float:
        batches = iter(dataset)
        return float(np.mean([float(step(batches)) for _ in range(count)]))

    history: dict[str, list[float]] = {"loss": []}
    best, waited, best_weights = float("inf"), 0, None
    for epoch in range(hp.epochs):
        history["loss"].append(mean_loss(train_step, train_ds, steps))
        log.info("epoch %d/%d: loss %.4f", epoch + 1, hp.epochs, history["loss"][-1])
        if not hp.early_stopping_patience:
            continue
        history.setdefault("val_loss", []).append(mean_loss(test_step, eval_ds, eval_steps))
        if history["val_loss"][-1] < best:
            best, waited, best_weights = history["val_loss"][-1], 0, model.get_weights()
            continue
        waited += 1
        if waited >= hp.early_stopping_patience and epoch > 0:
            model.set_weights(best_weights)
            break
    return history


def predict_batches(model, batches) -> np.ndarray:
    """The model's answers for every ``(inputs, labels)`` batch, in order, computed on this
    process alone (under a multi-worker strategy too: no collective step)."""
    import tensorflow as tf

    answer = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)
    parts = [answer({name: tf.constant(values) for name, values in inputs.items()}).numpy()
             for inputs, _ in batches]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process trains: the ``TF_CONFIG`` a Kubeflow Training Operator TFJob sets
    (``cluster``: replica type -> addresses; ``task``: this process's type and index), or none
    (one process)."""

    spec: dict = dataclasses.field(default_factory=dict)
    task_type: str = "worker"
    task_index: int = 0

    @classmethod
    def of(cls, tf_config: str | None) -> Cluster:
        """The cluster of a ``TF_CONFIG`` JSON value (None or empty: one process).

        Raises:
            ConfigError: Not JSON of the form ``{"cluster": {...}, "task": {...}}``.
        """
        if not tf_config:
            return cls()
        try:
            parsed = json.loads(tf_config)
            return cls({kind: list(addresses) for kind, addresses in parsed["cluster"].items()},
                       str(parsed["task"]["type"]), int(parsed["task"]["index"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"TF_CONFIG {tf_config[:200]!r} is not of the form "
                              '{"cluster": {"worker": [...]}, "task": {"type": ..., '
                              '"index": ...}}; '
                              "let the training operator set it, or unset it") from exc

    @property
    def workers(self) -> int:
        """The processes that train together: the chief (if any) and the workers; 1 with no
        cluster."""
        return max(1, len(self.spec.get("chief", [])) + len(self.spec.get("worker", [])))

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the model: the chief, else worker 0 (the training
        operator's rule: with no Chief replica, worker 0 is the chief)."""
        if "chief" in self.spec:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


def distribution_strategy(mixed_precision: bool = False, cluster: Cluster | None = None):
    """The strategy and the Keras dtype policy: ``MultiWorkerMirroredStrategy`` when ``cluster``
    has more than one worker; else ``MirroredStrategy`` over the visible GPUs, else the default
    (CPU) strategy. The policy is ``mixed_float16`` if asked for and a GPU is there, else
    ``float32``.

    Returns:
        ``(strategy, devices, policy)``.
    """
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    policy = "mixed_float16" if mixed_precision and gpus else "float32"
    if mixed_precision and not gpus:
        log.warning("mixed precision needs a GPU and none is visible: training in float32")
    keras.mixed_precision.set_global_policy(policy)
    devices = [g.name for g in gpus] or ["CPU"]
    if cluster is not None and cluster.workers > 1:
        # The cluster as parsed, not TF's own reading of the environment: one source of truth.
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster.spec), task_type=cluster.task_type,
            task_id=cluster.task_index, rpc_layer="grpc")
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        log.info("training on %d workers with MultiWorkerMirroredStrategy (this one: %s %d), "
                 "%s: %s", cluster.workers, cluster.task_type, cluster.task_index, policy,
                 devices)
        return strategy, devices, policy
    if gpus:
        strategy = tf.distribute.MirroredStrategy()
        log.info("training on %d GPU(s) with MirroredStrategy, %s: %s", len(gpus), policy,
                 devices)
        return strategy, devices, policy
    log.info("no GPU visible: training on CPU, %s", policy)
    return tf.distribute.get_strategy(), devices, policy
