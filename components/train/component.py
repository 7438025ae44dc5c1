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
    label: str,
    model: Output[Model],
    training_metrics: Output[Metrics],
    exclude: Optional[List[str]] = None,
    epochs: int = 10,
    batch_size: int = 256,
    learning_rate: float = 0.001,
    hidden_units: Optional[List[int]] = None,
    seed: int = 42,
    mixed_precision: bool = False,
    early_stopping_patience: int = 0,
    user_module: Optional[str] = None,
    s3_endpoint_url: Optional[str] = None,
    task: str = "binary",
    warm_start: bool = False,
    registry_uri: Optional[str] = None,
    model_name: Optional[str] = None,
):
    """Trains a model of the task on the train split; uses every GPU it sees, else the CPU.

    Args:
        train_data: The train split.
        eval_data: The eval split (reported, not trained on).
        schema: The schema from validate_data; it decides the features and their types.
        label: The label column.
        model: Output: the SavedModel (``serving_default`` takes raw features) + features.json.
        training_metrics: Output: train loss, epochs run and the task's eval metrics (eval_auc;
            eval_accuracy; eval_mae and eval_rmse).
        exclude: Columns that are not features.
        epochs: Passes over the train split.
        batch_size: Rows per step.
        learning_rate: Adam's learning rate.
        hidden_units: Sizes of the hidden layers; [64, 32] when not given or empty.
        seed: Seed of every random choice, for reproducible runs.
        mixed_precision: Compute in float16 (variables in float32) when a GPU is visible; on CPU
            the trainer says so in its log and trains in float32.
        early_stopping_patience: Stop when the eval split's loss has not improved for this many
            epochs, keeping the best epoch's weights (0: train all ``epochs``).
        user_module: A Python file (local path in the image, gs:// or s3://) defining
            ``build_model(features, train, hp, task)`` that returns a compiled Keras model; it
            replaces the default model, everything else stays (None or empty: the default).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` user module or registry.
        task: ``binary``, ``multiclass`` or ``regression`` (as ingest encoded the label).
        warm_start: Start from the weights of the registry's serving version when they fit
            (same task, classes, features, vocabularies and layers); else, and on a cold start,
            from the initial weights. The log and the run record say which.
        registry_uri: The model registry root (for ``warm_start``).
        model_name: The model's name in the registry (for ``warm_start``).
    """
    import os

    from ctloop.components.train import logic
    from ctloop.local import task_exit
    from ctloop.registry import open_registry

    task_exit.install()

    hp = logic.Hyperparameters(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        # A KFP list parameter holds JSON numbers, which arrive as floats.
        hidden_units=tuple(int(units) for units in hidden_units or (64, 32)), seed=seed,
        early_stopping_patience=early_stopping_patience,
    )
    baseline = None
    if warm_start:
        baseline = open_registry(registry_uri, model_name, s3_endpoint_url or None).serving()
    result = logic.run(
        train_path=train_data.path,
        eval_path=eval_data.path,
        schema_path=os.path.join(schema.path, "schema.pbtxt"),
        label=label,
        exclude=exclude or [],
        hp=hp,
        model_dir=model.path,
        label_classes=list(train_data.metadata.get("label_classes", [])),
        mixed_precision=mixed_precision,
        user_module=user_module or None,
        s3_endpoint_url=s3_endpoint_url or None,
        task=task,
        warm_start_from=str(baseline.model_dir) if baseline else None,
    )
    if not warm_start:
        warm = "off"
    elif baseline is None:
        warm = "no serving model: initial weights"
    else:
        warm = f"version {baseline.number}: {result.warm_start}"
    # What the model was trained with, for the version's run record.
    parameters = {"label": label, "exclude": exclude or [], "epochs": epochs,
                  "batch_size": batch_size, "learning_rate": learning_rate,
                  "hidden_units": list(hp.hidden_units), "seed": seed,
                  "mixed_precision": mixed_precision,
                  "early_stopping_patience": early_stopping_patience,
                  "user_module": user_module or None,
                  "user_module_sha256": result.user_module_sha256, "task": task,
                  "warm_start": warm}
    model.metadata.update(devices=result.devices, features=[f.name for f in result.features],
                          precision=result.precision, parameters=parameters)
    training_metrics.log_metric("train_loss", result.train_loss)
    for name, value in result.eval_metrics.items():
        training_metrics.log_metric(name, value)
    training_metrics.log_metric("epochs_run", result.epochs_run)
