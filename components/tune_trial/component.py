"""KFP component: one trial of a cluster search (a task of tune_plan's fan-out)."""

from typing import Dict, List, Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def tune_trial(
    train_data: Input[Dataset],
    schema: Input[Artifact],
    label: str,
    task: str,
    trial: dict,
    started: float,
    timeout_s: float,
    validation_percent: int,
    space: Dict[str, dict],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    hidden_units: List[int],
    seed: int,
    early_stopping_patience: int,
    exclude: Optional[List[str]] = None,
    sensitive_features: Optional[List[str]] = None,
    train_on_sensitive_features: Optional[bool] = None,
    user_module: Optional[str] = None,
    s3_endpoint_url: Optional[str] = None,
) -> dict:
    """Trains one trial's model on the train split's fit rows and measures the task's judged
    metric on its validation rows (the same split as a local search); none after the budget.

    Args:
        train_data: The train split.
        schema: validate_data's schema: the features and their types.
        label: The label column.
        task: ``binary``, ``multiclass`` or ``regression``.
        trial: One of tune_plan's ``trials``: ``{number, params, defaults}``.
        started: tune_plan's ``started`` (epoch seconds).
        timeout_s: A trial that would start this many seconds after ``started`` does not run.
        validation_percent: Share of the train split the trial is measured on.
        space: The search space the trial was drawn from (its values' types).
        epochs: The configured epochs (what the trial's values replace).
        batch_size: The configured batch size.
        learning_rate: The configured learning rate.
        hidden_units: The configured hidden layer sizes.
        seed: Seeds the trial's training.
        early_stopping_patience: The configured patience.
        exclude: Columns that are not features.
        sensitive_features: Columns evaluated for fairness: not features either, unless
            ``train_on_sensitive_features`` (as train).
        train_on_sensitive_features: Train on the sensitive features too (None: False).
        user_module: A Python file whose ``build_model`` the trial trains (None: the default).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` user module.

    Returns:
        The trial with ``value`` (None: started too late), ``epochs_run``, ``seconds``, ``rows``.
    """
    import os
    import time

    from ctloop import tuning
    from ctloop.local import task_exit
    from ctloop.settings import Hyperparameters

    task_exit.install()

    number = int(trial["number"])
    if time.time() - started >= timeout_s:
        print(f"tune_trial {number}: not run: the search's {timeout_s:g} s budget is spent")
        return {**trial, "number": number, "value": None}
    base = Hyperparameters(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        # A KFP list parameter holds JSON numbers, which arrive as floats.
        hidden_units=tuple(int(units) for units in hidden_units) or Hyperparameters.hidden_units,
        seed=seed, early_stopping_patience=early_stopping_patience)
    params = tuning.typed(tuning.dimensions(space, user_module or None), trial["params"])
    trials = tuning.Trials(
        train_data.path, os.path.join(schema.path, "schema.pbtxt"), label,
        [*(exclude or []), *([] if train_on_sensitive_features else sensitive_features or [])],
        task,
        list(train_data.metadata.get("label_classes", [])) or None, validation_percent,
        user_module or None, s3_endpoint_url or None)
    result = trials.run(tuning.hyperparameters(base, params))
    print(f"tune_trial {number}: {params} -> {trials.metric} {result['value']:.4f} in "
          f"{result['seconds']:.1f} s")
    return {**trial, "number": number, "params": params, **result, "rows": trials.rows}
