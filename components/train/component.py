"""KFP component: train a Keras model from the schema and export a raw-feature SavedModel."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train(
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
    gpu_count: str,
    gpu_type: str,
    exclude: Optional[List[str]] = None,
    sensitive_features: Optional[List[str]] = None,
    train_on_sensitive_features: Optional[bool] = None,
    user_module: Optional[str] = None,
    s3_endpoint_url: Optional[str] = None,
    tuned: Optional[Input[Artifact]] = None,
):
    """Trains a model of the task on the train split; uses every GPU it sees, else the CPU.

    A gate: with ``data_valid`` False (data validation blocked), nothing is trained; the task
    says so in its log and in its outputs' metadata ``skipped``, and its model is empty.

    Args:
        train_data: The train split.
        eval_data: The eval split (reported, not trained on).
        schema: The schema from validate_data; it decides the features and their types.
        baseline: The serving version's SavedModel (``load_baseline``'s ``model``; metadata
            ``version``, None on a cold start), which ``warm_start`` starts from.
        anomalies: validate_data's anomalies (metadata ``summary``: why the data is blocked).
        data_valid: validate_data's verdict; False skips training.
        label: The label column.
        model: Output: the SavedModel (``serving_default`` takes raw features) + features.json;
            metadata ``devices``, ``accelerators``, ``features``, ``precision``, ``parameters``
            (or ``skipped``).
        training_metrics: Output: train loss, epochs run and the task's eval metrics (eval_auc;
            eval_accuracy; eval_mae and eval_rmse).
        epochs: Passes over the train split.
        batch_size: Rows per step.
        learning_rate: Adam's learning rate.
        hidden_units: Sizes of the hidden layers (empty: the settings' default layers).
        seed: Seed of every random choice, for reproducible runs.
        early_stopping_patience: Stop when the eval split's loss has not improved for this many
            epochs, keeping the best epoch's weights (0: train all ``epochs``).
        task: ``binary``, ``multiclass`` or ``regression`` (as ingest encoded the label).
        warm_start: Start from the baseline's weights when they fit (same task, classes,
            features, vocabularies and layers); else, and on a cold start, from the initial
            weights. The log and the run record say which.
        mixed_precision: Compute in float16 (variables in float32) when a GPU is visible; on CPU
            the trainer says so in its log and trains in float32.
        gpu_count: The accelerators the task's pod requested (the pipeline sets its accelerator
            limit from the same parameter), as a string; recorded in the model's metadata
            ``accelerators``, and a request that the task does not see is said in its log.
        gpu_type: The accelerator resource requested (e.g. ``nvidia.com/gpu``).
        exclude: Columns that are not features.
        sensitive_features: Columns evaluated for fairness: not features either, unless
            ``train_on_sensitive_features``.
        train_on_sensitive_features: Train on the sensitive features too (None: False).
        user_module: A Python file (local path in the image, gs:// or s3://) defining
            ``build_model(features, train, hp, task)`` that returns a compiled Keras model; it
            replaces the default model, everything else stays (None or empty: the default).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` user module.
        tuned: The tune task's ``best``: when its search ran (metadata ``tuned``), its
            hyperparameters replace the configured ones (None: the configured ones).
    """
    import os

    from ctloop.components.train import logic
    from ctloop.local import task_exit

    task_exit.install()

    if not data_valid:
        skipped = "data validation blocked: " + str(
            anomalies.metadata.get("summary") or "see its anomalies report")
        print(f"train skipped: {skipped}")
        os.makedirs(model.path, exist_ok=True)
        model.metadata["skipped"] = skipped
        training_metrics.metadata["skipped"] = skipped
        return
    hp = logic.Hyperparameters(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        # A KFP list parameter holds JSON numbers, which arrive as floats.
        hidden_units=tuple(int(units) for units in hidden_units)
        or logic.Hyperparameters.hidden_units, seed=seed,
        early_stopping_patience=early_stopping_patience,
    )
    tuning = None
    if tuned is not None and tuned.metadata.get("tuned"):
        from ctloop import tuning as search

        hp, tuning = search.tuned(hp, tuned.path)
        print(f"train: hyperparameters from the search ({tuning['verdict']}): {hp}")
    version = baseline.metadata.get("version")  # KFP hands numbers back as floats
    version = None if version is None else int(version)
    result = logic.run(
        train_path=train_data.path,
        eval_path=eval_data.path,
        schema_path=os.path.join(schema.path, "schema.pbtxt"),
        label=label,
        exclude=[*(exclude or []), *([] if train_on_sensitive_features
                                     else sensitive_features or [])],
        hp=hp,
        model_dir=model.path,
        label_classes=list(train_data.metadata.get("label_classes", [])),
        mixed_precision=mixed_precision,
        user_module=user_module or None,
        s3_endpoint_url=s3_endpoint_url or None,
        task=task,
        warm_start_from=baseline.path if warm_start and version is not None else None,
    )
    if not warm_start:
        warm = "off"
    elif version is None:
        warm = "no serving model: initial weights"
    else:
        warm = f"version {version}: {result.warm_start}"
    # What the model was trained with, for the version's run record.
    parameters = {"label": label, "exclude": exclude or [], "epochs": hp.epochs,
                  "batch_size": hp.batch_size, "learning_rate": hp.learning_rate,
                  "hidden_units": list(hp.hidden_units), "seed": seed,
                  "mixed_precision": mixed_precision,
                  "early_stopping_patience": hp.early_stopping_patience,
                  "user_module": user_module or None,
                  "user_module_sha256": result.user_module_sha256, "task": task,
                  "warm_start": warm}
    if sensitive_features:  # off: the run record is what it was before fairness existed
        parameters.update(sensitive_features=sensitive_features,
                          train_on_sensitive_features=bool(train_on_sensitive_features))
    if tuning:  # off: the run record is what it was before tuning existed
        parameters["tuning"] = tuning
    requested = int(gpu_count) if gpu_count.isdigit() else 0
    if requested and not any(device != "CPU" for device in result.devices):
        print(f"train: {requested} {gpu_type} requested, but none is visible: trained on CPU")
    model.metadata.update(devices=result.devices, features=[f.name for f in result.features],
                          precision=result.precision, parameters=parameters,
                          accelerators={"requested": requested, "type": gpu_type})
    training_metrics.log_metric("train_loss", result.train_loss)
    for name, value in result.eval_metrics.items():
        training_metrics.log_metric(name, value)
    training_metrics.log_metric("epochs_run", result.epochs_run)
