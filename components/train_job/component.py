"""KFP component: the train step as a multi-worker TFJob (Kubeflow Training Operator)."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train_job(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    schema: Input[Artifact],
    baseline: Input[Model],
    anomalies: Input[Artifact],
    data_valid: bool,
    label: str,
    model: Output[Model],
    training_metrics: Output[Metrics],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    hidden_units: List[int],
    seed: int,
    early_stopping_patience: int,
    task: str,
    warm_start: bool,
    mixed_precision: bool,
    workers: int,
    namespace: str,
    image: str,
    worker_cpu: str,
    worker_memory: str,
    worker_gpus: int,
    gpu_type: str,
    storage_secret: str,
    timeout_s: float,
    exclude: Optional[List[str]] = None,
    sensitive_features: Optional[List[str]] = None,
    train_on_sensitive_features: Optional[bool] = None,
    user_module: Optional[str] = None,
    s3_endpoint_url: Optional[str] = None,
    tuned: Optional[Input[Artifact]] = None,
):
    """Trains like train, as a TFJob of ``workers`` processes under MultiWorkerMirroredStrategy.

    A gate like train's: with ``data_valid`` False nothing is trained and the outputs' metadata
    says ``skipped``. Otherwise the task creates a Kubeflow Training Operator TFJob whose
    workers run train's logic on this task's inputs (read from the artifact store), waits for
    its Succeeded or Failed condition, and hands the chief's model on as ``model``: the same
    outputs as train, so the tasks after it do not change.

    Args:
        train_data: The train split (a Parquet file or a folder of part-*.parquet shards).
        eval_data: The eval split (reported, not trained on).
        schema: The schema from validate_data; it decides the features and their types.
        baseline: The serving version's model (metadata ``version``; None on a cold start).
        anomalies: validate_data's anomalies (metadata ``summary``: why data is blocked).
        data_valid: validate_data's verdict; False skips training.
        label: The label column.
        model: Output: the chief's SavedModel + features.json, with train's metadata and
            ``workers``.
        training_metrics: Output: train loss, epochs run and the task's eval metrics.
        epochs: Passes over the train split.
        batch_size: Rows per step across all workers (each takes its share).
        learning_rate: Adam's learning rate.
        hidden_units: Sizes of the hidden layers (empty: the settings' default layers).
        seed: Seed of every random choice.
        early_stopping_patience: Epochs without a better eval loss before stopping (0: off).
        task: ``binary``, ``multiclass`` or ``regression``.
        warm_start: Start from the baseline's weights when they fit.
        mixed_precision: float16 compute when the workers see a GPU.
        workers: Worker processes of the job, at least 2.
        namespace: Namespace of the TFJob: the run's, where ``storage_secret`` is.
        image: The workers' image (the pipeline image, or its GPU variant).
        worker_cpu: CPU each worker requests and is limited to.
        worker_memory: Memory each worker requests and is limited to.
        worker_gpus: Accelerators per worker (0: none).
        gpu_type: The accelerator resource (e.g. ``nvidia.com/gpu``).
        storage_secret: Secret with the artifact store's ``accesskey`` and ``secretkey``.
        timeout_s: The job must finish within this many seconds, or it is deleted and the task
            fails with its last state.
        exclude: Columns that are not features.
        sensitive_features: Columns evaluated for fairness: not features either, unless
            ``train_on_sensitive_features``.
        train_on_sensitive_features: Train on the sensitive features too (None: False).
        user_module: A Python file (gs:// or s3://, or a path in the image) defining
            ``build_model(features, train, hp, task)``.
        s3_endpoint_url: The S3-compatible endpoint of the artifact store and user module.
        tuned: The tune task's ``best``: when its search ran, its hyperparameters replace the
            configured ones.
    """
    import dataclasses
    import os

    from ctloop.components.train_job import logic
    from ctloop.local import task_exit
    from ctloop.settings import Hyperparameters

    task_exit.install()

    if not data_valid:
        skipped = "data validation blocked: " + str(
            anomalies.metadata.get("summary") or "see its anomalies report")
        print(f"train_job skipped: {skipped}")
        os.makedirs(model.path, exist_ok=True)
        model.metadata["skipped"] = skipped
        training_metrics.metadata["skipped"] = skipped
        return
    hp = Hyperparameters(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        hidden_units=tuple(int(units) for units in hidden_units) or Hyperparameters.hidden_units,
        seed=seed, early_stopping_patience=early_stopping_patience)
    tuning = None
    if tuned is not None and tuned.metadata.get("tuned"):
        from ctloop import tuning as search

        hp, tuning = search.tuned(hp, tuned.path)
    version = baseline.metadata.get("version")
    version = None if version is None else int(version)
    excluded = [*(exclude or []), *([] if train_on_sensitive_features
                                    else sensitive_features or [])]
    spec = {
        "train_uri": train_data.uri, "eval_uri": eval_data.uri, "schema_uri": schema.uri,
        "output_uri": model.uri.rstrip("/") + "-workers", "label": label, "exclude": excluded,
        "hp": {**dataclasses.asdict(hp), "hidden_units": list(hp.hidden_units)},
        "label_classes": list(train_data.metadata.get("label_classes", [])), "task": task,
        "mixed_precision": mixed_precision, "user_module": user_module or None,
        "s3_endpoint_url": s3_endpoint_url or None,
        "warm_start_uri": baseline.uri if warm_start and version is not None else None,
    }
    config = logic.JobConfig(namespace=namespace, image=image, workers=workers, cpu=worker_cpu,
                             memory=worker_memory, gpus=worker_gpus, gpu_type=gpu_type,
                             storage_secret=storage_secret)
    result = logic.run(logic.connect(), config, spec, model.path, timeout_s,
                       s3_endpoint_url or None)
    if not warm_start:
        warm = "off"
    elif version is None:
        warm = "no serving model: initial weights"
    else:
        warm = f"version {version}: {result['warm_start']}"
    parameters = {"label": label, "exclude": exclude or [], "epochs": hp.epochs,
                  "batch_size": hp.batch_size, "learning_rate": hp.learning_rate,
                  "hidden_units": list(hp.hidden_units), "seed": seed,
                  "mixed_precision": mixed_precision,
                  "early_stopping_patience": hp.early_stopping_patience,
                  "user_module": user_module or None,
                  "user_module_sha256": result["user_module_sha256"], "task": task,
                  "warm_start": warm, "workers": workers}
    if sensitive_features:
        parameters.update(sensitive_features=sensitive_features,
                          train_on_sensitive_features=bool(train_on_sensitive_features))
    if tuning:
        parameters["tuning"] = tuning
    model.metadata.update(devices=result["devices"], features=result["features"],
                          precision=result["precision"], parameters=parameters,
                          accelerators={"requested": worker_gpus * workers, "type": gpu_type},
                          workers=workers)
    training_metrics.log_metric("train_loss", result["train_loss"])
    for name, value in result["eval_metrics"].items():
        training_metrics.log_metric(name, value)
    training_metrics.log_metric("epochs_run", result["epochs_run"])
