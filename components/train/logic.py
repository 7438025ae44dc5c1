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
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ctloop import contract
from ctloop.contract import FeatureSpec, features_from_schema
from ctloop.data import splits
from ctloop.errors import ConfigError
from ctloop.settings import Hyperparameters
from ctloop.training import (  # noqa: F401 - preprocess, head, compile_model: the user-module API
    Cluster,
    Task,
    build_model,
    check_user_model,
    compile_model,
    distribution_strategy,
    evaluate_predictions,
    fit_datasets,
    head,
    make_model,
    predict_batches,
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
    cluster: Cluster | None = None,
) -> TrainResult:
    """Trains on the train split, measures the eval split, exports to ``model_dir``.

    Each split is a Parquet file or a folder of ``part-*.parquet`` shards, streamed in batches
    (``ctloop.data.splits``): no split is held whole. The preprocessing and a user module's
    ``train`` columns come from a seeded sample of at most ``splits.SAMPLE_ROWS`` train rows.

    ``task``: ``binary``, ``multiclass`` or ``regression``, with ingest's ``label_classes``.
    ``user_module``: a Python file (local, gs:// or s3://) whose ``build_model`` replaces the
    default model; everything else (inputs, training, export, the contract) stays ctloop's.
    ``warm_start_from``: a model directory (the serving version) to start from, when its
    weights fit (``warm_start``). ``cluster``: the multi-worker job this process is part of
    (``Cluster.of(TF_CONFIG)``; None: it trains alone); only its chief writes ``model_dir``.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(hp.seed)
    tf.config.experimental.enable_op_determinism()
    features = features_from_schema(schema_path, label, exclude)
    multiclass = contract.task(task) == contract.MULTICLASS
    train_split = splits.Split.of(train_path, features, label, multiclass)
    eval_split = splits.Split.of(eval_path, features, label, multiclass)
    train, labels = train_split.sample(splits.SAMPLE_ROWS, hp.seed)
    spec = Task.of(task, label_classes, labels)

    builder, module_digest = build_model, None
    if user_module:
        builder, module_digest = load_user_module(user_module, s3_endpoint_url)
    cluster = cluster or Cluster()
    strategy, devices, precision = distribution_strategy(mixed_precision, cluster)
    with strategy.scope():
        model = make_model(builder, features, train, hp, spec, user_module)
        warm = (warm_start(model, warm_start_from, features, spec, train)
                if warm_start_from else None)
    if builder is not build_model:
        check_user_model(model, eval_split.head(8), user_module, spec)
    train_ds, eval_ds, steps, eval_steps = _datasets(strategy, cluster, train_split, eval_split,
                                                     hp)
    history = fit_datasets(model, train_ds, eval_ds, hp, steps=steps, eval_steps=eval_steps)
    y_eval = np.concatenate([labels for _, labels in eval_split.batches(splits.READ_ROWS)]
                            or [np.zeros(0, eval_split.label_dtype)])
    predicted = predict_batches(model, eval_split.batches(splits.READ_ROWS))
    eval_metrics = evaluate_predictions(spec, y_eval, predicted)
    vocabularies = {f.name: vocabulary(train[f.name]) for f in features
                    if f.dtype == contract.CATEGORICAL}
    described = {"label": label, "vocabularies": vocabularies}
    if cluster.is_chief:
        export(model, features, spec, model_dir, described)
    else:
        # Every worker saves (a save may take collective steps), only the chief where it counts.
        scratch = tempfile.mkdtemp(prefix="ctloop-worker-model-")
        export(model, features, spec, scratch, described)
        shutil.rmtree(scratch, ignore_errors=True)
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


def _datasets(strategy, cluster: Cluster, train_split: splits.Split, eval_split: splits.Split,
              hp: Hyperparameters) -> tuple:
    """``(train, eval, steps, eval_steps)`` for ``fit_datasets``: the splits' datasets, or with
    more than one worker, each worker's share of them with the same number of steps on every
    worker (a worker out of batches would leave the others waiting in a collective step)."""
    if cluster.workers <= 1:
        return (train_split.dataset(hp.batch_size, seed=hp.seed),
                eval_split.dataset(hp.batch_size), None, None)
    steps = train_split.rows // hp.batch_size
    eval_steps = eval_split.rows // hp.batch_size
    if not steps or (hp.early_stopping_patience and not eval_steps):
        raise ConfigError(f"batch_size {hp.batch_size} is larger than a split "
                          f"({train_split.rows} train, {eval_split.rows} eval rows): a multi-"
                          "worker job needs a full batch; use a smaller batch_size")

    def share(split: splits.Split, split_steps: int, seed: int | None):
        def make(context):
            # Each input pipeline (one per worker) feeds its local replicas one batch each
            # per step.
            batches = split_steps * strategy.num_replicas_in_sync // context.num_input_pipelines
            return split.dataset(context.get_per_replica_batch_size(hp.batch_size), seed=seed,
                                 worker=context.input_pipeline_id,
                                 workers=context.num_input_pipelines, steps=batches)
        return strategy.distribute_datasets_from_function(make)

    return (share(train_split, steps, hp.seed), share(eval_split, max(eval_steps, 1), None),
            steps, max(eval_steps, 1))
